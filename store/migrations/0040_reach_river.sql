-- The river a reach belongs to (config/rivers.yaml `river`): reaches sharing one name are that
-- river's sections together in the water report (GET /v1/reports/water?scope=river). Set from
-- config at the next seed; until then null.
ALTER TABLE reach ADD COLUMN river text;

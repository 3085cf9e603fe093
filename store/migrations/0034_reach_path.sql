-- A reach's course for maps (GET /v1/rivers): a JSON array of [longitude, latitude] points
-- (WGS-84) from its upstream end to its downstream end, and whether it is only approximate.
-- Both come from config/rivers.yaml at the next seed; until then they are null.
ALTER TABLE reach ADD COLUMN path jsonb, ADD COLUMN approximate boolean;

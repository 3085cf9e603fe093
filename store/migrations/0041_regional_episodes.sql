-- Regional air episodes (docs/evaluation.md §7): a rule kind whose alert belongs to the region, not
-- to one station or city (station_id and city both NULL), and the episodes its alerts record.
ALTER TABLE alert DROP CONSTRAINT alert_kind_check;
ALTER TABLE alert ADD CONSTRAINT alert_kind_check
    CHECK (kind IN ('threshold', 'aqi', 'water_class', 'staleness', 'rate_of_change',
                    'propagation', 'regional_episode'));
ALTER TABLE alert DROP CONSTRAINT alert_check;
ALTER TABLE alert ADD CONSTRAINT alert_subject_check
    CHECK (station_id IS NOT NULL OR city IS NOT NULL OR kind = 'regional_episode');

-- One row per regional episode, kept by the engine with the alert that announces it: [start_at,
-- end_at) in steps of the rule's series (days from 00:00 Asia/Shanghai, or hours), end_at NULL
-- while the episode goes on. city_days counts (city, natural day) pairs (天次).
CREATE TABLE episode (
    id                  bigserial PRIMARY KEY,
    rule_id             text NOT NULL REFERENCES rule ON DELETE CASCADE,
    alert_id            bigint NOT NULL UNIQUE REFERENCES alert ON DELETE CASCADE,
    series              text NOT NULL CHECK (series IN ('daily', 'rolling_24h')),
    start_at            timestamptz NOT NULL,
    end_at              timestamptz,
    cities              text[] NOT NULL,
    city_days           int NOT NULL CHECK (city_days > 0),
    peak_aqi            int NOT NULL,
    peak_category       text NOT NULL,
    primary_pollutants  text[] NOT NULL,
    CHECK (end_at IS NULL OR end_at > start_at)
);
CREATE INDEX episode_by_start ON episode (start_at DESC, id DESC);

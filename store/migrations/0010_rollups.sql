-- Rollups kept by the application from a queue of dirty windows (docs/architecture.md, store/),
-- identically on plain PostgreSQL and TimescaleDB.
--
-- Ingest appends the key of every stored (accepted or revised) reading to series_dirty in the
-- same transaction as the reading, then NOTIFYs envlink_readings. The alert loop claims rows
-- (DELETE ... RETURNING over FOR UPDATE SKIP LOCKED), recomputes the hour and the Asia/Shanghai
-- day of each, and writes the rollups in that same transaction: a crash loses no dirty window.
--
-- The queue is a plain heap written by COPY, without a primary key: keeping a unique index
-- made marking 100k readings cost ~1.5 s (more than writing them), an append costs ~0.1 s and
-- never waits for another transaction. A key queued twice is recomputed twice, which is
-- idempotent. Vacuumed eagerly, as rows are deleted as fast as they come.
CREATE TABLE series_dirty (
    station_id    int NOT NULL,
    parameter_id  smallint NOT NULL,
    period_s      int NOT NULL,
    time          timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 10000);

-- One row per hour that holds any reading of the series (period 0, 60 or 3600), whatever its QC.
-- value NULL = insufficient data (under 45 minutes of valid sampling for air and weather; no
-- valid sample for water). A station-reported hourly mean (period 3600, valid QC) wins: origin
-- 'reported', samples 1, coverage_s 3600. Otherwise samples and coverage_s describe the valid
-- finer data used; min and max are set only with a value.
CREATE TABLE reading_hourly (
    station_id    int NOT NULL,
    parameter_id  smallint NOT NULL,
    hour          timestamptz NOT NULL,
    value         double precision,
    samples       int NOT NULL,
    coverage_s    int NOT NULL,
    min           double precision,
    max           double precision,
    origin        text NOT NULL CHECK (origin IN ('reported', 'computed')),
    computed_at   timestamptz NOT NULL,
    PRIMARY KEY (station_id, parameter_id, hour)
);

-- One row per Asia/Shanghai natural day that holds an hourly rollup or a reported daily mean.
-- value NULL = insufficient data (air: under 20 valid hourly values; water: fewer valid samples
-- than ENVLINK_WATER_DAILY_MIN_SAMPLES). hours counts the day's valid hourly values (air) or
-- valid samples (water). A reported daily mean (period 86400, valid QC) wins: origin 'reported'.
CREATE TABLE reading_daily (
    station_id    int NOT NULL,
    parameter_id  smallint NOT NULL,
    day           date NOT NULL,
    value         double precision,
    hours         int NOT NULL,
    min           double precision,
    max           double precision,
    origin        text NOT NULL CHECK (origin IN ('reported', 'computed')),
    computed_at   timestamptz NOT NULL,
    PRIMARY KEY (station_id, parameter_id, day)
);

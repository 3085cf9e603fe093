-- Incremental hourly rollups (store/rollups.py, alerts/loop.py).
--
-- A new reading is queued with its value and QC (qc NULL: a revision, a re-flag or any other
-- change, whose hour is recomputed from the stored readings). A round then extends an hour's
-- rollup from the new readings alone when they all come after every reading of their period
-- the hour has seen; otherwise (a revision, a re-flag, late or out-of-order data, a reported
-- hourly mean, an hour never rolled up with these columns) it recomputes the hour exactly.
ALTER TABLE series_dirty ADD COLUMN value double precision, ADD COLUMN qc smallint;

-- Per hour and per finer period (rt_: real-time, period 0; minute_: period 60): how many
-- readings feed statistics (valid or below detection, with a value), their exact sum (numeric,
-- so that a mean extended reading by reading equals a recomputed one bit for bit), their
-- minimum and maximum, and the latest time of any reading of that period in the hour (any QC,
-- with or without a value). NULL rt_samples: not known, the hour is recomputed when touched.
ALTER TABLE reading_hourly
    ADD COLUMN rt_samples int,
    ADD COLUMN rt_sum numeric,
    ADD COLUMN rt_min double precision,
    ADD COLUMN rt_max double precision,
    ADD COLUMN rt_last timestamptz,
    ADD COLUMN minute_samples int,
    ADD COLUMN minute_sum numeric,
    ADD COLUMN minute_min double precision,
    ADD COLUMN minute_max double precision,
    ADD COLUMN minute_last timestamptz;

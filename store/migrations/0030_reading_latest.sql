-- The current value of every series, and each parameter's reporting resolution.
--
-- reading_latest holds, per (station, parameter, period), the newest reading of that period as
-- `reading` holds it now. The writer keeps it in the same transaction as the readings
-- (store.readings.write_readings: a newer time replaces it, a revision of the same time
-- updates it, an older time never touches it), and a QC re-flag of that very reading changes
-- its qc (store.qc). /v1/latest reads only this table: one row per series, never a scan of
-- `reading`'s partitions. It is a plain table on TimescaleDB too, and outlives retention.
CREATE TABLE reading_latest (
    station_id    int NOT NULL,
    parameter_id  smallint NOT NULL,
    period_s      int NOT NULL,
    time          timestamptz NOT NULL,
    value         double precision,
    qc            smallint NOT NULL,
    PRIMARY KEY (station_id, parameter_id, period_s)
);

INSERT INTO reading_latest (station_id, parameter_id, period_s, time, value, qc)
SELECT DISTINCT ON (station_id, parameter_id, period_s)
       station_id, parameter_id, period_s, time, value, qc
FROM reading
ORDER BY station_id, parameter_id, period_s, time DESC;

-- Decimal places a value is published with (GB/T 8170 rounding, half to even, at output only;
-- storage keeps what arrived). Set by `envlink seed` from config/parameters.yaml; NULL until
-- then, which leaves values as stored.
ALTER TABLE parameter ADD COLUMN decimals smallint CHECK (decimals BETWEEN 0 AND 9);

-- Requests to HJ 212 stations for stored data of a past range (`envlink backfill --station`).
-- The command inserts a pending row and notifies envlink_backfill; the worker process that holds
-- the station's connection claims it (state sent, worker and qn set), sends the history request
-- (CN 2051/2061/2031 with BeginTime/EndTime) and records the station's answers here: answered on
-- its 9011, the packets and readings of the range as they are stored, completed on its 9012, or
-- failed with the reason. A pending row nobody claimed by claim_by is failed: the station is not
-- connected to any running HJ 212 server. The counts are the pipeline's outcomes.
CREATE TABLE backfill_request (
    id            bigserial PRIMARY KEY,
    station_id    int NOT NULL REFERENCES station ON DELETE CASCADE,
    period_s      int NOT NULL CHECK (period_s IN (60, 3600, 86400)),
    begin_time    timestamptz NOT NULL,
    end_time      timestamptz NOT NULL,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'sent', 'answered', 'completed', 'failed')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    claim_by      timestamptz NOT NULL,
    deadline      timestamptz NOT NULL,
    worker        text,
    qn            text,
    sent_at       timestamptz,
    answered_at   timestamptz,
    finished_at   timestamptz,
    packets       int NOT NULL DEFAULT 0,
    accepted      int NOT NULL DEFAULT 0,
    duplicate     int NOT NULL DEFAULT 0,
    revised       int NOT NULL DEFAULT 0,
    rejected      int NOT NULL DEFAULT 0,
    detail        text,
    CHECK (begin_time <= end_time),
    CHECK (claim_by <= deadline)
);
-- One open request per station: the station's packets could not be told apart otherwise.
CREATE UNIQUE INDEX backfill_request_open ON backfill_request (station_id)
    WHERE state IN ('pending', 'sent', 'answered');
CREATE INDEX backfill_request_requested ON backfill_request (requested_at);

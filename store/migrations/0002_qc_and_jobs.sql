-- Quality control over history, and the one active scheduler across workers.
--
-- A QC re-flag (valid -> suspect) is a revision like any other: the replaced state goes to
-- reading_revision (replaced_by = the `qc` source), and qc_audit says which check fired and why.
-- The audit row points at the revision it explains, so the two are never out of step.
CREATE TABLE qc_audit (
    id            bigserial PRIMARY KEY,
    revision_id   bigint NOT NULL REFERENCES reading_revision ON DELETE CASCADE,
    station_id    int NOT NULL,
    parameter_id  smallint NOT NULL,
    period_s      int NOT NULL,
    time          timestamptz NOT NULL,
    check_name    text NOT NULL CHECK (check_name IN ('flat_line', 'spike')),
    qc_before     smallint NOT NULL,
    qc_after      smallint NOT NULL,
    reason        text NOT NULL,
    flagged_at    timestamptz NOT NULL
);
CREATE INDEX qc_audit_key ON qc_audit (station_id, parameter_id, period_s, time);
CREATE INDEX qc_audit_revision ON qc_audit (revision_id);

-- Who was elected to run the scheduler. The election itself is a session advisory lock; this
-- row only names the holder, and readers check it against pg_locks, so a dead leader's row is
-- never mistaken for a live one.
CREATE TABLE scheduler_leader (
    name         text PRIMARY KEY,
    owner        text NOT NULL,
    backend_pid  int NOT NULL,
    elected_at   timestamptz NOT NULL
);

-- The last run of every scheduled job, written by the elected worker's job listener.
CREATE TABLE job_status (
    job_id           text PRIMARY KEY,
    owner            text,
    runs             bigint NOT NULL DEFAULT 0,
    failures         bigint NOT NULL DEFAULT 0,
    last_run_at      timestamptz,
    last_success_at  timestamptz,
    last_error_at    timestamptz,
    last_error       text,
    next_run_at      timestamptz
);

-- The joint rules (versioned, audited), alerts with their event timeline, acks, maintenance.

-- A rule's definition lives in rule_version; `rule` points at the version in force and says
-- whether that version came from config/thresholds.yaml or the API (seed never overwrites an
-- API change).
CREATE TABLE rule (
    id               text PRIMARY KEY,
    current_version  int NOT NULL,
    changed_via      text NOT NULL CHECK (changed_via IN ('config', 'api'))
);

CREATE TABLE rule_version (
    rule_id     text NOT NULL REFERENCES rule ON DELETE CASCADE,
    version     int NOT NULL CHECK (version > 0),
    definition  jsonb NOT NULL,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL,
    comment     text,
    PRIMARY KEY (rule_id, version)
);

-- One alert per episode of one rule at one subject: a station, or a city for city-wide rules
-- (station_id NULL, city set). Data times (pending_since, trigger_time, last_point_at,
-- clear_point_at) are the times of the statistics; *_at wall-clock times say when EnvLink
-- decided. trigger_period_s and parameter_id name the reading behind an instant trigger, so a
-- QC re-flag of that reading can retract the alert.
CREATE TABLE alert (
    id                 bigserial PRIMARY KEY,
    rule_id            text NOT NULL REFERENCES rule ON DELETE CASCADE,
    rule_version       int NOT NULL,
    station_id         int REFERENCES station,
    city               text CHECK (city IN ('guangzhou', 'dongguan')),
    parameter_id       smallint REFERENCES parameter,
    kind               text NOT NULL CHECK (kind IN ('threshold', 'aqi', 'water_class', 'staleness',
                                                     'rate_of_change', 'propagation')),
    state              text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved',
                                                      'retracted')),
    severity           text NOT NULL CHECK (severity IN ('advisory', 'warning', 'critical')),
    value              double precision,
    opened_at          timestamptz NOT NULL,
    pending_since      timestamptz,
    fired_at           timestamptz,
    resolved_at        timestamptz,
    retracted_at       timestamptz,
    last_evaluated_at  timestamptz NOT NULL,
    trigger_time       timestamptz,
    trigger_period_s   int,
    last_point_at      timestamptz,
    clear_point_at     timestamptz,
    details            jsonb NOT NULL DEFAULT '{}',
    addressed_to       smallint[] NOT NULL,
    source_alert_id    bigint REFERENCES alert,
    CHECK (station_id IS NOT NULL OR city IS NOT NULL)
);
-- One open alert per (rule, station) — or per (rule, city) for city-wide rules.
CREATE UNIQUE INDEX alert_one_open ON alert (rule_id, station_id, city) NULLS NOT DISTINCT
    WHERE state IN ('pending', 'firing');
CREATE INDEX alert_by_state ON alert (state, id);
CREATE INDEX alert_by_station ON alert (station_id, id);
CREATE INDEX alert_by_source ON alert (source_alert_id) WHERE source_alert_id IS NOT NULL;
-- A subject's alerts: the open one (clear_point_at NULL) and the recently resolved ones.
CREATE INDEX alert_by_subject
    ON alert (rule_id, coalesce(station_id, 0), coalesce(city, ''), clear_point_at);

-- Every transition, in order (id); the notification stage reads it through a cursor.
CREATE TABLE alert_event (
    id        bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alert ON DELETE CASCADE,
    at        timestamptz NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('pending', 'firing', 'escalated', 'deescalated',
                                            'resolved', 'retracted', 'acknowledged',
                                            'cancelled')),
    state     text NOT NULL,
    severity  text NOT NULL,
    value     double precision,
    details   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_event_by_alert ON alert_event (alert_id, id);

-- An acknowledgement per agency (it stops repeats to that agency only).
CREATE TABLE alert_ack (
    alert_id   bigint NOT NULL REFERENCES alert ON DELETE CASCADE,
    agency_id  smallint NOT NULL REFERENCES agency,
    key_id     int NOT NULL,
    at         timestamptz NOT NULL,
    comment    text,
    PRIMARY KEY (alert_id, agency_id)
);

-- Planned work at a station: its data inside [starts_at, ends_at) raises no alert. The sweep
-- re-evaluates the station when a window is new (applied_at: alerts its data raised inside are
-- retracted) and once it has ended (closed_at).
CREATE TABLE maintenance_window (
    id          bigserial PRIMARY KEY,
    station_id  int NOT NULL REFERENCES station ON DELETE CASCADE,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL,
    applied_at  timestamptz,
    closed_at   timestamptz,
    CHECK (starts_at < ends_at)
);
CREATE INDEX maintenance_window_by_station ON maintenance_window (station_id, ends_at);
CREATE INDEX maintenance_window_pending ON maintenance_window (id)
    WHERE applied_at IS NULL OR closed_at IS NULL;

-- From alert events to delivered notifications: subscriptions, silences, the stage's durable
-- cursor over alert_event, notification groups, the outbox and every delivery attempt.

-- Where an agency wants to hear about alerts, and how loudly. Filters left NULL match anything.
-- group_by names the alert labels a group is keyed on, besides the subscription itself.
-- changed_via says whether the row last came from config/subscriptions.yaml or the API: seed
-- never overwrites an API change.
CREATE TABLE subscription (
    id                     serial PRIMARY KEY,
    code                   text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    agency_id              smallint NOT NULL REFERENCES agency,
    enabled                boolean NOT NULL,
    channel                text NOT NULL
                           CHECK (channel IN ('webhook', 'webhook_cap', 'wecom', 'dingtalk', 'email')),
    target                 text NOT NULL,
    secret                 text,
    language               text NOT NULL CHECK (language IN ('zh', 'en', 'both')),
    areas                  text[],
    cities                 text[],
    stations               text[],
    kinds                  text[],
    rules                  text[],
    min_severity           text NOT NULL CHECK (min_severity IN ('advisory', 'warning', 'critical')),
    group_by               text[] NOT NULL,
    group_wait_s           int NOT NULL CHECK (group_wait_s >= 0),
    group_wait_critical_s  int NOT NULL CHECK (group_wait_critical_s >= 0),
    group_interval_s       int NOT NULL CHECK (group_interval_s > 0),
    repeat_interval_s      int NOT NULL CHECK (repeat_interval_s > 0),
    escalate_after_s       int CHECK (escalate_after_s > 0),
    escalation_channel     text
                           CHECK (escalation_channel IN ('webhook', 'webhook_cap', 'wecom',
                                                         'dingtalk', 'email')),
    escalation_target      text,
    escalation_secret      text,
    changed_via            text NOT NULL CHECK (changed_via IN ('config', 'api')),
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    CHECK ((escalate_after_s IS NULL) = (escalation_target IS NULL)),
    CHECK ((escalation_channel IS NULL) = (escalation_target IS NULL))
);
CREATE INDEX subscription_by_agency ON subscription (agency_id, id);

-- A silence mutes messages (never alerts) to its agency's subscriptions while it is in force:
-- [starts_at, ends_at), or until expired_at when ended early. Matchers left NULL match anything.
CREATE TABLE silence (
    id          bigserial PRIMARY KEY,
    agency_id   smallint NOT NULL REFERENCES agency,
    rules       text[],
    stations    text[],
    areas       text[],
    severities  text[],
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  text NOT NULL,
    comment     text NOT NULL,
    created_at  timestamptz NOT NULL,
    expired_at  timestamptz,
    CHECK (starts_at < ends_at),
    CHECK (coalesce(rules, stations, areas, severities) IS NOT NULL)
);
CREATE INDEX silence_in_force ON silence (ends_at) WHERE expired_at IS NULL;

-- The stage's position in alert_event. Event ids come from a sequence and are committed out of
-- order by concurrent transactions, so an id below last_event_id may still become visible: the
-- ids skipped when the cursor moved past them are kept as gaps and read again until they appear
-- or are old enough that no transaction can still hold them (a rolled-back insert).
CREATE TABLE notification_cursor (
    name           text PRIMARY KEY,
    last_event_id  bigint NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE TABLE notification_cursor_gap (
    event_id  bigint PRIMARY KEY,
    seen_at   timestamptz NOT NULL
);
-- A deployment that already has alerts starts from the present, not by announcing its history.
INSERT INTO notification_cursor (name, last_event_id, updated_at)
SELECT 'stage', coalesce(max(id), 0), now() FROM alert_event;

-- An open group of one subscription: the alerts it holds, what each subscriber was last told
-- (told), the events not yet told (pending: [[event id, kind, state, severity], ...]) and the
-- timers: flush_at (group_wait, then group_interval), repeat_at, each member's escalate_at.
-- wake_at is the earliest of them, so the stage finds due groups with one index scan. A group
-- whose alerts have all ended and been told is deleted; a later alert opens a new one.
CREATE TABLE notification_group (
    id               bigserial PRIMARY KEY,
    subscription_id  int NOT NULL REFERENCES subscription ON DELETE CASCADE,
    key              text NOT NULL,
    opened_at        timestamptz NOT NULL,
    flush_at         timestamptz,
    notified_at      timestamptz,
    repeat_at        timestamptz,
    wake_at          timestamptz,
    UNIQUE (subscription_id, key)
);
CREATE INDEX notification_group_wake ON notification_group (wake_at) WHERE wake_at IS NOT NULL;

CREATE TABLE notification_group_member (
    group_id       bigint NOT NULL REFERENCES notification_group ON DELETE CASCADE,
    alert_id       bigint NOT NULL REFERENCES alert ON DELETE CASCADE,
    pending        jsonb NOT NULL,
    told           text CHECK (told IN ('firing', 'resolved', 'retracted')),
    told_severity  text,
    escalate_at    timestamptz,
    escalated_at   timestamptz,
    PRIMARY KEY (group_id, alert_id)
);
CREATE INDEX notification_group_member_by_alert ON notification_group_member (alert_id);

-- The outbox: one message to one target. Its id is the idempotency key every channel sends.
-- A claim moves due_at past the claim's lease and sets claim_token; the attempt's outcome is
-- recorded only under that token, so a dispatcher that lost its lease cannot overwrite another's.
CREATE TABLE notification (
    id               bigserial PRIMARY KEY,
    subscription_id  int REFERENCES subscription ON DELETE SET NULL,
    agency_id        smallint NOT NULL REFERENCES agency,
    kind             text NOT NULL CHECK (kind IN ('firing', 'update', 'repeat', 'resolved',
                                                   'retracted', 'escalation')),
    group_key        text NOT NULL,
    channel          text NOT NULL,
    target           text NOT NULL,
    secret           text,
    language         text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    created_at       timestamptz NOT NULL,
    deadline_at      timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    attempts         int NOT NULL DEFAULT 0,
    claim_token      uuid,
    claimed_at       timestamptz,
    claimed_by       text,
    sent_at          timestamptz,
    failed_at        timestamptz,
    last_error       text
);
CREATE INDEX notification_due ON notification (due_at) WHERE status = 'pending';
CREATE INDEX notification_by_status ON notification (status, id);

-- What a notification covers, in order: an alert and the event it reports (none in a repeat or
-- an escalation), with the alert's state as it stood when the message was made, so every
-- re-send carries the same facts.
CREATE TABLE notification_item (
    notification_id  bigint NOT NULL REFERENCES notification ON DELETE CASCADE,
    position         smallint NOT NULL,
    alert_id         bigint NOT NULL REFERENCES alert ON DELETE CASCADE,
    event_id         bigint REFERENCES alert_event ON DELETE CASCADE,
    state            text NOT NULL,
    severity         text NOT NULL,
    value            double precision,
    fired_at         timestamptz,
    resolved_at      timestamptz,
    retracted_at     timestamptz,
    PRIMARY KEY (notification_id, position)
);
CREATE INDEX notification_item_by_alert ON notification_item (alert_id, notification_id);

-- Every delivery attempt. 'interrupted': the dispatcher holding the claim stopped before it
-- recorded an outcome (found when the notification is claimed again).
CREATE TABLE delivery_attempt (
    id               bigserial PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES notification ON DELETE CASCADE,
    attempt          int NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL,
    status           text NOT NULL CHECK (status IN ('sent', 'retry', 'failed', 'interrupted')),
    response_code    int,
    error            text,
    worker           text NOT NULL
);
CREATE INDEX delivery_attempt_by_notification ON delivery_attempt (notification_id, id);

-- Who changed what through the API: one row per write, in the write's own transaction.
-- key_id and agency are the caller's (both null for a change made on the server's command line);
-- before/after hold the changed thing as the API shows it (secrets never), null where it did
-- not exist. key_id is no foreign key: keys are revoked, never deleted, and the log outlives them.
CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    key_id  integer,
    agency  text,
    action  text NOT NULL,
    target  text NOT NULL,
    before  jsonb,
    after   jsonb
);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_agency ON audit_log (agency, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_at ON audit_log (at);

-- Short-lived tokens for browsers' EventSource, which cannot send a key header. Only a SHA-256
-- is kept; a token is refused once expired or once its key is revoked or expired.
CREATE TABLE stream_token (
    token_hash  bytea PRIMARY KEY,
    key_id      integer NOT NULL REFERENCES api_key,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX stream_token_expires ON stream_token (expires_at);

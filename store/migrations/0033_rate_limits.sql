-- Rate limits: a token bucket per API key and per client address, shared by every API process.
--
-- api_key.rate_limit overrides ENVLINK_RATE_LIMIT_PER_MINUTE for one key (NULL: the default).
ALTER TABLE api_key ADD COLUMN rate_limit int CHECK (rate_limit >= 1);

-- One row per bucket ('key:<id>', 'address:<ip>'): the tokens it held at updated_at. Unlogged:
-- a crash empties it, which only refills every bucket early, and its writes skip the WAL.
CREATE UNLOGGED TABLE rate_bucket (
    name        text PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX rate_bucket_updated_at ON rate_bucket (updated_at);

-- Take up to `want` whole tokens from bucket `bucket_name` (created full), refilled at `per_s`
-- tokens a second up to `burst` since it was last touched. Returns the tokens granted (0 when
-- the bucket holds less than one), what is left, and the seconds until the next whole token is
-- there (0 when one is). `at_time` is the clock's reading; NULL means the server's clock, read once
-- the row is locked, so that concurrent callers see time move forward in the order they lock.
CREATE FUNCTION rate_take(
    bucket_name text, per_s double precision, burst double precision, want int,
    at_time timestamptz DEFAULT NULL,
    OUT granted int, OUT tokens double precision, OUT wait_s double precision
) LANGUAGE plpgsql AS $$
DECLARE
    held double precision;
    since timestamptz;
BEGIN
    INSERT INTO rate_bucket AS b (name, tokens, updated_at)
    VALUES (bucket_name, burst, coalesce(at_time, clock_timestamp()))
    ON CONFLICT (name) DO NOTHING;
    SELECT b.tokens, b.updated_at INTO held, since
    FROM rate_bucket b WHERE b.name = bucket_name FOR UPDATE;
    at_time := greatest(since, coalesce(at_time, clock_timestamp()));
    held := least(burst, held + per_s * extract(epoch FROM at_time - since)::double precision);
    granted := least(want, floor(held))::int;
    tokens := held - granted;
    wait_s := CASE WHEN tokens >= 1 THEN 0 ELSE (1 - tokens) / per_s END;
    UPDATE rate_bucket b SET tokens = rate_take.tokens, updated_at = at_time
    WHERE b.name = bucket_name;
END
$$;

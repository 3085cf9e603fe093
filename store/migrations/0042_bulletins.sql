-- The monthly joint bulletin as the worker generated it (on the 1st at 09:00 Asia/Shanghai for
-- the month before), versioned: generating a month again (after late or audited data) adds a
-- version and keeps the earlier ones. body is the JSON of GET /v1/reports/bulletin; html and
-- csv_zip the page and the zip of CSV tables, as they were then.
CREATE TABLE bulletin (
    id            bigserial PRIMARY KEY,
    month         date NOT NULL CHECK (extract(day FROM month) = 1),
    version       int NOT NULL CHECK (version >= 1),
    generated_at  timestamptz NOT NULL,
    body          jsonb NOT NULL,
    html          text NOT NULL,
    csv_zip       bytea NOT NULL,
    UNIQUE (month, version)
);

-- What a subscription is for: alerts (as before) or the monthly bulletin.
ALTER TABLE subscription ADD COLUMN kind text NOT NULL DEFAULT 'alerts'
    CHECK (kind IN ('alerts', 'bulletin'));

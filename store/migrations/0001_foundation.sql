-- The catalogue, readings (range-partitioned by time), quarantine, sources and API keys.

CREATE TABLE agency (
    id       smallserial PRIMARY KEY,
    code     text NOT NULL UNIQUE,
    name     text NOT NULL,
    name_zh  text NOT NULL,
    city     text CHECK (city IN ('guangzhou', 'dongguan'))
);

CREATE TABLE parameter (
    id         smallserial PRIMARY KEY,
    code       text NOT NULL UNIQUE,
    name       text NOT NULL,
    name_zh    text NOT NULL,
    grp        text NOT NULL CHECK (grp IN ('air', 'weather', 'water', 'lab')),
    unit       text NOT NULL,
    hj212_code text UNIQUE,
    valid_min  double precision NOT NULL,
    valid_max  double precision NOT NULL,
    CHECK (valid_min < valid_max)
);

CREATE TABLE reach (
    code          text PRIMARY KEY,
    name          text NOT NULL,
    name_zh       text NOT NULL,
    downstream    text[] NOT NULL,
    length_km     double precision NOT NULL,
    velocity_m_s  double precision NOT NULL,
    tidal         boolean NOT NULL,
    tidal_factor  double precision
);

CREATE TABLE station (
    id              serial PRIMARY KEY,
    code            text NOT NULL UNIQUE,
    name            text NOT NULL,
    name_zh         text NOT NULL,
    city            text NOT NULL CHECK (city IN ('guangzhou', 'dongguan')),
    area            text NOT NULL CHECK (area IN ('dongjiang', 'shiziyang')),
    medium          text NOT NULL CHECK (medium IN ('air', 'water')),
    agency_id       smallint NOT NULL REFERENCES agency,
    lat             double precision NOT NULL,
    lon             double precision NOT NULL,
    approximate     boolean NOT NULL,
    hj212_mn        text UNIQUE,
    hj212_password  text,
    hj212_crc       text NOT NULL DEFAULT 'hj212'
                    CHECK (hj212_crc IN ('hj212', 'modbus', 'modbus_swapped')),
    background      boolean,
    reach_code      text REFERENCES reach,
    river_km        double precision,
    water_standard  text CHECK (water_standard IN ('gb3838', 'gb3097')),
    water_body      text CHECK (water_body IN ('river', 'lake')),
    target_class    smallint
);

CREATE TABLE station_parameter (
    station_id    int NOT NULL REFERENCES station ON DELETE CASCADE,
    parameter_id  smallint NOT NULL REFERENCES parameter,
    unit          text NOT NULL,
    interval_s    int NOT NULL CHECK (interval_s > 0),
    PRIMARY KEY (station_id, parameter_id)
);

CREATE TABLE source (
    id               smallserial PRIMARY KEY,
    code             text NOT NULL UNIQUE,
    kind             text NOT NULL,
    last_success_at  timestamptz,
    last_error_at    timestamptz,
    last_error       text,
    accepted         bigint NOT NULL DEFAULT 0,
    duplicate        bigint NOT NULL DEFAULT 0,
    revised          bigint NOT NULL DEFAULT 0,
    rejected         bigint NOT NULL DEFAULT 0,
    watermark        jsonb
);

-- time is the sampling instant (period_s 0) or the START of the averaging period.
CREATE TABLE reading (
    station_id    int NOT NULL,
    parameter_id  smallint NOT NULL,
    period_s      int NOT NULL CHECK (period_s IN (0, 60, 3600, 86400)),
    time          timestamptz NOT NULL,
    value         double precision,
    qc            smallint NOT NULL,
    source_id     smallint NOT NULL,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (station_id, parameter_id, period_s, time)
) PARTITION BY RANGE (time);

-- The values a revision replaced, kept with who delivered them and when.
CREATE TABLE reading_revision (
    id             bigserial PRIMARY KEY,
    station_id     int NOT NULL,
    parameter_id   smallint NOT NULL,
    period_s       int NOT NULL,
    time           timestamptz NOT NULL,
    value          double precision,
    qc             smallint NOT NULL,
    source_id      smallint NOT NULL,
    received_at    timestamptz NOT NULL,
    replaced_at    timestamptz NOT NULL,
    replaced_by    smallint NOT NULL
);
CREATE INDEX reading_revision_key ON reading_revision (station_id, parameter_id, period_s, time);

CREATE TABLE rejected_reading (
    id              bigserial PRIMARY KEY,
    received_at     timestamptz NOT NULL,
    source_id       smallint,
    station_id      int,
    station_code    text,
    parameter_code  text,
    reason          text NOT NULL,
    payload         text NOT NULL
);
CREATE INDEX rejected_reading_received ON rejected_reading (received_at);

CREATE TABLE api_key (
    id           serial PRIMARY KEY,
    agency_id    smallint NOT NULL REFERENCES agency,
    prefix       text NOT NULL UNIQUE,
    key_hash     bytea NOT NULL UNIQUE,
    roles        text[] NOT NULL,
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Registry, reference data and the small per-device tables. Telemetry (positions, events,
-- rollups) lives in 0002 because its shape depends on whether TimescaleDB is present.

-- Which storage mode 0002 chose, read by `clutch db info` and the maintenance task.
CREATE TABLE clutch_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE tenants (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    vin        text,
    plate      text,
    make       text,
    model      text,
    year       smallint,
    attributes jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT vehicles_tenant_vin_key UNIQUE (tenant_id, vin)
);

CREATE TABLE drivers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    -- What a device reports as `driver_id` (iButton, RFID card, tachograph card).
    external_id text,
    email       text,
    phone       text,
    attributes  jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT drivers_tenant_external_id_key UNIQUE (tenant_id, external_id)
);

CREATE TABLE devices (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- IMEI for most trackers, a vendor id for some (H02, Freematics, OsmAnd).
    identifier       text NOT NULL,
    protocol         text NOT NULL,
    name             text NOT NULL DEFAULT '',
    vehicle_id       bigint REFERENCES vehicles (id) ON DELETE SET NULL,
    driver_id        bigint REFERENCES drivers (id) ON DELETE SET NULL,
    -- MQTT credentials. The secret is stored only as an argon2id PHC string; the plain
    -- secret is shown once at creation by the services layer and never stored.
    mqtt_username    text,
    mqtt_secret_hash text,
    disabled         boolean NOT NULL DEFAULT false,
    attributes       jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Vendor ids of different protocols may collide; an IMEI never does across protocols.
    CONSTRAINT devices_protocol_identifier_key UNIQUE (protocol, identifier),
    CONSTRAINT devices_mqtt_username_key UNIQUE (mqtt_username)
);
CREATE INDEX devices_tenant_idx ON devices (tenant_id);
CREATE INDEX devices_identifier_idx ON devices (identifier);

CREATE TABLE geofences (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    -- A GeoJSON geometry or Feature; validated by the geofence crate before it gets here.
    geojson    jsonb NOT NULL CHECK (jsonb_typeof(geojson) = 'object' AND geojson ? 'type'),
    attributes jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX geofences_tenant_idx ON geofences (tenant_id);

-- Trips are few (a handful per device per day) and written by the stream operators, so
-- unlike positions they keep a foreign key: deleting a device deletes its trips.
CREATE TABLE trips (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id     bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    start_time    timestamptz NOT NULL,
    end_time      timestamptz,
    start_lat     double precision,
    start_lon     double precision,
    end_lat       double precision,
    end_lon       double precision,
    distance_m    double precision,
    max_speed_kmh real,
    avg_speed_kmh real,
    fuel_used_l   double precision,
    driver_id     bigint REFERENCES drivers (id) ON DELETE SET NULL,
    attributes    jsonb NOT NULL DEFAULT '{}',
    -- A trip detector replaying the stream after a restart re-emits the same trip.
    CONSTRAINT trips_device_start_key UNIQUE (device_id, start_time)
);

-- Great-circle distance in metres (mean Earth radius, IUGG). `least` guards asin against
-- rounding just above 1 for antipodal points.
CREATE FUNCTION clutch_haversine_m(lat1 double precision, lon1 double precision,
                                   lat2 double precision, lon2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 2 * 6371008.8 * asin(least(1.0, sqrt(
        power(sin(radians(lat2 - lat1) / 2), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * power(sin(radians(lon2 - lon1) / 2), 2))))
$$;

-- Path length as an ordered aggregate, `clutch_path_m(lat, lon ORDER BY fix_time)`. An
-- aggregate rather than a lag() window so that the same definition serves the native
-- rollup job and a TimescaleDB continuous aggregate (which accepts no window functions).
-- State: {previous lat, previous lon, metres so far}.
CREATE FUNCTION clutch_path_step(state double precision[], lat double precision, lon double precision)
RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN lat IS NULL OR lon IS NULL THEN state
        WHEN state IS NULL THEN ARRAY[lat, lon, 0]
        ELSE ARRAY[lat, lon, state[3] + clutch_haversine_m(state[1], state[2], lat, lon)]
    END
$$;

CREATE FUNCTION clutch_path_final(state double precision[])
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(state[3], 0)
$$;

CREATE AGGREGATE clutch_path_m(double precision, double precision) (
    SFUNC = clutch_path_step,
    STYPE = double precision[],
    FINALFUNC = clutch_path_final
);

-- Shared schema for the stream operators (issue 7) and the API that reads their output
-- (issue 8), laid down before either so that both build against the same tables.

-- Operator events carry a span and a size: a drain from 14:02 to 14:09 of 23 litres, an
-- overspeed of 31 km/h over the limit for 40 s. `time` stays the start (and part of the
-- idempotency key), `end_time` is null for instantaneous events.
ALTER TABLE events ADD COLUMN end_time timestamptz;
ALTER TABLE events ADD COLUMN magnitude double precision;
-- 'info' | 'low' | 'medium' | 'high' | 'critical'; free text so new kinds need no migration.
ALTER TABLE events ADD COLUMN severity text;

-- Per-tenant settings (score weights and bands, thresholds), JSON so an operator can add
-- a knob without a migration; defaults live in the code that reads them.
ALTER TABLE tenants ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';

-- Geofence operators reload fences when they change: `updated_at` says what changed and
-- the NOTIFY wakes them without polling.
ALTER TABLE geofences ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

CREATE FUNCTION clutch_geofences_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('clutch_geofences',
                      coalesce(NEW.tenant_id, OLD.tenant_id)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER geofences_notify
AFTER INSERT OR UPDATE OR DELETE ON geofences
FOR EACH ROW EXECUTE FUNCTION clutch_geofences_notify();

-- Operator state with the bus position it reflects. On restart an operator loads its
-- state and resumes the bus after `bus_offset`; events it re-emits for the replayed span
-- are absorbed by the events' unique key.
CREATE TABLE operator_checkpoints (
    operator   text NOT NULL,
    -- Shard or partition of the bus the offset belongs to.
    shard      integer NOT NULL,
    bus_offset bigint NOT NULL,
    state      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator, shard)
);

-- Safety scores, per trip and per day, for drivers and vehicles. `breakdown` holds the
-- event counts, per-100-km rates and penalties that explain the number.
CREATE TABLE scores (
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject_kind text NOT NULL CHECK (subject_kind IN ('driver', 'vehicle', 'device')),
    subject_id   bigint NOT NULL,
    period       text NOT NULL CHECK (period IN ('trip', 'day')),
    -- Trip start, or midnight of the day in the tenant's time zone.
    period_start timestamptz NOT NULL,
    trip_id      bigint REFERENCES trips (id) ON DELETE CASCADE,
    distance_m   double precision NOT NULL DEFAULT 0,
    duration_s   double precision NOT NULL DEFAULT 0,
    score        real NOT NULL CHECK (score >= 0 AND score <= 100),
    breakdown    jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_kind, subject_id, period, period_start)
);
CREATE INDEX scores_tenant_period_idx ON scores (tenant_id, period, period_start);

-- Per-vehicle service plans: due when any of the intervals since the last service runs
-- out. The maintenance operator emits `service_due` events from these.
CREATE TABLE service_plans (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id          bigint NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    name                text NOT NULL,
    every_km            double precision CHECK (every_km > 0),
    every_engine_hours  double precision CHECK (every_engine_hours > 0),
    every_days          integer CHECK (every_days > 0),
    last_done_at        timestamptz,
    last_done_km        double precision,
    last_done_engine_h  double precision,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_plans_some_interval
        CHECK (every_km IS NOT NULL OR every_engine_hours IS NOT NULL OR every_days IS NOT NULL)
);
CREATE INDEX service_plans_vehicle_idx ON service_plans (vehicle_id);

-- Devices that reported but are not registered (`ingest.unknown_devices = refuse`), for
-- admins to register or ignore. One row per identifier, counted, not one per attempt.
CREATE TABLE unknown_devices (
    protocol    text NOT NULL,
    identifier  text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    attempts    bigint NOT NULL DEFAULT 1,
    remote_addr text,
    PRIMARY KEY (protocol, identifier)
);

-- The fleet API's second half (issue 8): webhooks for integrators, the daily report
-- rollup, and the links that scope drivers and customers to their own objects.

-- A tenant's subscription of an endpoint to event kinds (empty array: every kind).
-- The signing secret has to be kept in the clear: HMAC needs it to sign each delivery.
-- It is shown once at creation and never returned by the API afterwards.
CREATE TABLE webhooks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         text NOT NULL,
    kinds       text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    secret      text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant_idx ON webhooks (tenant_id);

-- One row per (webhook, event): the unique key is the deduplication, so an event seen
-- twice (live and again by the catch-up scan, or replayed by the operators) is delivered
-- once. Pending rows are the durable queue: a restarted worker picks them up.
CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        text NOT NULL,
    kind            text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- Due time while pending; a claimed row is pushed ahead by a lease so a worker that
    -- dies mid-delivery leaves it to be retried, never lost.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT webhook_deliveries_event_key UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Every attempt, for `GET /webhooks/{id}/deliveries`.
CREATE TABLE webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    duration_ms  integer NOT NULL,
    status_code  integer,
    error        text,
    -- The first bytes of the receiver's answer, for debugging an integration.
    response     text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);

-- Daily summaries per vehicle and per driver, per calendar day in a time zone. Derived
-- from positions_hourly, trips and events; recomputed for a day until it has settled
-- (see api/src/reports.rs), so a year of a fleet is a range read of this table.
CREATE TABLE report_daily (
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tz           text NOT NULL,
    subject_kind text NOT NULL CHECK (subject_kind IN ('vehicle', 'driver')),
    subject_id   bigint NOT NULL,
    day          date NOT NULL,
    distance_m   double precision NOT NULL DEFAULT 0,
    engine_s     double precision NOT NULL DEFAULT 0,
    driving_s    double precision NOT NULL DEFAULT 0,
    idle_s       double precision NOT NULL DEFAULT 0,
    fuel_used_l  double precision,
    trips        integer NOT NULL DEFAULT 0,
    event_counts jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, tz, subject_kind, day, subject_id)
);

-- Which (tenant, zone, day) report_daily holds, and when it was computed: a day with no
-- activity has no rows but is still known to be done.
CREATE TABLE report_days (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tz          text NOT NULL,
    day         date NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, tz, day)
);

-- Per-object scoping: a driver user is the driver record it is linked to; a customer
-- user sees the vehicles it owns.
ALTER TABLE users ADD COLUMN driver_id bigint REFERENCES drivers (id) ON DELETE SET NULL;
ALTER TABLE vehicles ADD COLUMN owner_user_id bigint REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX vehicles_owner_idx ON vehicles (owner_user_id) WHERE owner_user_id IS NOT NULL;

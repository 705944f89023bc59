-- Services (issue 9): the money ledger, payments, partners and bookings. The invariants
-- that must hold whatever the application does are enforced here, in the database: a
-- transaction balances per currency, posted entries are immutable, a wallet cannot go
-- below zero, a captured amount never exceeds the authorised one nor refunds the
-- captured one, and a partner's bay is never booked twice for overlapping time.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- ISO 4217 currencies and their minor-unit exponent; amounts everywhere are integers in
-- minor units of the row's currency.
CREATE TABLE currencies (
    code     text PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    exponent smallint NOT NULL CHECK (exponent IN (0, 2, 3))
);
INSERT INTO currencies (code, exponent) VALUES
    ('EUR', 2), ('USD', 2), ('GBP', 2), ('CHF', 2), ('SEK', 2), ('NOK', 2), ('DKK', 2), ('PLN', 2),
    ('CZK', 2), ('HUF', 2), ('RON', 2), ('CAD', 2), ('AUD', 2), ('NZD', 2), ('BRL', 2), ('MXN', 2),
    ('ZAR', 2), ('INR', 2), ('CNY', 2), ('SGD', 2), ('HKD', 2), ('TRY', 2), ('AED', 2), ('SAR', 2),
    ('JPY', 0), ('KRW', 0), ('CLP', 0), ('ISK', 0), ('VND', 0),
    ('KWD', 3), ('BHD', 3), ('OMR', 3), ('JOD', 3), ('TND', 3);

-- One account holds one currency. `owner_kind/owner_id` ties wallets and payables to a
-- customer (user), fleet (tenant) or partner; platform accounts have no owner.
CREATE TABLE ledger_accounts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('customer_wallet', 'partner_payable', 'platform_revenue',
                                                  'tax_payable', 'gateway_clearing', 'fx_spread',
                                                  'customer_receivable', 'payout_clearing', 'fx_position')),
    owner_kind     text CHECK (owner_kind IN ('user', 'tenant', 'partner')),
    owner_id       bigint,
    currency       text NOT NULL REFERENCES currencies (code),
    -- Only customer wallets are protected against overdraft; a partner payable may go
    -- negative (a refund after the payout: the partner owes the platform).
    allow_negative boolean NOT NULL DEFAULT false,
    normal_side    smallint NOT NULL GENERATED ALWAYS AS (
                       CASE WHEN kind IN ('gateway_clearing', 'customer_receivable', 'payout_clearing', 'fx_position')
                            THEN 1 ELSE -1 END) STORED,
    -- Maintained by the entry trigger below, so a balance read never sums history and a
    -- debit that would overdraw fails on this CHECK under the row lock the UPDATE takes.
    balance        bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_no_overdraft CHECK (allow_negative OR balance >= 0)
);
-- At most one account per (kind, owner, currency); platform accounts are owner-less singletons.
CREATE UNIQUE INDEX ledger_accounts_owner_key
    ON ledger_accounts (kind, coalesce(owner_kind, ''), coalesce(owner_id, 0), currency);

CREATE TABLE ledger_transactions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL,
    -- What caused it: 'payment_intent:17', 'refund:4', 'payout:9'.
    reference   text,
    -- A correction is a new transaction linked to the one it reverses; nothing is edited.
    reverses    bigint REFERENCES ledger_transactions (id),
    -- FX: the rate used, quoted as units of `to` per unit of `from`, recorded with the legs.
    fx          jsonb,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ledger_transactions_reverses_key ON ledger_transactions (reverses) WHERE reverses IS NOT NULL;

-- Double entry: `amount` > 0 is a debit, < 0 a credit, and every transaction sums to zero
-- per currency. An account's `balance` is kept on its normal side, so it reads naturally
-- as a positive number: debit-normal (assets: money at the gateway, receivables, payout in
-- transit) add debits; credit-normal (what we owe or earned: wallets, partner payables,
-- tax, revenue, FX spread) add credits.
CREATE TABLE ledger_entries (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id bigint NOT NULL REFERENCES ledger_transactions (id),
    account_id     bigint NOT NULL REFERENCES ledger_accounts (id),
    amount         bigint NOT NULL CHECK (amount <> 0),
    currency       text NOT NULL REFERENCES currencies (code),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_transaction_idx ON ledger_entries (transaction_id);

CREATE FUNCTION clutch_ledger_entry_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    account_currency text;
BEGIN
    UPDATE ledger_accounts SET balance = balance + normal_side * NEW.amount
    WHERE id = NEW.account_id
    RETURNING currency INTO account_currency;
    IF account_currency IS DISTINCT FROM NEW.currency THEN
        RAISE EXCEPTION 'entry currency % does not match account % currency %',
            NEW.currency, NEW.account_id, account_currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER ledger_entries_apply BEFORE INSERT ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION clutch_ledger_entry_apply();

-- Checked at commit, after every leg of the transaction is in: at least two legs, and
-- the legs sum to zero in each currency.
CREATE FUNCTION clutch_ledger_transaction_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    legs bigint;
    unbalanced text;
BEGIN
    SELECT count(*) INTO legs FROM ledger_entries WHERE transaction_id = NEW.transaction_id;
    IF legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % leg(s); at least two are required', NEW.transaction_id, legs
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(currency || ' ' || s, ', ') INTO unbalanced FROM (
        SELECT currency, sum(amount) AS s FROM ledger_entries
        WHERE transaction_id = NEW.transaction_id GROUP BY currency HAVING sum(amount) <> 0
    ) u;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: %', NEW.transaction_id, unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION clutch_ledger_transaction_balanced();

CREATE FUNCTION clutch_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: correct a posting with a reversal', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION clutch_immutable();
CREATE TRIGGER ledger_transactions_immutable BEFORE UPDATE OR DELETE ON ledger_transactions
FOR EACH ROW EXECUTE FUNCTION clutch_immutable();

-- Stored FX rates: units of `quote` per one unit of `base`, valid from `as_of`.
CREATE TABLE fx_rates (
    base     text NOT NULL REFERENCES currencies (code),
    quote    text NOT NULL REFERENCES currencies (code),
    as_of    timestamptz NOT NULL,
    rate     numeric(20, 10) NOT NULL CHECK (rate > 0),
    PRIMARY KEY (base, quote, as_of)
);

-- Tax by region: the rate in basis points (2000 = 20 %) valid from a date.
CREATE TABLE tax_rates (
    region     text NOT NULL,
    valid_from date NOT NULL,
    rate_bp    integer NOT NULL CHECK (rate_bp >= 0 AND rate_bp <= 10000),
    PRIMARY KEY (region, valid_from)
);

-- Idempotency for mutating requests: the same (scope, key) with the same request returns
-- the stored response; with a different request it is an error. Kept at least 24 h.
CREATE TABLE service_idempotency_keys (
    scope         text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status_code   integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX service_idempotency_keys_created_idx ON service_idempotency_keys (created_at);

-- A payment: authorised, then captured (at most the authorised amount), then refunded
-- (at most the captured amount). The CHECKs hold under any interleaving because every
-- change is an UPDATE of this row, serialised by its row lock.
CREATE TABLE payment_intents (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       bigint REFERENCES tenants (id) ON DELETE RESTRICT,
    currency        text NOT NULL REFERENCES currencies (code),
    amount          bigint NOT NULL CHECK (amount > 0),
    authorized      bigint NOT NULL DEFAULT 0,
    captured        bigint NOT NULL DEFAULT 0,
    refunded        bigint NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'requires_authorization'
                    CHECK (status IN ('requires_authorization', 'authorized', 'captured', 'partially_refunded',
                                      'refunded', 'voided', 'failed')),
    -- What is being paid for: 'booking:12', 'invoice:3'.
    reference       text,
    -- Payee for the settlement split (platform commission by agreement, rest to partner).
    partner_id      bigint,
    tax_region      text,
    -- The gateway's own id, recorded before and after the call so a crash mid-call
    -- resumes from the last recorded step instead of charging twice.
    gateway         text NOT NULL DEFAULT 'sandbox',
    gateway_ref     text,
    gateway_step    text NOT NULL DEFAULT 'none',
    -- The amount of a capture whose gateway call is in progress.
    pending_amount  bigint,
    -- Platform commission taken (partner payable → platform revenue), once.
    settled_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_intents_authorized_le_amount CHECK (authorized <= amount),
    CONSTRAINT payment_intents_captured_le_authorized CHECK (captured <= authorized),
    CONSTRAINT payment_intents_refunded_le_captured CHECK (refunded <= captured),
    CONSTRAINT payment_intents_nonneg CHECK (authorized >= 0 AND captured >= 0 AND refunded >= 0)
);

-- A payment split across methods and payers: each part is authorised and captured on
-- its own; the parts sum exactly to the intent's amount (checked by the service).
CREATE TABLE payment_parts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    intent_id   bigint NOT NULL REFERENCES payment_intents (id),
    method      text NOT NULL CHECK (method IN ('card', 'wallet', 'invoice')),
    payer_kind  text NOT NULL CHECK (payer_kind IN ('user', 'tenant')),
    payer_id    bigint NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0)
);
CREATE INDEX payment_parts_intent_idx ON payment_parts (intent_id);

CREATE TABLE refunds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    intent_id   bigint NOT NULL REFERENCES payment_intents (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    reason      text,
    -- Reserved against the captured amount before the gateway is called ('pending'), so
    -- concurrent refunds cannot together exceed it; a crash leaves it pending and the
    -- resumer calls the gateway again with the same idempotency key.
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    ledger_tx   bigint REFERENCES ledger_transactions (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_intent_idx ON refunds (intent_id);

-- Incoming gateway webhooks, deduplicated by the gateway's event id.
CREATE TABLE gateway_events (
    gateway     text NOT NULL,
    event_id    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL,
    PRIMARY KEY (gateway, event_id)
);

-- Partners: repair centres and parts shops, one model.
CREATE TABLE partners (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('repair_center', 'parts_shop', 'both')),
    status         text NOT NULL DEFAULT 'applied'
                   CHECK (status IN ('applied', 'documents_submitted', 'approved', 'rejected', 'active', 'suspended')),
    lat            double precision CHECK (lat BETWEEN -90 AND 90),
    lon            double precision CHECK (lon BETWEEN -180 AND 180),
    -- Number of bays (vehicles served at once).
    capacity       integer NOT NULL DEFAULT 1 CHECK (capacity BETWEEN 1 AND 100),
    time_zone      text NOT NULL DEFAULT 'UTC',
    -- {"mon": [["08:00","17:00"]], ...} in the partner's time zone.
    opening_hours  jsonb NOT NULL DEFAULT '{}',
    currency       text NOT NULL DEFAULT 'EUR' REFERENCES currencies (code),
    -- Platform commission in basis points, from the partner agreement.
    commission_bp  integer NOT NULL DEFAULT 1000 CHECK (commission_bp BETWEEN 0 AND 10000),
    tax_region     text,
    qualifications_expire_at timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE partner_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id  bigint NOT NULL REFERENCES partners (id),
    from_status text,
    to_status   text NOT NULL,
    actor       text NOT NULL,
    note        text,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE partner_services (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id  bigint NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    -- A catalog code: 'oil_change', 'brake_pads', 'diagnostics', 'tyres'.
    service     text NOT NULL,
    price       bigint NOT NULL CHECK (price >= 0),
    duration_min integer NOT NULL CHECK (duration_min > 0 AND duration_min <= 24 * 60),
    UNIQUE (partner_id, service)
);

-- Bookings take one bay for a time range. The exclusion constraint makes an overlap on
-- the same bay impossible on every path that reaches an active status; the service picks
-- a free bay and retries on the constraint.
CREATE TABLE bookings (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    bigint REFERENCES tenants (id) ON DELETE RESTRICT,
    customer_id  bigint,
    vehicle_id   bigint REFERENCES vehicles (id) ON DELETE SET NULL,
    partner_id   bigint NOT NULL REFERENCES partners (id),
    service      text NOT NULL,
    bay          integer NOT NULL CHECK (bay >= 1),
    slot         tstzrange NOT NULL CHECK (NOT isempty(slot) AND lower_inc(slot) AND NOT upper_inc(slot)),
    status       text NOT NULL DEFAULT 'requested'
                 CHECK (status IN ('requested', 'confirmed', 'in_progress', 'completed', 'cancelled', 'no_show')),
    -- Price snapshot at acceptance, in the partner's currency.
    price        bigint NOT NULL CHECK (price >= 0),
    currency     text NOT NULL REFERENCES currencies (code),
    payment_intent_id bigint REFERENCES payment_intents (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (partner_id WITH =, bay WITH =, slot WITH &&)
        WHERE (status IN ('requested', 'confirmed', 'in_progress'))
);
CREATE INDEX bookings_partner_slot_idx ON bookings USING gist (partner_id, slot);

CREATE TABLE booking_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id  bigint NOT NULL REFERENCES bookings (id),
    from_status text,
    to_status   text NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Transfers of a partner's payable balance to the partner.
CREATE TABLE payouts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id  bigint NOT NULL REFERENCES partners (id),
    currency    text NOT NULL REFERENCES currencies (code),
    amount      bigint NOT NULL CHECK (amount > 0),
    ledger_tx   bigint NOT NULL REFERENCES ledger_transactions (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Parts inventory: stock on hand and how much of it bookings have reserved. A reservation
-- raises `reserved` under the row lock; the CHECK keeps it within stock.
CREATE TABLE partner_parts (
    partner_id  bigint NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    sku         text NOT NULL,
    name        text NOT NULL,
    price       bigint NOT NULL CHECK (price >= 0),
    stock       integer NOT NULL DEFAULT 0 CHECK (stock >= 0),
    reserved    integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (partner_id, sku),
    CONSTRAINT partner_parts_reserved_le_stock CHECK (reserved <= stock)
);

CREATE TABLE part_reservations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id  bigint NOT NULL,
    sku         text NOT NULL,
    booking_id  bigint REFERENCES bookings (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    status      text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'consumed', 'released')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (partner_id, sku) REFERENCES partner_parts (partner_id, sku)
);

-- One rating per completed booking (checked by the service), 1 to 5 stars.
CREATE TABLE partner_ratings (
    booking_id  bigint PRIMARY KEY REFERENCES bookings (id),
    partner_id  bigint NOT NULL REFERENCES partners (id),
    stars       smallint NOT NULL CHECK (stars BETWEEN 1 AND 5),
    comment     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partner_ratings_partner_idx ON partner_ratings (partner_id);

-- Service recommendations raised by maintenance events (DTC raised, service due), with
-- the shops matched at the time; accepting one creates a booking. One per source event.
CREATE TABLE recommendations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    vehicle_id   bigint REFERENCES vehicles (id) ON DELETE CASCADE,
    device_id    bigint NOT NULL,
    event_kind   text NOT NULL,
    event_time   timestamptz NOT NULL,
    service      text NOT NULL,
    reason       text NOT NULL,
    matches      jsonb NOT NULL DEFAULT '[]',
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'dismissed')),
    booking_id   bigint REFERENCES bookings (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recommendations_source_key UNIQUE (device_id, event_kind, event_time)
);
CREATE INDEX recommendations_tenant_idx ON recommendations (tenant_id, status);

-- Monthly invoices for fleets: unpaid bookings, per-vehicle subscription and usage from
-- the streams. One per tenant, month and currency; issuing posts the receivable.
CREATE TABLE invoices (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    period_start  date NOT NULL,
    currency      text NOT NULL REFERENCES currencies (code),
    subtotal      bigint NOT NULL CHECK (subtotal >= 0),
    tax           bigint NOT NULL CHECK (tax >= 0),
    total         bigint NOT NULL CHECK (total = subtotal + tax),
    status        text NOT NULL DEFAULT 'issued' CHECK (status IN ('issued', 'paid', 'void')),
    ledger_tx     bigint REFERENCES ledger_transactions (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoices_period_key UNIQUE (tenant_id, period_start, currency)
);

CREATE TABLE invoice_lines (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id  bigint NOT NULL REFERENCES invoices (id),
    kind        text NOT NULL CHECK (kind IN ('booking', 'subscription', 'usage')),
    description text NOT NULL,
    quantity    double precision NOT NULL,
    unit_price  bigint NOT NULL,
    amount      bigint NOT NULL,
    booking_id  bigint REFERENCES bookings (id)
);
CREATE INDEX invoice_lines_invoice_idx ON invoice_lines (invoice_id);

-- A booking billed on a fleet invoice instead of paid on the spot.
ALTER TABLE bookings ADD COLUMN invoice_id bigint REFERENCES invoices (id);

-- Drivers' consent to location tracking outside working hours. No row: tracked (the
-- fleet's default). A row without consent hides positions outside `working_hours` (in
-- the driver's time zone) from fleet managers; see clutch_position_visible.
CREATE TABLE driver_consent (
    driver_id            bigint PRIMARY KEY REFERENCES drivers (id) ON DELETE CASCADE,
    track_outside_hours  boolean NOT NULL DEFAULT false,
    time_zone            text NOT NULL DEFAULT 'UTC',
    working_hours        jsonb NOT NULL DEFAULT '{}',
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Whether a fix of a device may be shown to fleet managers: false when the device's
-- driver has not consented to tracking outside working hours and the fix is outside
-- them. Used in the WHERE clause of every position read for non-admin roles.
CREATE FUNCTION clutch_position_visible(p_device bigint, p_time timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c driver_consent%ROWTYPE;
    local_ts timestamp;
    day text;
    r jsonb;
BEGIN
    SELECT dc.* INTO c FROM devices d JOIN driver_consent dc ON dc.driver_id = d.driver_id WHERE d.id = p_device;
    IF NOT FOUND OR c.track_outside_hours THEN
        RETURN true;
    END IF;
    local_ts := p_time AT TIME ZONE c.time_zone;
    day := (ARRAY['sun','mon','tue','wed','thu','fri','sat'])[extract(dow FROM local_ts)::int + 1];
    FOR r IN SELECT * FROM jsonb_array_elements(coalesce(c.working_hours -> day, '[]'::jsonb)) LOOP
        IF local_ts::time >= (r ->> 0)::time AND local_ts::time < (r ->> 1)::time THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;

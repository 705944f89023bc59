-- Event acknowledgements (issue 10): a fleet manager acknowledges an alert once for the
-- whole team, not per browser. Events have no surrogate id (their key is device, time,
-- kind, and they may sit in compressed TimescaleDB chunks), so an acknowledgement is a
-- row of its own on that key rather than a column on the event.
CREATE TABLE event_acks (
    device_id     bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    time          timestamptz NOT NULL,
    kind          text NOT NULL,
    tenant_id     bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    acked_at      timestamptz NOT NULL DEFAULT now(),
    -- Who: the user (or the user an API key acts for), and the key when one was used.
    -- The email is kept as written then, so the record survives the user's deletion.
    acked_by_user bigint REFERENCES users (id) ON DELETE SET NULL,
    acked_by_key  bigint REFERENCES api_keys (id) ON DELETE SET NULL,
    acked_by      text NOT NULL,
    PRIMARY KEY (device_id, time, kind)
);
CREATE INDEX event_acks_tenant_idx ON event_acks (tenant_id, acked_at);

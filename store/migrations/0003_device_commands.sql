-- Downlink command queue, one row per command (issue 4). Written by the API (later) and
-- `ingest`; delivered when the device is connected, now or on its next connection.
CREATE TABLE device_commands (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    -- protocols::Command as JSON (`{"type": "engine_stop"}`); encoded per protocol only
    -- at delivery, so a queued command survives a device changing protocol.
    command      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'sent', 'answered', 'failed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    response     text,
    responded_at timestamptz,
    -- Why it failed (the protocol cannot express the command, for instance).
    error        text
);
-- Delivery looks up a device's open commands in id order.
CREATE INDEX device_commands_open_idx ON device_commands (device_id, id) WHERE status IN ('queued', 'sent');

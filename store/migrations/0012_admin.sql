-- Admin (issue 9, items 6 and 7): the audit trail of every mutating API request.
--
-- Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE. The one exception is the
-- privacy erasure, which may rewrite the JSON bodies (never who, what, when) of rows about
-- the erased person, and only inside a transaction that set `clutch.audit_erase = 'on'`
-- (SET LOCAL, so it cannot leak into other work on a pooled connection).
--
-- No foreign keys: the trail must outlive the users, keys and tenants it names.
CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    -- Null when the caller could not be identified (a failed login, a bad token).
    tenant_id    bigint,
    user_id      bigint,
    api_key_id   bigint,
    role         text,
    method       text NOT NULL,
    -- The route template (`/api/v1/devices/{id}`); null for a path no route matched.
    route        text,
    path         text NOT NULL,
    path_params  jsonb NOT NULL DEFAULT '{}',
    query        text,
    status       smallint NOT NULL,
    request_id   text,
    duration_ms  integer NOT NULL DEFAULT 0,
    client_ip    text,
    -- Secrets are redacted before they get here (api/src/audit.rs).
    request      jsonb,
    before       jsonb,
    after        jsonb
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, id);
CREATE INDEX audit_log_tenant_route_idx ON audit_log (tenant_id, route, id);
CREATE INDEX audit_log_tenant_at_idx ON audit_log (tenant_id, at);

CREATE FUNCTION clutch_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('clutch.audit_erase', true) = 'on'
       AND (NEW.id, NEW.at, NEW.tenant_id, NEW.user_id, NEW.api_key_id, NEW.role, NEW.method, NEW.route,
            NEW.path, NEW.path_params, NEW.query, NEW.status, NEW.request_id, NEW.duration_ms, NEW.client_ip)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.at, OLD.tenant_id, OLD.user_id, OLD.api_key_id, OLD.role, OLD.method, OLD.route,
            OLD.path, OLD.path_params, OLD.query, OLD.status, OLD.request_id, OLD.duration_ms, OLD.client_ip)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION clutch_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION clutch_audit_append_only();

-- Replaces the values of personal keys (name, email, phone, external_id) anywhere in a
-- JSON document with `pseudonym`; used by the erasure on the audit rows about a person.
CREATE FUNCTION clutch_jsonb_pseudonymise(doc jsonb, pseudonym text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    out jsonb;
    k text;
    v jsonb;
BEGIN
    IF doc IS NULL THEN
        RETURN NULL;
    END IF;
    CASE jsonb_typeof(doc)
    WHEN 'object' THEN
        out := '{}'::jsonb;
        FOR k, v IN SELECT * FROM jsonb_each(doc) LOOP
            IF k IN ('name', 'email', 'phone', 'external_id') AND jsonb_typeof(v) = 'string' THEN
                out := out || jsonb_build_object(k, CASE WHEN k = 'name' THEN pseudonym END);
            ELSE
                out := out || jsonb_build_object(k, clutch_jsonb_pseudonymise(v, pseudonym));
            END IF;
        END LOOP;
        RETURN out;
    WHEN 'array' THEN
        SELECT coalesce(jsonb_agg(clutch_jsonb_pseudonymise(e, pseudonym) ORDER BY i), '[]'::jsonb) INTO out
        FROM jsonb_array_elements(doc) WITH ORDINALITY AS a(e, i);
        RETURN out;
    ELSE
        RETURN doc;
    END CASE;
END
$$;

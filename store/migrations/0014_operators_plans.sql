-- What the operators need to know about a vehicle beyond its fixes (issue 7): the fuel
-- tank size, so a level reported in % becomes litres, and a wake-up when that, a
-- service plan, or a device's vehicle changes, so the operators reload without polling.

-- Usable tank capacity in litres; null = unknown (fuel events then stay in % of tank).
ALTER TABLE vehicles ADD COLUMN fuel_tank_l double precision
    CONSTRAINT vehicles_fuel_tank_l_range CHECK (fuel_tank_l > 0 AND fuel_tank_l <= 100000);

-- One notification per statement (a bulk import wakes the operators once); the payload
-- names the table, for logs.
CREATE FUNCTION clutch_operator_config_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('clutch_operator_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER service_plans_notify
AFTER INSERT OR UPDATE OR DELETE ON service_plans
FOR EACH STATEMENT EXECUTE FUNCTION clutch_operator_config_notify();

CREATE TRIGGER vehicles_operator_notify
AFTER UPDATE OF fuel_tank_l, attributes ON vehicles
FOR EACH STATEMENT EXECUTE FUNCTION clutch_operator_config_notify();

-- New devices are looked up on their first batch; only a change of owner, vehicle or
-- class needs a reload.
CREATE TRIGGER devices_operator_notify
AFTER UPDATE OF tenant_id, vehicle_id, attributes ON devices
FOR EACH STATEMENT EXECUTE FUNCTION clutch_operator_config_notify();

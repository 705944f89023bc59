-- TimescaleDB materialises continuous aggregates with a restricted search_path
-- (pg_catalog, pg_temp), so the unqualified `clutch_haversine_m` inside the
-- `clutch_path_m` step function was not found and every refresh of positions_hourly
-- failed ("function clutch_haversine_m(…) does not exist"). Qualify it with the schema it
-- was created in. Not `ALTER FUNCTION … SET search_path`: that would stop the step function
-- (called once per row) from being a plain SQL function call and cost a GUC save/restore
-- per row in the native rollup too.

DO $fix$
DECLARE
    schema_name text := (SELECT pronamespace::regnamespace::text FROM pg_proc
                         WHERE oid = 'clutch_haversine_m(double precision, double precision, double precision, double precision)'::regprocedure);
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION clutch_path_step(state double precision[], lat double precision, lon double precision)
        RETURNS double precision[]
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN lat IS NULL OR lon IS NULL THEN state
                WHEN state IS NULL THEN ARRAY[lat, lon, 0]
                ELSE ARRAY[lat, lon, state[3] + %I.clutch_haversine_m(state[1], state[2], lat, lon)]
            END
        $$
    $f$, schema_name);
END
$fix$;

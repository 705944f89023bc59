-- Telemetry tables. Their shape depends on TimescaleDB, decided here once and recorded in
-- clutch_meta('storage_mode'):
--   timescaledb  -- hypertables for positions and events (1-day chunks), compression
--                   segmented by device and ordered by time, a continuous aggregate for
--                   the hourly rollup. Retention policies are applied from config by the
--                   maintenance task, not here, because config is not known to SQL.
--   partitioned  -- native PARTITION BY RANGE on time with daily partitions that the
--                   maintenance task creates ahead and drops after retention, a DEFAULT
--                   partition for fixes outside the created range (far past, far future:
--                   broken device clocks), BRIN on time, and an hourly rollup table that
--                   the maintenance task recomputes for the hours the writer marked dirty.
-- Either way the column names and the unique (device_id, fix_time) key are the same, so
-- every query and the writer are mode-agnostic.
--
-- TimescaleDB is used only when it is both available and preloaded: CREATE EXTENSION
-- fails without shared_preload_libraries, and a half-created schema is worse than the
-- native one.

DO $migration$
DECLARE
    position_columns constant text := $cols$
        device_id      bigint NOT NULL,
        fix_time       timestamptz NOT NULL,
        server_time    timestamptz NOT NULL,
        lat            double precision NOT NULL,
        lon            double precision NOT NULL,
        altitude       real,
        speed_kmh      real,
        course         real,
        satellites     smallint,
        hdop           real,
        valid          boolean NOT NULL,
        ignition       boolean,
        motion         boolean,
        odometer_m     double precision,
        fuel_level_pct real,
        fuel_used_l    double precision,
        rpm            real,
        coolant_c      real,
        power_v        real,
        battery_v      real,
        event          integer,
        alarms         text[],
        dtcs           text[],
        attributes     jsonb
    $cols$;
    event_columns constant text := $cols$
        device_id   bigint NOT NULL,
        time        timestamptz NOT NULL,
        kind        text NOT NULL,
        server_time timestamptz NOT NULL DEFAULT now(),
        lat         double precision,
        lon         double precision,
        geofence_id bigint,
        attributes  jsonb NOT NULL DEFAULT '{}'
    $cols$;
    -- The rollup's select list, shared by the continuous aggregate and the native job.
    -- Distance is the path length over valid fixes inside the hour; fuel used is the rise
    -- of the cumulative fuel counter inside the hour.
    timescale boolean;
BEGIN
    timescale := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
        AND current_setting('shared_preload_libraries', true) LIKE '%timescaledb%';

    IF timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE format('CREATE TABLE positions (%s)', position_columns);
        EXECUTE format('CREATE TABLE events (%s)', event_columns);
        PERFORM create_hypertable('positions', 'fix_time', chunk_time_interval => interval '1 day');
        PERFORM create_hypertable('events', 'time', chunk_time_interval => interval '1 day');
        INSERT INTO clutch_meta VALUES ('storage_mode', 'timescaledb');
    ELSE
        EXECUTE format('CREATE TABLE positions (%s) PARTITION BY RANGE (fix_time)', position_columns);
        EXECUTE format('CREATE TABLE events (%s) PARTITION BY RANGE (time)', event_columns);
        CREATE TABLE positions_default PARTITION OF positions DEFAULT;
        CREATE TABLE events_default PARTITION OF events DEFAULT;
        -- Rows arrive roughly in time order, so a BRIN stays tiny and still prunes range scans.
        CREATE INDEX positions_fix_time_brin ON positions USING brin (fix_time);
        CREATE INDEX events_time_brin ON events USING brin (time);
        INSERT INTO clutch_meta VALUES ('storage_mode', 'partitioned');
    END IF;

    -- Resent frames are idempotent on this key; it also serves history by device and range.
    CREATE UNIQUE INDEX positions_device_time_key ON positions (device_id, fix_time);
    -- Operators replaying the bus re-emit the same event.
    CREATE UNIQUE INDEX events_device_time_kind_key ON events (device_id, time, kind);
    CREATE INDEX events_kind_time_idx ON events (kind, time);

    IF timescale THEN
        -- After the unique indexes: TimescaleDB requires every column of a unique index on
        -- a compressed hypertable to be a segmentby or orderby column, hence `kind` in
        -- the events' orderby.
        ALTER TABLE positions SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'fix_time');
        ALTER TABLE events SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'time, kind');
        -- Resent frames older than this land in compressed chunks; TimescaleDB >= 2.11
        -- handles ON CONFLICT there, just more slowly.
        PERFORM add_compression_policy('positions', interval '2 days');
        PERFORM add_compression_policy('events', interval '2 days');
    END IF;

    -- One row per device, upserted by the writer in the same transaction as the positions
    -- (only when the new fix is newer). Fillfactor leaves room for HOT updates.
    EXECUTE format('CREATE TABLE device_last_position (%s, PRIMARY KEY (device_id)) WITH (fillfactor = 70)',
                   position_columns);

    -- Hours the writer touched since the rollup job last ran (native rollup only).
    CREATE TABLE rollup_dirty (
        bucket    timestamptz PRIMARY KEY,
        marked_at timestamptz NOT NULL DEFAULT now()
    );

    IF timescale THEN
        BEGIN
            -- WITH NO DATA so this may run inside the migration's transaction; the policy
            -- materialises it. Real-time aggregation off: the open hour is not shown, the
            -- same as the native rollup.
            EXECUTE $cagg$
                CREATE MATERIALIZED VIEW positions_hourly
                WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
                SELECT device_id,
                       time_bucket(interval '1 hour', fix_time) AS bucket,
                       count(*) AS samples,
                       coalesce(clutch_path_m(lat, lon ORDER BY fix_time) FILTER (WHERE valid), 0) AS distance_m,
                       max(speed_kmh) AS max_speed_kmh,
                       avg(speed_kmh) AS avg_speed_kmh,
                       max(fuel_used_l) - min(fuel_used_l) AS fuel_used_l,
                       min(fix_time) AS first_fix,
                       max(fix_time) AS last_fix
                FROM positions
                GROUP BY device_id, time_bucket(interval '1 hour', fix_time)
                WITH NO DATA
            $cagg$;
            PERFORM add_continuous_aggregate_policy('positions_hourly',
                start_offset => interval '3 days', end_offset => interval '1 hour',
                schedule_interval => interval '15 minutes');
            INSERT INTO clutch_meta VALUES ('rollup', 'continuous_aggregate');
        EXCEPTION WHEN OTHERS THEN
            -- An older TimescaleDB that refuses the ordered aggregate in a continuous
            -- aggregate: fall back to the job-maintained table rather than fail the install.
            RAISE WARNING 'continuous aggregate not created (%); using the rollup table', SQLERRM;
        END;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM clutch_meta WHERE key = 'rollup') THEN
        CREATE TABLE positions_hourly (
            device_id     bigint NOT NULL,
            bucket        timestamptz NOT NULL,
            samples       bigint NOT NULL,
            distance_m    double precision NOT NULL,
            max_speed_kmh real,
            avg_speed_kmh double precision,
            fuel_used_l   double precision,
            first_fix     timestamptz NOT NULL,
            last_fix      timestamptz NOT NULL,
            PRIMARY KEY (device_id, bucket)
        );
        CREATE INDEX positions_hourly_bucket_idx ON positions_hourly (bucket);
        INSERT INTO clutch_meta VALUES ('rollup', 'table');
    END IF;
END
$migration$;

-- Event partitions, made lighter for ingest that runs all the time.
--
-- 1. No planner statistics for the events' JSON documents: no query filters
--    or joins on them, and ANALYZE would otherwise detoast and sort a
--    sample of every partition's documents as ingest fills it (a large
--    share of the database's CPU during a backlog). A partition does not
--    inherit a column's statistics target, so each new one gets it too.
-- 2. A new day's partition is created on its own and then attached.
--    CREATE TABLE ... PARTITION OF takes an ACCESS EXCLUSIVE lock on
--    `events`, which waits for every ingest transaction in flight and holds
--    up every new one; ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE, which
--    inserts do not conflict with, and finds the new table empty at once.
ALTER TABLE events ALTER COLUMN data SET STATISTICS 0;
ALTER TABLE events ALTER COLUMN metadata SET STATISTICS 0;

CREATE OR REPLACE FUNCTION hxjobs_ensure_event_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('events_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
                part);
            EXECUTE format(
                'ALTER TABLE %I ALTER COLUMN data SET STATISTICS 0, ALTER COLUMN metadata SET STATISTICS 0',
                part);
            EXECUTE format(
                'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                part, day, day + 1);
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            -- Another session created it meanwhile.
            NULL;
        END;
    END IF;
END;
$$;

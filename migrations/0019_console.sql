-- The daemons sharing this database, as the console shows them: each
-- writes its row at every scheduler pass, and marks it stopped when it
-- stops cleanly. A row whose heartbeat is older than the reaper's
-- `stale_after_secs` is a daemon that died.
CREATE TABLE daemons (
    worker       text        PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    version      text        NOT NULL,
    jobs         integer     NOT NULL,
    running_runs integer     NOT NULL DEFAULT 0
);

-- A job's runs newest first, whatever their type (the console's grid).
CREATE INDEX job_runs_job_interval ON job_runs (job, interval_start DESC, id DESC);

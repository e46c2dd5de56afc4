-- The daemon's state: where each job's schedule stands, what catch-up
-- skipped, and how often a run was claimed.
ALTER TABLE job_runs ADD COLUMN scheduled_for timestamptz;
ALTER TABLE job_runs ADD COLUMN attempts integer NOT NULL DEFAULT 0;
CREATE INDEX job_runs_queued ON job_runs (job, run_type, interval_start) WHERE state = 'queued';
CREATE INDEX job_runs_running ON job_runs (heartbeat_at) WHERE state = 'running';

-- One row per job: the newest schedule occurrence already turned into runs
-- (or skips). Its row lock serialises every daemon's work on the job.
CREATE TABLE job_schedule (
    job        text        PRIMARY KEY,
    last_fire  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Occurrences the catch-up policy did not run, one row per contiguous range.
CREATE TABLE schedule_skips (
    id                   bigserial   PRIMARY KEY,
    job                  text        NOT NULL,
    policy               text        NOT NULL,
    first_interval_start timestamptz NOT NULL,
    last_interval_start  timestamptz NOT NULL,
    occurrences          bigint      NOT NULL CHECK (occurrences > 0),
    recorded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedule_skips_job ON schedule_skips (job, first_interval_start);

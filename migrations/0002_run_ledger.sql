-- The run ledger: one row per job run and one per task instance.
CREATE TABLE job_runs (
    id             bigserial   PRIMARY KEY,
    job            text        NOT NULL,
    run_type       text        NOT NULL CHECK (run_type IN ('scheduled', 'manual', 'backfill')),
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    state          text        NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'success', 'failed', 'skipped')),
    worker         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    heartbeat_at   timestamptz,
    error          text
);
-- A scheduled interval and a backfilled interval each exist once per job;
-- manual runs have their own identities and never take those slots.
CREATE UNIQUE INDEX job_runs_scheduled_once ON job_runs (job, interval_start) WHERE run_type = 'scheduled';
CREATE UNIQUE INDEX job_runs_backfill_once ON job_runs (job, interval_start) WHERE run_type = 'backfill';
CREATE INDEX job_runs_job_state ON job_runs (job, state);

CREATE TABLE task_instances (
    run_id       bigint      NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    task         text        NOT NULL,
    kind         text        NOT NULL,
    state        text        NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'success', 'failed', 'up_for_retry', 'skipped', 'upstream_failed')),
    attempt      integer     NOT NULL DEFAULT 0,
    started_at   timestamptz,
    finished_at  timestamptz,
    duration_ms  bigint,
    heartbeat_at timestamptz,
    error        text,
    PRIMARY KEY (run_id, task)
);

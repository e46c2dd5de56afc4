-- Run controls: cancelled runs and tasks, paused jobs, run parameters, and
-- a record of who changed what, when and why.
ALTER TABLE job_runs DROP CONSTRAINT job_runs_state_check,
    ADD CONSTRAINT job_runs_state_check
        CHECK (state IN ('queued', 'running', 'success', 'failed', 'skipped', 'cancelled'));
ALTER TABLE task_instances DROP CONSTRAINT task_instances_state_check,
    ADD CONSTRAINT task_instances_state_check
        CHECK (state IN ('queued', 'running', 'success', 'failed', 'up_for_retry', 'skipped',
                         'upstream_failed', 'cancelled'));
ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_outcome_check,
    ADD CONSTRAINT task_attempts_outcome_check
        CHECK (outcome IN ('running', 'success', 'failed', 'lost', 'handed_back', 'cancelled'));

-- `params`: the run's parameters as given (the job file's defaults fill
-- the rest); `triggered_by`: who queued a manual run; `cleared_at`: the
-- last clear, after which the lost-worker limit counts claims again from
-- `claims_at_clear`.
ALTER TABLE job_runs
    ADD COLUMN params          jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN triggered_by    text,
    ADD COLUMN cleared_at      timestamptz,
    ADD COLUMN claims_at_clear integer NOT NULL DEFAULT 0;

-- A paused job gets no new scheduled runs and none of its runs is claimed.
ALTER TABLE job_schedule ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- Every operator action: clear, mark, cancel, pause, unpause, trigger.
CREATE TABLE run_actions (
    id     bigserial   PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text        NOT NULL,
    action text        NOT NULL,
    job    text        NOT NULL,
    run_id bigint      REFERENCES job_runs (id) ON DELETE CASCADE,
    task   text,
    reason text,
    detail jsonb
);
CREATE INDEX run_actions_run ON run_actions (run_id);
CREATE INDEX run_actions_job ON run_actions (job, at);

-- Results of the data checks job files declare (`[checks.NAME]`): one row
-- per check of a task's successful attempt, kept with the attempt.
CREATE TABLE check_results (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    job text NOT NULL,
    task text NOT NULL,
    check_name text NOT NULL,
    attempt_id bigint NOT NULL REFERENCES task_attempts (id) ON DELETE CASCADE,
    try integer NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end timestamptz NOT NULL,
    kind text NOT NULL,
    blocking boolean NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('pass', 'fail', 'warn', 'error', 'skipped')),
    observed double precision,
    message text NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (attempt_id, check_name)
);

CREATE INDEX check_results_interval ON check_results (job, interval_start);
CREATE INDEX check_results_checked ON check_results (interval_start, interval_end);

-- Every attempt of every task: under which claim of its run and by which
-- worker it ran, and how it ended. `lost`: its worker stopped (killed, or
-- its claim was taken over) before the attempt ended; `handed_back`: a
-- shutdown stopped it and the run went back to the queue.
CREATE TABLE task_attempts (
    id          bigserial   PRIMARY KEY,
    run_id      bigint      NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    task        text        NOT NULL,
    claim       integer     NOT NULL,
    try         integer     NOT NULL,
    worker      text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text        NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'success', 'failed', 'lost', 'handed_back')),
    error       text,
    UNIQUE (run_id, task, claim, try)
);
CREATE INDEX task_attempts_running ON task_attempts (run_id) WHERE outcome = 'running';

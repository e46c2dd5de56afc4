-- What each task attempt said (a shell task's output, a built-in task's
-- log events, how the attempt ended), in chunks written while it runs, so
-- a log is readable before the attempt ends. Removed with its run.
CREATE TABLE task_logs (
    attempt_id bigint      NOT NULL REFERENCES task_attempts (id) ON DELETE CASCADE,
    seq        integer     NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    body       text        NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);

-- Bytes of log kept; bytes and lines of output dropped past
-- `logs.max_bytes_per_attempt`; `log_closed`: its last chunk is written.
ALTER TABLE task_attempts
    ADD COLUMN log_bytes         bigint  NOT NULL DEFAULT 0,
    ADD COLUMN log_dropped       bigint  NOT NULL DEFAULT 0,
    ADD COLUMN log_dropped_lines bigint  NOT NULL DEFAULT 0,
    ADD COLUMN log_closed        boolean NOT NULL DEFAULT false;

-- Console logins: the cookie holds a random id; only its SHA-256 is kept.
-- A session ends at logout (revoked_at) or at expires_at.
CREATE TABLE console_sessions (
    id_sha256   bytea PRIMARY KEY,
    actor       text NOT NULL,
    csrf        text NOT NULL,
    client      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- The key the CSRF tokens of visitors without a login are made with, one
-- for every API process on this database.
CREATE TABLE console_keys (
    id   int PRIMARY KEY CHECK (id = 1),
    key  bytea NOT NULL
);

-- A run's interval ends after it starts, within the years hxjobs
-- schedules (1970 to 9999). Runs written before that are not (a defect
-- could queue a month with start = end, and no date past chrono's years
-- can be read) are set aside here, not lost; their tasks go with them.
CREATE TABLE job_runs_set_aside (LIKE job_runs);
WITH moved AS (
    DELETE FROM job_runs
    WHERE interval_start >= interval_end
       OR interval_start < '1970-01-01T00:00:00Z'
       OR interval_end > '10000-01-01T00:00:00Z'
    RETURNING *
)
INSERT INTO job_runs_set_aside SELECT * FROM moved;
ALTER TABLE job_runs
    ADD CONSTRAINT job_runs_interval_representable CHECK (
        interval_start < interval_end
        AND interval_start >= '1970-01-01T00:00:00Z'
        AND interval_end <= '10000-01-01T00:00:00Z'
    );

-- Notifications (an outbox): written in the transaction of the state
-- change that caused them, delivered afterwards by whichever daemon claims
-- them (SKIP LOCKED), retried with backoff; every delivery attempt kept.
CREATE TABLE notifications (
    id              bigserial   PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    target          text        NOT NULL,
    event           text        NOT NULL,
    payload         jsonb       NOT NULL,
    -- One notification per cause and target (a deadline, an hour of dead letters).
    dedupe          text        UNIQUE,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    delivered_at    timestamptz,
    -- Given up after notify.max_attempts.
    failed_at       timestamptz,
    last_error      text
);
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

CREATE TABLE notification_attempts (
    id              bigserial   PRIMARY KEY,
    notification_id bigint      NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    worker          text        NOT NULL,
    ok              boolean     NOT NULL,
    detail          text
);

-- Intervals that missed their job's deadline (`deadline` in the job file),
-- whether or not a run exists for them; one row each.
CREATE TABLE late_intervals (
    job            text        NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    deadline_at    timestamptz NOT NULL,
    noticed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, interval_start)
);

-- How far each job's deadlines have been checked.
ALTER TABLE job_schedule ADD COLUMN deadlines_checked_until timestamptz;

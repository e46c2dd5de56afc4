-- Backfills started through the API: at most one running per job, each
-- cancellable. A running row whose heartbeat stopped (its API process
-- died) counts as failed when the next backfill of the job is asked for.
CREATE TABLE backfills (
    id           bigserial   PRIMARY KEY,
    job          text        NOT NULL,
    range_from   timestamptz NOT NULL,
    range_to     timestamptz NOT NULL,
    reprocess    text        NOT NULL,
    parallel     integer     NOT NULL,
    state        text        NOT NULL DEFAULT 'running'
                 CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    worker       text        NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    succeeded    integer,
    failed       integer,
    error        text
);
CREATE UNIQUE INDEX backfills_one_running ON backfills (job) WHERE state = 'running';

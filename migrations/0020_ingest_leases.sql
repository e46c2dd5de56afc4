-- Partitions shared among ingest workers: each row of consumer_offsets is
-- also the partition's lease. A worker claims a free or lost lease with
-- SKIP LOCKED, which raises its epoch; a batch commits only while its
-- worker still owns the epoch it read the partition under (checked in the
-- statement that moves the offset).
ALTER TABLE consumer_offsets
    ADD COLUMN owner             text,
    ADD COLUMN epoch             bigint      NOT NULL DEFAULT 0,
    ADD COLUMN acquired_at       timestamptz,
    ADD COLUMN lease_expires_at  timestamptz,
    -- Everything the broker held at this time is stored (the position
    -- passed the high watermark read then). Hourly rollups wait on the
    -- minimum over the group's partitions.
    ADD COLUMN caught_up_through timestamptz,
    -- The broker's end as the owner last read it, for lag.
    ADD COLUMN high_watermark    bigint,
    ADD COLUMN high_read_at      timestamptz,
    ADD COLUMN last_commit_at    timestamptz;

UPDATE consumer_offsets o SET caught_up_through = p.drained_through, last_commit_at = o.updated_at
FROM ingest_progress p WHERE p.consumer_group = o.consumer_group;
DROP TABLE ingest_progress;

-- Workers present, each with the PostgreSQL session that speaks for it: a
-- worker whose session ended (the process died) loses its leases at once;
-- one that stops renewing loses them when they expire.
CREATE TABLE ingest_workers (
    consumer_group text        NOT NULL,
    worker         text        NOT NULL,
    -- "continuous" workers share the partitions; a "drain" takes free ones.
    mode           text        NOT NULL,
    backend_pid    integer     NOT NULL,
    backend_start  timestamptz NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    beat_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, worker)
);

-- Every committed batch, per partition: which worker under which epoch
-- moved the offset from where to where.
CREATE TABLE ingest_commits (
    id             bigserial   PRIMARY KEY,
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    epoch          bigint      NOT NULL,
    worker         text        NOT NULL,
    from_offset    bigint      NOT NULL,
    to_offset      bigint      NOT NULL,
    committed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_commits_committed_at ON ingest_commits (committed_at);

-- When each consumer group last stored everything the broker held: a
-- drain that read the topics' ends at `drained_through` and reached them.
-- Hourly rollups wait for it to pass their interval's end.
CREATE TABLE ingest_progress (
    consumer_group  text        PRIMARY KEY,
    drained_through timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

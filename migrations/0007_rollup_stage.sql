-- The columns an hourly rollup reads, written by ingest in the same
-- transaction as the events: one Parquet blob per batch and event hour.
-- An hour is read from here when its staged row count equals its raw
-- event count, otherwise from the raw events.
CREATE TABLE rollup_stage (
    id        bigserial   PRIMARY KEY,
    hour      timestamptz NOT NULL,
    event_day date        NOT NULL,
    rows      integer     NOT NULL,
    data      bytea       NOT NULL
);
-- Parquet is compressed already.
ALTER TABLE rollup_stage ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX rollup_stage_hour ON rollup_stage (hour);
CREATE INDEX rollup_stage_day ON rollup_stage (event_day);

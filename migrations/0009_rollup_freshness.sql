-- Which rollup buckets were computed, from what. Every write of a bucket
-- takes a new `seq`; `input_mark` is what it was built from: for an hour,
-- the hour's `rollup_inputs.version` read before its events; for a coarser
-- bucket, the highest `seq` among the finer buckets it merged. A bucket is
-- stale when its input moved past its mark (late events, a finer bucket
-- computed again), which reports and the hourly job check.
CREATE SEQUENCE rollup_seq;
CREATE TABLE rollup_buckets (
    grain        text        NOT NULL CHECK (grain IN ('hour', 'day', 'week', 'month')),
    bucket_start timestamptz NOT NULL,
    seq          bigint      NOT NULL,
    input_mark   bigint      NOT NULL,
    rows         integer     NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grain, bucket_start)
);

-- Per event hour, bumped by every ingest transaction that stores events for
-- it (in that transaction).
CREATE TABLE rollup_inputs (
    hour    timestamptz PRIMARY KEY,
    version bigint      NOT NULL
);

-- Rollups computed before this table existed: recorded as fresh, finer
-- grains first so every coarser mark covers them.
INSERT INTO rollup_buckets (grain, bucket_start, seq, input_mark, rows, computed_at)
SELECT grain, bucket_start, nextval('rollup_seq'), 0, count(*), max(computed_at)
FROM rollups WHERE grain = 'hour' GROUP BY grain, bucket_start ORDER BY bucket_start;
INSERT INTO rollup_buckets (grain, bucket_start, seq, input_mark, rows, computed_at)
SELECT grain, bucket_start, nextval('rollup_seq'),
       (SELECT COALESCE(max(seq), 0) FROM rollup_buckets), count(*), max(computed_at)
FROM rollups WHERE grain = 'day' GROUP BY grain, bucket_start ORDER BY bucket_start;
INSERT INTO rollup_buckets (grain, bucket_start, seq, input_mark, rows, computed_at)
SELECT grain, bucket_start, nextval('rollup_seq'),
       (SELECT COALESCE(max(seq), 0) FROM rollup_buckets), count(*), max(computed_at)
FROM rollups WHERE grain IN ('week', 'month') GROUP BY grain, bucket_start ORDER BY grain, bucket_start;

-- user_feedback ratings of 3 or less (docs/measures.md, "low ratings").
-- NULL on rows computed before the measure existed: shown as n/a.
ALTER TABLE rollups ADD COLUMN rating_low_count bigint;

-- A report generated again after its period's rollups changed supersedes
-- the earlier one; `data_seq` is the newest rollup seq a report read.
ALTER TABLE reports ADD COLUMN superseded_by bigint REFERENCES reports (id) ON DELETE SET NULL;
ALTER TABLE reports ADD COLUMN data_seq bigint;
ALTER TABLE reports ADD COLUMN partial_through timestamptz;

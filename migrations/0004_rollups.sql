-- Rollups (EVENTS.md, "Rollups"): one row per grain, bucket and group.
-- Sums and counts are exact; the sketches make percentiles and distinct
-- users mergeable into coarser grains.
CREATE TABLE rollups (
    grain             text             NOT NULL CHECK (grain IN ('hour', 'day', 'week', 'month')),
    bucket_start      timestamptz      NOT NULL,
    event_type        text             NOT NULL,
    source            text             NOT NULL,
    subject           text             NOT NULL,
    event_count       bigint           NOT NULL,
    error_count       bigint           NOT NULL,
    latency_count     bigint           NOT NULL,
    latency_sum_ms    double precision NOT NULL,
    latency_avg_ms    double precision,
    latency_max_ms    double precision,
    latency_p50_ms    double precision,
    latency_p95_ms    double precision,
    latency_p99_ms    double precision,
    prompt_tokens     bigint           NOT NULL,
    completion_tokens bigint           NOT NULL,
    cost_usd          double precision NOT NULL,
    rating_sum        double precision NOT NULL,
    rating_count      bigint           NOT NULL,
    rating_avg        double precision,
    value_sum         double precision NOT NULL,
    value_min         double precision,
    value_max         double precision,
    distinct_users    bigint           NOT NULL,
    latency_sketch    bytea,
    users_sketch      bytea,
    computed_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (grain, bucket_start, event_type, source, subject)
);

-- Raw events, one row per event identity, range-partitioned by UTC event day
-- so that retention can drop whole days.
CREATE TABLE events (
    event_day         date             NOT NULL,
    event_id          uuid             NOT NULL,
    event_type        text             NOT NULL,
    event_time        timestamptz      NOT NULL,
    source            text             NOT NULL,
    model             text,
    latency_ms        double precision,
    prompt_tokens     bigint,
    completion_tokens bigint,
    cost_usd          double precision,
    status            text,
    rating            double precision,
    name              text,
    value             double precision,
    error_type        text,
    severity          text,
    user_id           text,
    session_id        text,
    request_id        text,
    model_id          text,
    priority          text,
    data              jsonb            NOT NULL,
    metadata          jsonb,
    kafka_topic       text             NOT NULL,
    kafka_partition   integer          NOT NULL,
    kafka_offset      bigint           NOT NULL,
    ingested_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (event_day, event_id)
) PARTITION BY RANGE (event_day);

CREATE INDEX events_time_brin ON events USING brin (event_time);

-- Creates the partition for one day if it is missing; safe to call concurrently.
CREATE FUNCTION hxjobs_ensure_event_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('events_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                part, day, day + 1);
        EXCEPTION WHEN duplicate_table THEN
            NULL;
        END;
    END IF;
END;
$$;

-- Where the next drain starts, per consumer group and partition. Written in
-- the same transaction as the events it covers.
CREATE TABLE consumer_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Rejected input, kept whole.
CREATE TABLE dead_letters (
    id              bigserial   PRIMARY KEY,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    payload         bytea,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

-- Offsets the broker skipped (retention, compaction, faults): never silent.
CREATE TABLE ingest_gaps (
    id             bigserial   PRIMARY KEY,
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    from_offset    bigint      NOT NULL,
    to_offset      bigint      NOT NULL,
    detected_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer_group, topic, partition, from_offset)
);

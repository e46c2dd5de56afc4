-- Dead letters are published to the dead-letter topic after their batch
-- committed (an outbox): the ingest transaction never waits on the broker.
-- A publisher claims unpublished rows with SKIP LOCKED, retries with
-- backoff, and records each attempt; at least once.
ALTER TABLE dead_letters
    ADD COLUMN published_at     timestamptz,
    ADD COLUMN publish_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN publish_after    timestamptz,
    ADD COLUMN publish_error    text;
-- Rows from before the outbox were published (or given up) by their drain.
UPDATE dead_letters SET published_at = received_at;
CREATE INDEX dead_letters_unpublished ON dead_letters (id) WHERE published_at IS NULL;

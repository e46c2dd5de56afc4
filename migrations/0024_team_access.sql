-- Who started and who cancelled a backfill, whichever surface it came
-- from (the CLI's backfills are recorded too).
ALTER TABLE backfills ADD COLUMN started_by text, ADD COLUMN cancelled_by text;

-- Every state change, login and refused request: who, by which means,
-- with which role, from where, what, on what, and how it ended.
CREATE TABLE audit (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text        NOT NULL,
    means   text        NOT NULL,
    role    text,
    client  text,
    action  text        NOT NULL,
    target  text,
    outcome text        NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
    detail  jsonb
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_actor_at ON audit (actor, at);

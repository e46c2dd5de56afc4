-- Pools (`[pools.NAME] slots = N`): a task with `pool = "NAME"` holds one
-- of its slots while an attempt runs. One row per task of a running run
-- that asked for a slot; `granted_at` set once it holds one. A row counts
-- only while its run is running under the same claim with a fresh
-- heartbeat, so a lost worker's slots free themselves.
CREATE TABLE pool_slots (
    run_id bigint NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    task text NOT NULL,
    pool text NOT NULL,
    claim integer NOT NULL,
    job text NOT NULL,
    worker text NOT NULL,
    asked_at timestamptz NOT NULL DEFAULT now(),
    granted_at timestamptz,
    PRIMARY KEY (run_id, task)
);

CREATE INDEX pool_slots_pool ON pool_slots (pool, asked_at);

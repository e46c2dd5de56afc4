-- Which version of each job every daemon has loaded, and since when:
-- replaced whole at each (re)load, removed when the daemon stops. A queued
-- run whose job no live daemon has loaded says so.
CREATE TABLE daemon_jobs (
    worker    text        NOT NULL REFERENCES daemons (worker) ON DELETE CASCADE,
    job       text        NOT NULL,
    version   text        NOT NULL,
    file      text        NOT NULL,
    loaded_at timestamptz NOT NULL,
    PRIMARY KEY (worker, job)
);

-- Every version of a job file seen (its text, kept when first seen), and
-- the version each run and each task attempt ran with.
CREATE TABLE job_versions (
    job text NOT NULL,
    version text NOT NULL,
    definition text NOT NULL,
    file text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    first_seen_by text NOT NULL,
    PRIMARY KEY (job, version)
);

ALTER TABLE job_runs ADD COLUMN job_version text;
ALTER TABLE task_attempts ADD COLUMN job_version text;

-- An attempt runs with the version its run was claimed with, however the
-- attempt row is written (by the executor or by a task's seal).
CREATE FUNCTION hxjobs_attempt_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.job_version IS NULL THEN
        SELECT job_version INTO NEW.job_version FROM job_runs WHERE id = NEW.run_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER task_attempts_version BEFORE INSERT ON task_attempts
    FOR EACH ROW EXECUTE FUNCTION hxjobs_attempt_version();

CREATE INDEX job_runs_job_version ON job_runs (job, job_version);

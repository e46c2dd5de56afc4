-- A task's success sealed by its attempt's key (run, claim, task, try)
-- rather than its id: a task that writes to the database records its
-- attempt only when it has run for a second, logged a line or ended, so
-- the seal may be the attempt's first write. Checks the claim (locking the
-- run row against a takeover until commit), records the attempt and the
-- task as succeeded, and lets the commit skip the wait for the WAL flush;
-- raises SQLSTATE HX409 when the claim is gone. `hxjobs_seal(bigint)`
-- stays for processes of the previous version still running.
CREATE FUNCTION hxjobs_seal(p_run bigint, p_claim integer, p_task text, p_try integer,
                            p_started timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w text;
BEGIN
    SELECT worker INTO w FROM job_runs
     WHERE id = p_run AND attempts = p_claim AND state = 'running'
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the run''s claim was taken over by another worker'
            USING ERRCODE = 'HX409';
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO task_attempts (run_id, task, claim, try, worker, started_at, finished_at, outcome)
    VALUES (p_run, p_task, p_claim, p_try, w, p_started, clock_timestamp(), 'success')
    ON CONFLICT (run_id, task, claim, try)
    DO UPDATE SET outcome = 'success', finished_at = clock_timestamp(), error = NULL;
    UPDATE task_instances
       SET state = 'success', attempt = GREATEST(attempt, p_try), error = NULL,
           started_at = COALESCE(started_at, p_started),
           finished_at = clock_timestamp(),
           duration_ms = (extract(epoch FROM clock_timestamp()
                          - COALESCE(started_at, p_started)) * 1000)::bigint
     WHERE run_id = p_run AND task = p_task;
END
$$;

-- A task's success, recorded inside the transaction that commits its data
-- (ledger::Seal): checks that the attempt's claim still holds the run,
-- locking the run row against a takeover until commit; marks the attempt
-- and the task succeeded; and lets the commit skip the wait for the WAL
-- flush (the data and its success are kept or lost together). Raises
-- SQLSTATE HX409 when the claim is gone, so the transaction cannot commit.
CREATE FUNCTION hxjobs_seal(p_attempt bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    a task_attempts%ROWTYPE;
BEGIN
    SELECT * INTO a FROM task_attempts WHERE id = p_attempt;
    PERFORM 1 FROM job_runs
     WHERE id = a.run_id AND attempts = a.claim AND state = 'running'
       FOR SHARE;
    IF a.id IS NULL OR NOT FOUND THEN
        RAISE EXCEPTION 'the run''s claim was taken over by another worker'
            USING ERRCODE = 'HX409';
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE task_attempts SET outcome = 'success', finished_at = clock_timestamp()
     WHERE id = p_attempt;
    UPDATE task_instances
       SET state = 'success', attempt = GREATEST(attempt, a.try), error = NULL,
           finished_at = clock_timestamp(),
           duration_ms = (extract(epoch FROM clock_timestamp()
                          - COALESCE(started_at, clock_timestamp())) * 1000)::bigint
     WHERE run_id = a.run_id AND task = a.task;
END
$$;

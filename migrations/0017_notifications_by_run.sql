-- GET /runs/{id} lists the run's notifications: found by the run id in
-- their payload without reading the whole outbox.
CREATE INDEX notifications_run ON notifications (((payload->>'run_id')::bigint));

-- Jobs with trigger = "complete" are queued when an interval's data is
-- complete. `complete_from` is the start of the oldest interval that
-- trigger has not yet seen queued (NULL: not looked at yet).
ALTER TABLE job_schedule ADD COLUMN complete_from timestamptz;

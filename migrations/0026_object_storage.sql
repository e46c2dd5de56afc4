-- Reports and archived days live in the object store (`[storage] url`),
-- reached by every node. `storage_key` is the object's key there; a row
-- without one still names a file in the old local directory
-- (reports.output_dir, retention.archive_dir) until `hxjobs storage
-- migrate` copies it into the store.
ALTER TABLE reports ADD COLUMN storage_key text;
ALTER TABLE event_archives ADD COLUMN storage_key text;

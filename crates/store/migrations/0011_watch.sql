-- WatchResults streams a job's results in an order no later commit can land behind: the
-- inserting transaction's id (xid8) then the URL id form the cursor, and only rows of
-- transactions older than every running one (pg_snapshot_xmin) are sent.
ALTER TABLE url_results ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX url_results_watch ON url_results (job_id, tx, url_id);

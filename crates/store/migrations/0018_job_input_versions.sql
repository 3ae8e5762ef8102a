-- Every version of an input a job was given, not only the latest: each import that grows a
-- segment writes its own row (keyed by the length it grew from), so re-importing the shorter
-- original after a grown file still matches a stored digest and adds nothing.
ALTER TABLE job_inputs ADD COLUMN grown_from BIGINT NOT NULL DEFAULT 0;
ALTER TABLE job_inputs DROP CONSTRAINT job_inputs_pkey;
ALTER TABLE job_inputs ADD PRIMARY KEY (job_id, base, grown_from);

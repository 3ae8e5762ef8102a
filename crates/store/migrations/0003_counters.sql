-- Progress at billions of URLs cannot count(*) url_results: every writer of url_results keeps
-- these counters in the same transaction. Rows are spread over 16 slots so concurrent writers
-- do not serialise on one hot row; readers sum the slots.
CREATE TABLE job_status_counts (
    job_id  BIGINT NOT NULL,
    status  TEXT NOT NULL,
    slot    SMALLINT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (job_id, status, slot)
);
CREATE TABLE job_minute_counts (
    job_id  BIGINT NOT NULL,
    minute  TIMESTAMPTZ NOT NULL,
    slot    SMALLINT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (job_id, minute, slot)
);
INSERT INTO job_status_counts SELECT job_id, status, 0, count(*) FROM url_results GROUP BY 1, 2;
DROP INDEX url_results_job_time;

-- Faces arrive clustered by URL id (chunks are leased in order), so a BRIN index finds them at
-- a fraction of a B-tree's write cost. Faces stay unique because they are only written with a
-- freshly inserted url_results row, in the same transaction.
ALTER TABLE faces DROP CONSTRAINT faces_pkey;
CREATE INDEX faces_url_id ON faces USING brin (url_id) WITH (pages_per_range = 16);

-- Per-job models and A/B: the job's model, an optional second model for a share of its URLs
-- (chosen per URL id by the delegator), and successful detections counted per model that
-- produced them, by every writer of an ok result in the same transaction (as 0003's counters).
ALTER TABLE jobs
    ADD COLUMN model_id TEXT NOT NULL DEFAULT '',
    ADD COLUMN alt_model_id TEXT NOT NULL DEFAULT '',
    ADD COLUMN alt_share DOUBLE PRECISION NOT NULL DEFAULT 0
        CHECK (alt_share >= 0 AND alt_share <= 1);
ALTER TABLE jobs ADD CONSTRAINT jobs_alt_model_named CHECK (alt_share = 0 OR alt_model_id <> '');

CREATE TABLE job_model_counts (
    job_id   BIGINT NOT NULL,
    model_id TEXT NOT NULL,
    slot     SMALLINT NOT NULL,
    ok_urls  BIGINT NOT NULL,
    faces    BIGINT NOT NULL,
    PRIMARY KEY (job_id, model_id, slot)
);
INSERT INTO job_model_counts
SELECT job_id, model_id, 0, count(*), coalesce(sum(face_count), 0)
FROM url_results WHERE status = 'ok' GROUP BY 1, 2;

-- Poison handling: which URLs a lease held, how often a chunk failed, per-URL attempts.
ALTER TABLE chunks
    ADD COLUMN lease_first BIGINT,
    ADD COLUMN lease_last  BIGINT,
    ADD COLUMN failures    INT NOT NULL DEFAULT 0,
    ADD COLUMN expired     INT NOT NULL DEFAULT 0;

CREATE TABLE url_attempts (
    url_id      BIGINT PRIMARY KEY,
    attempts    INT NOT NULL,
    last_error  TEXT NOT NULL
);

-- The first result wins already; these checks are done by the writer's JOIN instead, and
-- dropping them saves an index probe per row on the hottest insert path.
ALTER TABLE faces DROP CONSTRAINT faces_url_id_fkey;
ALTER TABLE url_results DROP CONSTRAINT url_results_url_id_fkey;

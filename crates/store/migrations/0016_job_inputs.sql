-- Which inputs a job was imported from, so that re-importing one resumes it and importing
-- another appends all of it (cli `import`). A segment: the input's lines
-- input_from..input_from+urls stored at ordinals base..base+urls; `digest` is the hex sha256
-- of the input's lines 0..input_from+urls, each followed by '\n'. Written in the transaction
-- that stores the URLs, so it never claims URLs that are not there.
CREATE TABLE job_inputs (
    job_id     BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    base       BIGINT NOT NULL,
    input_from BIGINT NOT NULL DEFAULT 0,
    urls       BIGINT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (job_id, base)
);

-- Jobs imported before: one segment for ordinals 0..total when they are contiguous, so the
-- same file resumes as it did. Larger jobs are left out (the digest needs every URL in memory);
-- re-importing them appends the file as a new input.
INSERT INTO job_inputs (job_id, base, urls, digest)
SELECT j.id, 0, j.total_urls,
       encode(sha256(convert_to(string_agg(u.url || E'\n', '' ORDER BY u.id), 'UTF8')), 'hex')
FROM jobs j JOIN urls u ON u.job_id = j.id
WHERE j.total_urls BETWEEN 1 AND 1000000
GROUP BY j.id, j.total_urls
HAVING max(u.id) - min(u.id) + 1 = j.total_urls AND min(u.id) = url_id(j.id, 0);

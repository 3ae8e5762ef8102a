-- Progress must not scan a job's chunk rows (2 million at 2B URLs). Every statement that
-- changes chunks appends its net effect here (insert-only: concurrent writers never wait on
-- one shared counter row, so no new lock order and no deadlock), and the delegator's upkeep
-- folds a job's rows back into one. Readers sum the few rows of a job.
CREATE TABLE job_chunk_counts (
    job_id    BIGINT NOT NULL,
    pending   BIGINT NOT NULL DEFAULT 0,
    leased    BIGINT NOT NULL DEFAULT 0,
    done      BIGINT NOT NULL DEFAULT 0,
    reissued  BIGINT NOT NULL DEFAULT 0,
    expired   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX job_chunk_counts_job ON job_chunk_counts (job_id);

CREATE FUNCTION chunk_counts_delta() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- PL/pgSQL plans a statement when it first runs it: each branch names only the
    -- transition tables its operation has.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_chunk_counts
        SELECT job_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'leased'),
               count(*) FILTER (WHERE state = 'done'), sum(reissued), sum(expired)
        FROM new_rows GROUP BY job_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_chunk_counts
        SELECT job_id, -count(*) FILTER (WHERE state = 'pending'), -count(*) FILTER (WHERE state = 'leased'),
               -count(*) FILTER (WHERE state = 'done'), -sum(reissued), -sum(expired)
        FROM old_rows GROUP BY job_id;
    ELSE
        INSERT INTO job_chunk_counts
        SELECT job_id, sum(p), sum(l), sum(d), sum(r), sum(e) FROM (
            SELECT job_id, (state = 'pending')::int AS p, (state = 'leased')::int AS l,
                   (state = 'done')::int AS d, reissued AS r, expired AS e FROM new_rows
            UNION ALL
            SELECT job_id, -(state = 'pending')::int, -(state = 'leased')::int,
                   -(state = 'done')::int, -reissued, -expired FROM old_rows) t
        GROUP BY job_id
        -- A renewal changes no count: nothing to append.
        HAVING sum(p) <> 0 OR sum(l) <> 0 OR sum(d) <> 0 OR sum(r) <> 0 OR sum(e) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER chunk_counts_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION chunk_counts_delta();
CREATE TRIGGER chunk_counts_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION chunk_counts_delta();
CREATE TRIGGER chunk_counts_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION chunk_counts_delta();

INSERT INTO job_chunk_counts
SELECT job_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'leased'),
       count(*) FILTER (WHERE state = 'done'), sum(reissued), sum(expired)
FROM chunks GROUP BY job_id;

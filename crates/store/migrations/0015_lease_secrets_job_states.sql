-- A lease is authorized by its secret, not by its (guessable) token: only the SHA-256 of the
-- 128-bit secret handed to the holder is kept. Leases granted before this have none and can
-- no longer be used; their holders' calls fail and the sweeper returns the chunks.
ALTER TABLE chunks ADD COLUMN secret_hash BYTEA;

-- The job lifecycle as a state machine (services/delegator/src/jobstate.rs): `cancelling`
-- and `deleting` are resumed by the sweeper when interrupted; `done` once every URL has a
-- result (appending or retrying makes the job `running` again).
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('running', 'paused', 'cancelling', 'cancelled', 'done', 'deleting'));

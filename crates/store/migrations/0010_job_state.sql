-- A job's lifecycle: only running jobs are leased; a paused one keeps its open leases; a
-- cancelled one has had its leases revoked and its unprocessed URLs marked `cancelled`.
ALTER TABLE jobs ADD COLUMN state TEXT NOT NULL DEFAULT 'running'
    CHECK (state IN ('running', 'paused', 'cancelled'));

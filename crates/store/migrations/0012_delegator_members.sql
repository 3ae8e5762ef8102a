-- Elastic shards: each delegator heartbeats its row; the live rows, in name order, give
-- every delegator its (index, count) without a restart when members join or leave.
CREATE TABLE delegator_members (
    member   TEXT PRIMARY KEY,
    seen_at  TIMESTAMPTZ NOT NULL
);

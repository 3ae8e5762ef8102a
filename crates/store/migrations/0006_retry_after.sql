-- A chunk whose lease failed is not leased again before this time (exponential, jittered
-- back-off), by any fetcher: a failing chunk cannot hammer its origin servers in a loop.
ALTER TABLE chunks ADD COLUMN retry_after TIMESTAMPTZ;

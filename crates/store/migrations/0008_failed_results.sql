-- RetryUrls looks for one failure class among a job's results: an index over failed results
-- only (a few percent of rows) keeps that O(retried) instead of a walk over every result.
CREATE INDEX url_results_failed ON url_results (url_id) WHERE status <> 'ok';

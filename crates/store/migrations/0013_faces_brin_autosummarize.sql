-- A BRIN range that is not summarised matches every query: at 100M URLs (10M with faces)
-- export pages read 72,000 lossy blocks each (703 ms) until autovacuum got round to the new
-- ranges; summarised, 848 blocks (9 ms). Ask for each range's summary as soon as it is full
-- (the results service also summarises new ranges itself, see lib.rs).
ALTER INDEX faces_url_id SET (autosummarize = on);

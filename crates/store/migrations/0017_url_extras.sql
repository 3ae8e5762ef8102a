-- The input's other columns, carried with each URL to the export (img2dataset's
-- save_additional_columns): one JSON object as text (text, not jsonb, so the columns keep
-- their input order), NULL when the URL has none. The delegator refuses more than 8 KiB.
ALTER TABLE urls ADD COLUMN extra TEXT;

-- The digest of the file a job was created from (`facesweep run`): a changed file under the
-- same job name is refused instead of silently keeping the old URLs.
ALTER TABLE jobs ADD COLUMN input_digest TEXT NOT NULL DEFAULT '';

-- The URL-id encoding in SQL, in one place (Rust: facesweep_common::url_id / ORDINAL_BITS;
-- a test checks both agree). Immutable, so calls with constant arguments fold to constants
-- and range conditions on ids still use the primary keys.
CREATE FUNCTION url_id(job_id BIGINT, ordinal BIGINT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (job_id << 40) | ordinal;
CREATE FUNCTION url_ordinal(id BIGINT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN id & ((1::bigint << 40) - 1);
-- One past the highest URL id a job can hold.
CREATE FUNCTION job_url_id_end(job_id BIGINT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (job_id + 1) << 40;

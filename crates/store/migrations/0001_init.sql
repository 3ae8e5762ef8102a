-- A job is one named list of URLs. URL ids are (job_id << 40) | ordinal, so a
-- chunk is a contiguous id range and re-importing the same ordinals is a no-op.
CREATE TABLE jobs (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    chunk_size  INT NOT NULL CHECK (chunk_size > 0),
    priority    INT NOT NULL DEFAULT 0,
    total_urls  BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE urls (
    id      BIGINT PRIMARY KEY,
    job_id  BIGINT NOT NULL REFERENCES jobs(id),
    url     TEXT NOT NULL
);

CREATE TYPE chunk_state AS ENUM ('pending', 'leased', 'done');

CREATE TABLE chunks (
    job_id       BIGINT NOT NULL REFERENCES jobs(id),
    chunk_no     BIGINT NOT NULL,
    state        chunk_state NOT NULL DEFAULT 'pending',
    lease_owner  TEXT,
    token        BIGINT,
    expires_at   TIMESTAMPTZ,
    attempts     INT NOT NULL DEFAULT 0,
    reissued     INT NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk_no)
);
-- Delegators scan only chunks that may need work.
CREATE INDEX chunks_open ON chunks (job_id, chunk_no) WHERE state <> 'done';

CREATE SEQUENCE lease_tokens;

CREATE TABLE url_results (
    url_id       BIGINT PRIMARY KEY REFERENCES urls(id),
    job_id       BIGINT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    http_status  INT NOT NULL DEFAULT 0,
    width        INT NOT NULL DEFAULT 0,
    height       INT NOT NULL DEFAULT 0,
    bytes        BIGINT NOT NULL DEFAULT 0,
    face_count   INT NOT NULL DEFAULT 0,
    model_id     TEXT NOT NULL DEFAULT '',
    download_ms  REAL NOT NULL DEFAULT 0,
    decode_ms    REAL NOT NULL DEFAULT 0,
    detect_ms    REAL NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX url_results_job_time ON url_results (job_id, created_at);

CREATE TABLE faces (
    url_id     BIGINT NOT NULL REFERENCES url_results(url_id),
    idx        INT NOT NULL,
    x1         REAL NOT NULL,
    y1         REAL NOT NULL,
    x2         REAL NOT NULL,
    y2         REAL NOT NULL,
    score      REAL NOT NULL,
    landmarks  REAL[] NOT NULL,
    PRIMARY KEY (url_id, idx)
);

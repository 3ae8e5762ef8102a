-- A true rate for short or young jobs: when leasing started, and when each minute's last
-- result landed (a rate over a fixed minute window understates a job that ran for seconds).
ALTER TABLE jobs ADD COLUMN started_at TIMESTAMPTZ;
ALTER TABLE job_minute_counts ADD COLUMN last_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- raw's work queue and cache bookkeeping.
--
-- A job is claimable when it is waiting (queued, or cached and awaiting its
-- hand-off to anon) or when its holder's lease ran out. While a job is held,
-- next_attempt_at equals lease_expires_at: its next attempt is when the lease
-- ends, so one index serves both "due" and "abandoned" jobs.
CREATE INDEX study_jobs_transfer_due ON study_jobs (next_attempt_at, id)
    WHERE state IN ('queued', 'querying', 'retrieving');
CREATE INDEX study_jobs_handoff_due ON study_jobs (next_attempt_at, id)
    WHERE state = 'cached';
-- The transfer semaphore counts live leases of jobs talking to the VNA.
CREATE INDEX study_jobs_in_flight ON study_jobs (lease_expires_at)
    WHERE state IN ('querying', 'retrieving');
CREATE INDEX study_jobs_by_extract_state ON study_jobs (extract_id, state);

-- What a raw Orthanc holds completely: the instance count the archive reported
-- for a study (series_uid = '') or for one series, when raw last fetched it.
-- A study whose raw copy has at least that many instances is served from the
-- cache without asking the archive.
CREATE TABLE raw_cached_studies (
    raw_node    text        NOT NULL,
    study_uid   text        NOT NULL,
    series_uid  text        NOT NULL DEFAULT '',
    instances   integer     NOT NULL CHECK (instances >= 0),
    cached_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (raw_node, study_uid, series_uid)
);

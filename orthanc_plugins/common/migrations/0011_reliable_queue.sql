-- Reliability of the work queue (issue: nothing lost, nothing doubled).
--
-- attempts now counts the failures that are the study's own fault in the job's
-- current stage (transfer, hand-off, de-identification, export): it starts
-- again at 0 when the job enters another stage. An outage (the archive, anon,
-- a destination or the database away) consumes no attempt: the job waits with
-- a capped backoff (retries counts those waits, for the backoff only) and
-- fails only after the outage has lasted longer than the give-up time,
-- counted from outage_since. crashes counts the times the job was taken back
-- from a process that died holding it: a study that takes its worker down
-- twice is set aside as failed instead of crashing the next one.
ALTER TABLE study_jobs
    ADD COLUMN retries      integer     NOT NULL DEFAULT 0,
    ADD COLUMN outage_since timestamptz,
    ADD COLUMN crashes      integer     NOT NULL DEFAULT 0;

-- Every raw and anon process: one row per process start, refreshed while it
-- runs. Lease owners are "<owner_prefix>/<thread>", so a job's holder can be
-- told alive (its process is seen) from dead (it is not).
CREATE TABLE pixl_processes (
    owner_prefix text        PRIMARY KEY,
    service      text        NOT NULL CHECK (service IN ('raw', 'anon')),
    node         text        NOT NULL,  -- base URL of its Orthanc
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- raw's cache is held for anon: the bytes of the study in raw (estimated from
-- the archive's instance count while it is transferred, measured once cached),
-- raw's Orthanc ID of its patient, and whether raw protects that patient from
-- Orthanc's recycling (until anon has de-identified the study).
ALTER TABLE study_jobs
    ADD COLUMN raw_bytes      bigint,
    ADD COLUMN raw_instances  integer,
    ADD COLUMN raw_patient_id text,
    ADD COLUMN raw_protected  boolean NOT NULL DEFAULT false;
CREATE INDEX study_jobs_held_by_raw ON study_jobs (raw_node)
    WHERE state IN ('querying', 'retrieving', 'cached', 'anonymising');
CREATE INDEX study_jobs_raw_protected ON study_jobs (raw_node) WHERE raw_protected;

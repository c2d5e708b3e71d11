-- What anon did with the instances of each job: how many it kept, and how many
-- it dropped or quarantined for each reason (reasons name rules and tags, never
-- values). Rewritten whole each time a job is de-identified again.
CREATE TABLE anon_outcomes (
    job_id     bigint  NOT NULL REFERENCES study_jobs (id),
    outcome    text    NOT NULL CHECK (outcome IN ('kept', 'dropped', 'quarantined')),
    reason     text    NOT NULL DEFAULT '',
    instances  integer NOT NULL CHECK (instances > 0),
    PRIMARY KEY (job_id, outcome, reason)
);

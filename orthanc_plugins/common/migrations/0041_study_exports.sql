-- anon's side of a reliable export.
--
-- anon_node: which anon server de-identified the job and holds its staged zip
-- (the study as it will leave, on that server's disk) and its copy for the web UI.
ALTER TABLE study_jobs ADD COLUMN anon_node text;
CREATE INDEX study_jobs_export_due ON study_jobs (next_attempt_at, id) WHERE state = 'exporting';
CREATE INDEX study_jobs_anonymise_due ON study_jobs (next_attempt_at, id) WHERE state = 'anonymising';

-- One export per (project, de-identified study, requested series), however many
-- extracts of the project name the study: the first job to export it holds the
-- row; the others wait for it and end 'exported' by its confirmation.
CREATE TABLE study_exports (
    project_slug     text        NOT NULL,
    pseudo_study_uid text        NOT NULL,
    series_key       text        NOT NULL DEFAULT '',  -- the job's requested series, sorted, or ''
    job_id           bigint      NOT NULL REFERENCES study_jobs (id),
    state            text        NOT NULL CHECK (state IN ('exporting', 'exported')),
    destination      text,
    location         text,
    instances        integer,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project_slug, pseudo_study_uid, series_key)
);

-- anon's copies kept for inspection in its web UI, deleted after a retention period.
CREATE TABLE anon_copies (
    anon_node        text        NOT NULL,
    anon_study_id    text        NOT NULL,  -- Orthanc ID in that anon
    job_id           bigint      NOT NULL REFERENCES study_jobs (id),
    exported_at      timestamptz,
    PRIMARY KEY (anon_node, anon_study_id, job_id)
);

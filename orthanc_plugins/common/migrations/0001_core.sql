-- PIXL core schema. Later migrations extend it; never edit a released one.
-- Number ranges by area, so that work in parallel never collides:
--   0001-0009 core, 0010-0019 raw (queue, throttling), 0020-0029 de-identification,
--   0030-0039 destinations and parquet export, 0040-0049 the anon pipeline.

CREATE TABLE extracts (
    id              bigserial PRIMARY KEY,
    project_slug    text        NOT NULL,
    extract_name    text        NOT NULL,  -- e.g. "2023-12-07t14-08-58", unique per project
    generated_at    timestamptz NOT NULL,
    source_kind     text        NOT NULL CHECK (source_kind IN ('omop', 'csv')),
    public_dir      text,                  -- kept public parquet files, for the parquet export
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_slug, extract_name)
);

-- One row per (project, extract, requested study). Identifying columns (mrn,
-- accession_number, study_uid) live only here, never in logs or errors.
CREATE TABLE study_jobs (
    id                      bigserial PRIMARY KEY,
    extract_id              bigint      NOT NULL REFERENCES extracts (id),
    project_slug            text        NOT NULL,
    mrn                     text        NOT NULL,
    accession_number        text        NOT NULL DEFAULT '',
    study_uid               text        NOT NULL DEFAULT '',
    series_uids             text[]      NOT NULL DEFAULT '{}',
    study_date              date,
    procedure_occurrence_id bigint,
    state                   text        NOT NULL DEFAULT 'queued' CHECK (state IN (
        'queued', 'querying', 'retrieving', 'cached', 'anonymising', 'exporting',
        'exported', 'not_found', 'failed', 'skipped')),
    attempts                integer     NOT NULL DEFAULT 0,
    next_attempt_at         timestamptz NOT NULL DEFAULT now(),
    lease_owner             text,
    lease_expires_at        timestamptz,
    last_error              text,       -- never an identifying value
    raw_node                text,       -- base URL of the raw Orthanc that holds the study
    raw_study_id            text,       -- Orthanc ID of the study in that raw
    pseudo_patient_id       text,
    pseudo_study_uid        text,
    state_times             jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- state -> when entered
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (extract_id, mrn, accession_number, study_uid, series_uids)
);
CREATE INDEX study_jobs_claimable ON study_jobs (state, next_attempt_at);
CREATE INDEX study_jobs_by_study ON study_jobs (project_slug, study_uid, accession_number, mrn);

-- One row: the throttle shared by every raw instance on this database.
CREATE TABLE transfer_controls (
    id                  boolean          PRIMARY KEY DEFAULT true CHECK (id),
    max_in_flight       integer          NOT NULL CHECK (max_in_flight >= 0),
    studies_per_second  double precision NOT NULL CHECK (studies_per_second > 0),
    paused              boolean          NOT NULL DEFAULT false,
    tokens              double precision NOT NULL DEFAULT 1,
    tokens_updated_at   timestamptz      NOT NULL DEFAULT clock_timestamp()
);

-- id_old -> id_new per project, for audit and validation. Access-controlled
-- storage: these pairs are never logged.
CREATE TABLE deid_id_map (
    project_slug text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN (
        'patient_id', 'study_uid', 'series_uid', 'sop_instance_uid')),
    id_old       text        NOT NULL,
    id_new       text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_slug, kind, id_old)
);

CREATE TABLE parquet_exports (
    id           bigserial   PRIMARY KEY,
    extract_id   bigint      NOT NULL REFERENCES extracts (id),
    state        text        NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    export_dir   text,
    destination  text,
    uploaded_to  text,
    error        text
);

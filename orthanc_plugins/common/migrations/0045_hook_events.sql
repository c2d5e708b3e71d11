-- Lifecycle hooks (pixl_study_exported, pixl_extract_finished; orthanc_plugins/anon/lifecycle.py).

-- When every study of the extract had ended and pixl_extract_finished was claimed: set once,
-- by a conditional UPDATE, so that with several anon servers exactly one calls the hook.
ALTER TABLE extracts ADD COLUMN finished_at timestamptz;

-- When pixl_study_exported was claimed for the job: set once, by a conditional UPDATE,
-- so that each exported study is announced once whichever anon server exported it.
ALTER TABLE study_jobs ADD COLUMN exported_notified_at timestamptz;

-- One row per plugin per lifecycle hook call, with its error if it raised; shown to
-- operators (GET /pixl/plugins, pixl-tui plugins). Errors never hold identifying values:
-- hooks see pseudonyms only.
CREATE TABLE hook_events (
    id           bigserial   PRIMARY KEY,
    hook         text        NOT NULL CHECK (hook IN ('pixl_study_exported', 'pixl_extract_finished')),
    plugin       text        NOT NULL,
    project_slug text        NOT NULL,
    extract_id   bigint      NOT NULL REFERENCES extracts (id) ON DELETE CASCADE,
    job_id       bigint      REFERENCES study_jobs (id) ON DELETE CASCADE,
    outcome      text        NOT NULL CHECK (outcome IN ('ok', 'error')),
    error        text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hook_events_errors ON hook_events (recorded_at) WHERE outcome = 'error';

-- What had ended before this migration is announced already: the hooks are for studies
-- and extracts that end from now on, not a flood of old ones.
UPDATE study_jobs SET exported_notified_at = now() WHERE state = 'exported';
UPDATE extracts e SET finished_at = now()
WHERE NOT EXISTS (SELECT 1 FROM study_jobs j WHERE j.extract_id = e.id
                  AND j.state NOT IN ('exported', 'not_found', 'failed', 'skipped'));

-- What an operator decides per extract: its priority (5 is claimed first),
-- whether it is a practice run (de-identified, never exported), and whether it
-- was cancelled. last_served_at is when a study of the extract last started a
-- VNA transfer: among equal priorities the extract served longest ago goes next.
ALTER TABLE extracts
    ADD COLUMN priority       integer     NOT NULL DEFAULT 1 CHECK (priority BETWEEN 1 AND 5),
    ADD COLUMN practice       boolean     NOT NULL DEFAULT false,
    ADD COLUMN cancelled_at   timestamptz,
    ADD COLUMN last_served_at timestamptz;

-- The due jobs of one extract, in claim order, for each group of states claimed together.
CREATE INDEX study_jobs_transfer_due_by_extract ON study_jobs (extract_id, next_attempt_at, id)
    WHERE state IN ('queued', 'querying', 'retrieving');
CREATE INDEX study_jobs_handoff_due_by_extract ON study_jobs (extract_id, next_attempt_at, id)
    WHERE state = 'cached';
CREATE INDEX study_jobs_anon_due_by_extract ON study_jobs (extract_id, next_attempt_at, id)
    WHERE state IN ('anonymising', 'exporting');

-- The id of the next due job in one of `wanted` states, locked (SKIP LOCKED),
-- taken from the highest-priority extract that has one, and among equal
-- priorities from the extract served longest ago. With `serve` the chosen
-- extract is marked served. `extra` is an optional SQL condition over the job
-- `j` (values already quoted, e.g. by psycopg's ClientCursor.mogrify). The state
-- list is spliced in as literals so that the partial indexes above serve both
-- loops; which extracts have due jobs is asked as of now() (stable, so an index
-- bound; clock_timestamp() is not): a job due since the transaction began waits
-- for the next claim.
CREATE FUNCTION pixl_next_job(wanted text[], serve boolean, extra text DEFAULT '') RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    state_list text := (SELECT string_agg(quote_literal(s), ', ') FROM unnest(wanted) s);
    condition text := CASE WHEN coalesce(extra, '') = '' THEN '' ELSE ' AND (' || extra || ')' END;
    candidate_extract bigint;
    job bigint;
BEGIN
    FOR candidate_extract IN EXECUTE format(
        'SELECT e.id FROM extracts e WHERE EXISTS (SELECT 1 FROM study_jobs j'
        ' WHERE j.extract_id = e.id AND j.state IN (%s) AND j.next_attempt_at <= now()%s)'
        ' ORDER BY e.priority DESC, e.last_served_at NULLS FIRST, e.id', state_list, condition)
    LOOP
        EXECUTE format(
            'SELECT j.id FROM study_jobs j WHERE j.extract_id = $1 AND j.state IN (%s)'
            ' AND j.next_attempt_at <= clock_timestamp()%s'
            ' ORDER BY j.next_attempt_at, j.id LIMIT 1 FOR UPDATE SKIP LOCKED', state_list, condition)
            INTO job USING candidate_extract;
        IF job IS NOT NULL THEN
            IF serve THEN
                UPDATE extracts SET last_served_at = clock_timestamp() WHERE id = candidate_extract;
            END IF;
            RETURN job;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- A cancelled extract's studies never (re-)enter the queue: a job of it that
-- would become 'queued' (loaded again, retried, or back after a failed
-- attempt) is withdrawn instead. Jobs already past the queue finish.
CREATE FUNCTION pixl_withdraw_if_cancelled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM extracts WHERE id = NEW.extract_id AND cancelled_at IS NOT NULL) THEN
        NEW.state := 'skipped';
        NEW.last_error := 'cancelled by the operator before retrieval';
        NEW.lease_owner := NULL;
        NEW.lease_expires_at := NULL;
        NEW.state_times := NEW.state_times || jsonb_build_object('skipped', clock_timestamp());
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER study_jobs_withdraw_if_cancelled
    BEFORE INSERT OR UPDATE OF state ON study_jobs
    FOR EACH ROW WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION pixl_withdraw_if_cancelled();

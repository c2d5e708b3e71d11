-- The access audit (orthanc_plugins/common/access.py, SECURITY.md): every request
-- to raw that reads or sends identifiable data, every change made through raw's
-- PIXL API, and every refused request. Who, when, what: internal resource IDs
-- (Orthanc's study/series/instance IDs, PIXL job IDs), never an identifier.
CREATE TABLE access_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    node text NOT NULL,          -- raw (or a named raw instance)
    username text NOT NULL,      -- '' when no valid credentials were given
    role text NOT NULL,
    action text NOT NULL,        -- 'GET /studies/{id}/archive', 'PUT /pixl/controls'
    resource text NOT NULL,      -- the IDs of the path
    allowed boolean NOT NULL
);
CREATE INDEX access_audit_at ON access_audit (at);
CREATE INDEX access_audit_user_at ON access_audit (username, at);

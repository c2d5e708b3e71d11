-- One parquet export per project at a time, held by a lease row on the database's clock
-- rather than a session advisory lock: a lease outlives a restart of PostgreSQL (and the
-- connections it drops), and a holder that died stops holding when its lease runs out.
CREATE TABLE parquet_export_leases (
    project_slug text        PRIMARY KEY,
    holder       text        NOT NULL,
    expires_at   timestamptz NOT NULL
);

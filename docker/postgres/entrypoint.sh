#!/bin/sh
# Make the cluster on first start (empty PGDATA), then run PostgreSQL in the
# foreground as PID 1 (SIGINT, the STOPSIGNAL, is PostgreSQL's fast shutdown).
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ "$(id -u)" = 0 ]; then
    # A new named volume is root's: hand it to postgres, then drop root.
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$password_file" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8
    rm -f "$password_file"
    {
        echo "listen_addresses = '*'"
        echo "password_encryption = 'scram-sha-256'"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        PGPASSWORD="$POSTGRES_PASSWORD" postgres --single -D "$PGDATA" postgres \
            <<SQL >/dev/null
CREATE DATABASE "$POSTGRES_DB";
SQL
    fi
fi
exec postgres -D "$PGDATA" "$@"

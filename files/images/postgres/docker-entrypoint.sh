#!/usr/bin/env bash
# Entrypoint of techno-os/postgres: prepare PGDATA, initialise the cluster on first start,
# then exec the server as the postgres user (PID 1, so docker stop reaches it).
#
# First start only (no PG_VERSION in PGDATA):
#   DB_USER      superuser created by initdb, owner of DB_NAME (default techno_user)
#   DB_PASSWORD  its password, stored as scram-sha-256 (or DB_PASSWORD_FILE: a file holding it)
#   DB_NAME      database created for the app (default techno_os)
# A restored data directory (pg_basebackup tar with backup_label) is started as is: the server
# replays the WAL shipped in the archive and comes up consistent.
set -euo pipefail

readonly PG_USER=postgres
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
SOCKET_DIR=/var/run/postgresql
TMP_SOCKET_DIR=""

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# Run a command as postgres when we are root, as ourselves otherwise.
as_postgres() {
    if is_root; then
        setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- "$@"
    else
        "$@"
    fi
}

cleanup() {
    if [[ -n "$TMP_SOCKET_DIR" ]]; then
        rm -rf "$TMP_SOCKET_DIR"
    fi
}

# PGDATA and the socket directory exist, belong to postgres (restores can bring other numeric
# uids) and PGDATA is 0700, as the server requires.
prepare_dirs() {
    mkdir -p "$PGDATA" "$SOCKET_DIR"
    if is_root; then
        find "$PGDATA" \( \! -user "$PG_USER" -o \! -group "$PG_USER" \) \
            -exec chown -h "$PG_USER:$PG_USER" {} +
        chown "$PG_USER:$PG_USER" "$SOCKET_DIR"
        chmod 2775 "$SOCKET_DIR"
    fi
    chmod 0700 "$PGDATA"
}

read_password() {
    if [[ -n "${DB_PASSWORD_FILE:-}" ]]; then
        [[ -r "$DB_PASSWORD_FILE" ]] || die "DB_PASSWORD_FILE is set but not readable"
        DB_PASSWORD="$(<"$DB_PASSWORD_FILE")"
    fi
    if [[ -z "${DB_PASSWORD:-}" ]]; then
        die "DB_PASSWORD is not set: it is required to initialise an empty data directory" \
            "($PGDATA). Set DB_PASSWORD (or DB_PASSWORD_FILE) in the container's environment."
    fi
}

# SQL literal / identifier quoting, done in the shell so the password never appears in argv.
sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }
sql_ident() { printf '"%s"' "${1//\"/\"\"}"; }

write_config() {
    cat >"$PGDATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE     USER  ADDRESS  METHOD
# Inside the container (docker exec): psql, pg_isready, and pg_basebackup for the backups.
local   all          all            trust
local   replication  all            trust
# The API over the compose network.
host    all          all   all      scram-sha-256
EOF
    cat >>"$PGDATA/postgresql.conf" <<'EOF'

# --- techno-os ---
listen_addresses = '*'
password_encryption = 'scram-sha-256'
# Backups run pg_basebackup -X fetch: the WAL written during the backup must still be there
# when it is collected at the end.
wal_keep_size = '256MB'
EOF
}

init_cluster() {
    local user="${DB_USER:-techno_user}" db="${DB_NAME:-techno_os}" pwfile

    read_password
    if [[ -n "$(ls -A "$PGDATA")" ]]; then
        die "$PGDATA is not empty but holds no PostgreSQL cluster (no PG_VERSION); refusing to" \
            "initialise over it. Empty the volume or restore a complete backup into it."
    fi

    log "initialising a new cluster in $PGDATA (superuser $user, database $db)"
    pwfile="$(mktemp)"
    printf '%s\n' "$DB_PASSWORD" >"$pwfile"
    if is_root; then chown "$PG_USER" "$pwfile"; fi
    # Page checksums: pgBackRest checks every page it copies, so a backup finds a corrupted
    # page the night it appears, not at the restore.
    if ! as_postgres initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        --data-checksums >/dev/null; then
        rm -f "$pwfile"
        die "initdb failed"
    fi
    rm -f "$pwfile"
    write_config

    # A private socket and no TCP: nothing (the healthcheck included) sees this server.
    TMP_SOCKET_DIR="$(mktemp -d)"
    if is_root; then chown "$PG_USER" "$TMP_SOCKET_DIR"; fi
    as_postgres pg_ctl --pgdata="$PGDATA" --wait --silent \
        -o "-c listen_addresses='' -c unix_socket_directories='$TMP_SOCKET_DIR'" start
    if [[ "$db" != postgres ]]; then
        printf 'CREATE DATABASE %s OWNER %s;\n' "$(sql_ident "$db")" "$(sql_ident "$user")" |
            as_postgres psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 \
                --host="$TMP_SOCKET_DIR" --username="$user" --dbname=postgres
    fi
    as_postgres pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
    cleanup
    TMP_SOCKET_DIR=""
    log "cluster initialised"
}

# A base backup untarred by hand (the runbook's restore of a nightly archive) would otherwise
# start on the timeline it was taken on and write WAL under names the offsite archive already
# holds from the old history: pgBackRest refuses those, and archiving would stop for good. When
# the container has pgBackRest's restore config, the backup is recovered instead to its
# consistent point with the archive in view, then promoted: a new timeline, archived normally.
new_timeline_after_restore() {
    local conf=/etc/pgbackrest/restore.conf stanza
    [[ -f "$conf" && ! -f "$PGDATA/recovery.signal" && ! -f "$PGDATA/standby.signal" ]] ||
        return 0
    stanza="$(sed -n 's/^\[\([^]:]*\)\]$/\1/p' "$conf" | grep -vx global | head -n 1 || true)"
    [[ -n "$stanza" ]] || return 0
    log "restored base backup: recovering to its consistent point, then a new timeline"
    # An earlier point-in-time restore left its target and restore_command in
    # postgresql.auto.conf, which pg_basebackup copies into every later archive: PostgreSQL
    # refuses to start with two targets ("multiple recovery targets specified").
    if [[ -f "$PGDATA/postgresql.auto.conf" ]]; then
        sed -i -E '/^[[:space:]]*(recovery_target[a-z_]*|restore_command)[[:space:]]*=/d' \
            "$PGDATA/postgresql.auto.conf"
    fi
    cat >>"$PGDATA/postgresql.auto.conf" <<EOF
# techno-os entrypoint: a restored base backup ends on a new timeline.
restore_command = 'pgbackrest --config=$conf --stanza=$stanza archive-get %f "%p"'
recovery_target = 'immediate'
recovery_target_action = 'promote'
EOF
    : >"$PGDATA/recovery.signal"
    if is_root; then
        chown "$PG_USER:$PG_USER" "$PGDATA/postgresql.auto.conf" "$PGDATA/recovery.signal"
    fi
}

main() {
    # `docker run image -c foo=bar` passes options to postgres.
    if [[ "${1:-}" == -* ]]; then
        set -- postgres "$@"
    fi
    if [[ "${1:-}" != postgres ]]; then
        exec "$@"
    fi

    trap cleanup EXIT
    prepare_dirs
    if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
        init_cluster
    elif [[ -f "$PGDATA/backup_label" ]]; then
        log "backup_label found: starting from a base backup, WAL replay follows"
        new_timeline_after_restore
    fi
    unset DB_PASSWORD DB_PASSWORD_FILE
    trap - EXIT

    log "starting PostgreSQL $(cat "$PGDATA/PG_VERSION")"
    if is_root; then
        exec setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- "$@"
    fi
    exec "$@"
}

main "$@"

#!/usr/bin/env bash
# Techno OS: backup of the PostgreSQL database (runbook "BACKUP E RESTORE").
#
#   /opt/techno-os/scripts/backup_observability.sh
#   BACKUP_DIR=/mnt/backups /opt/techno-os/scripts/backup_observability.sh
#   cron: 0 2 * * * /opt/techno-os/scripts/backup_observability.sh >> /var/log/backup_obs.log 2>&1
#
# Writes BACKUP_DIR/postgres_<YYYYmmdd_HHMMSS>.tar.gz: a pg_basebackup tar stream (data files,
# backup_label and the WAL needed to make them consistent), taken over the container's local
# socket while the database keeps serving writes. Untarred into an empty data volume, the server
# replays that WAL on start and comes up consistent: the runbook's restore procedure.
# postgres_latest.tar.gz is a relative symlink to the newest good archive.
#
# Environment (defaults):
#   BACKUP_DIR      /opt/techno-os/backups/observability (created 0700)
#   DB_CONTAINER    techno-os-db
#   DB_USER         techno_user
#   RETENTION_DAYS  7 (archives older than this, to the minute, are deleted after a good backup)
#   TEXTFILE_DIR    /var/lib/prometheus/node-exporter (techno_os_backup.prom; skipped if absent)
#   LOCK_FILE       $BACKUP_DIR/.backup_observability.lock
#   STANDARD_BACKUP_DIR  /opt/techno-os/backups/observability (the cron's directory)
#
# Metrics: techno_os_backup_last_success_timestamp_seconds and the other techno_os_backup_*
# series describe the standard directory only (the nightly checks and alerts judge them); a run
# into another directory (BACKUP_DIR=/mnt/backups) leaves them as they were and records where
# the newest good backup went in techno_os_backup_last_good_timestamp_seconds{directory,standard}.
#
# Exit status: 0 success, 1 backup failed (nothing deleted), 75 another run holds the lock.
set -euo pipefail

PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

# Site settings written by the deploy from group data; a variable the caller sets wins.
if [[ -r "${TECHNO_OS_SETTINGS:=/etc/default/techno-os}" ]]; then
    while IFS='=' read -r key value; do
        if [[ "$key" =~ ^[A-Z][A-Z0-9_]*$ && -z "${!key+x}" ]]; then export "$key=$value"; fi
    done <"$TECHNO_OS_SETTINGS"
fi

readonly BACKUP_DIR="${BACKUP_DIR:-/opt/techno-os/backups/observability}"
readonly DB_CONTAINER="${DB_CONTAINER:-techno-os-db}"
readonly DB_USER="${DB_USER:-techno_user}"
readonly RETENTION_DAYS="${RETENTION_DAYS:-7}"
readonly TEXTFILE_DIR="${TEXTFILE_DIR:-/var/lib/prometheus/node-exporter}"
readonly LOCK_FILE="${LOCK_FILE:-$BACKUP_DIR/.backup_observability.lock}"
readonly STANDARD_BACKUP_DIR="${STANDARD_BACKUP_DIR:-/opt/techno-os/backups/observability}"
readonly METRICS_FILE="techno_os_backup.prom"
readonly LATEST="postgres_latest.tar.gz"
readonly EX_LOCKED=75

TIMESTAMP=""
START_TIME=""
STEP="início"
TMP_ARCHIVE=""
TMP_LINK=""
ARCHIVE_SIZE=""
DONE=0
STANDARD=1

# Print a line on stdout and, when it is a different file (not `>> log 2>&1`), on stderr too.
say_both() {
    printf '%s\n' "$*"
    if [[ "$(stat -L -c '%d:%i' "/proc/$$/fd/1" 2>/dev/null)" != \
        "$(stat -L -c '%d:%i' "/proc/$$/fd/2" 2>/dev/null)" ]]; then
        printf '%s\n' "$*" >&2
    fi
}

fail() {
    STEP="$*"
    exit 1
}

# The cron's directory, or another one (a manual copy): only the former moves the metrics
# that the checks and alerts judge.
classify_directory() {
    if [[ "$(realpath -m -- "$BACKUP_DIR")" != "$(realpath -m -- "$STANDARD_BACKUP_DIR")" ]]; then
        STANDARD=0
        echo "ℹ️ Diretório não padrão ($BACKUP_DIR): as métricas e os alertas do backup diário" \
            "continuam julgando $STANDARD_BACKUP_DIR"
    fi
}

check_settings() {
    [[ "$RETENTION_DAYS" =~ ^[1-9][0-9]*$ ]] ||
        fail "RETENTION_DAYS inválido: '$RETENTION_DAYS' (inteiro >= 1)"
    command -v docker >/dev/null 2>&1 || fail "comando docker não encontrado"
}

prepare_backup_dir() {
    { mkdir -p "$BACKUP_DIR" && chmod 0700 "$BACKUP_DIR"; } ||
        fail "não foi possível preparar $BACKUP_DIR (sem permissão de escrita?)"
}

# Hold an exclusive lock on fd 9 for the rest of the run; a second run exits at once.
acquire_lock() {
    exec 9>>"$LOCK_FILE" ||
        fail "não foi possível abrir o lock $LOCK_FILE (sem permissão de escrita?)"
    if ! flock -n 9; then
        say_both "❌ Outro backup já está em andamento (lock: $LOCK_FILE); nada foi feito"
        DONE=1
        exit "$EX_LOCKED"
    fi
}

check_container() {
    local running
    running="$(docker inspect -f '{{.State.Running}}' "$DB_CONTAINER" 2>/dev/null || true)"
    [[ "$running" == true ]] || fail "container $DB_CONTAINER não está rodando"
}

# The archive must be a complete gzip, a readable tar, and hold backup_label and WAL.
verify_archive() {
    local archive="$1" listing
    listing="$(gzip -dc -- "$archive" | tar -tf -)" ||
        fail "arquivo corrompido (gzip/tar): $archive"
    grep -Eq '^(\./)?backup_label$' <<<"$listing" ||
        fail "backup_label ausente em $archive"
    grep -Eq '^(\./)?pg_wal/[0-9A-F]{24}$' <<<"$listing" ||
        fail "nenhum segmento WAL em $archive"
}

backup_postgres() {
    local name="postgres_${TIMESTAMP}.tar.gz"

    echo "📦 Backup PostgreSQL..."
    STEP="verificar container $DB_CONTAINER"
    check_container

    STEP="pg_basebackup em $DB_CONTAINER"
    TMP_ARCHIVE="$BACKUP_DIR/.${name}.partial"
    docker exec "$DB_CONTAINER" pg_basebackup --username="$DB_USER" --pgdata=- \
        --format=tar --wal-method=fetch --checkpoint=fast --label="techno-os $TIMESTAMP" |
        gzip >"$TMP_ARCHIVE" || {
        local status=("${PIPESTATUS[@]}")
        if ((status[1] != 0)); then
            fail "gravação em $BACKUP_DIR falhou (disco cheio ou sem permissão?)"
        fi
        fail "pg_basebackup em $DB_CONTAINER falhou (exit ${status[0]})"
    }

    STEP="verificar $name"
    verify_archive "$TMP_ARCHIVE"
    sync -- "$TMP_ARCHIVE"

    STEP="publicar $name"
    mv -f -- "$TMP_ARCHIVE" "$BACKUP_DIR/$name"
    TMP_ARCHIVE=""
    ARCHIVE_SIZE="$(stat -c '%s' "$BACKUP_DIR/$name")"

    # Relative symlink, replaced atomically: valid on the host and under the restore's /backup.
    TMP_LINK="$BACKUP_DIR/.${LATEST}.new"
    ln -sfn -- "$name" "$TMP_LINK"
    mv -fT -- "$TMP_LINK" "$BACKUP_DIR/$LATEST"
    TMP_LINK=""
    sync -- "$BACKUP_DIR"

    echo "✅ PostgreSQL backup: $name"
}

# Delete archives older than RETENTION_DAYS, counted in minutes (find -mtime +7 would keep 8
# days). Never the archive just written nor the one postgres_latest.tar.gz points at.
apply_retention() {
    local newest="$1" keep_latest file
    echo "🗑️ Aplicando retenção (${RETENTION_DAYS} dias)..."
    STEP="retenção"
    keep_latest="$(readlink -- "$BACKUP_DIR/$LATEST" || true)"
    while IFS= read -r -d '' file; do
        file="${file##*/}"
        [[ "$file" == "$newest" || "$file" == "$keep_latest" || "$file" == "$LATEST" ]] && continue
        rm -f -- "${BACKUP_DIR:?}/$file"
        echo "   removido: $file"
    done < <(find "$BACKUP_DIR" -maxdepth 1 -type f -name 'postgres_*.tar.gz' \
        -mmin "+$((RETENTION_DAYS * 24 * 60))" -print0)
}

# One metric from the current textfile, to carry it across a failed run.
previous_metric() {
    local file="$TEXTFILE_DIR/$METRICS_FILE"
    [[ -r "$file" ]] || return 0
    awk -v m="$1" '$1 == m && $2 ~ /^[0-9.eE+-]+$/ { v = $2 } END { if (v != "") print v }' \
        "$file"
}

metric() {
    local name="$1" help="$2" value="$3"
    [[ -n "$value" ]] || return 0
    printf '# HELP %s %s\n# TYPE %s gauge\n%s %s\n' "$name" "$help" "$name" "$name" "$value"
}

# The newest good backup's line, wherever it went (this run's when it succeeded).
last_good_line() {
    local success="$1" now="$2" directory file="$TEXTFILE_DIR/$METRICS_FILE"
    local name=techno_os_backup_last_good_timestamp_seconds
    if [[ "$success" == 1 ]]; then
        directory="$(realpath -m -- "$BACKUP_DIR")"
        directory="${directory//\\/\\\\}"
        directory="${directory//\"/\\\"}"
        printf '%s{directory="%s",standard="%s"} %s\n' "$name" "$directory" \
            "$([[ "$STANDARD" == 1 ]] && echo true || echo false)" "$now"
    elif [[ -r "$file" ]]; then
        grep -E "^$name\{" "$file" | tail -n 1 || true
    fi
}

# node-exporter textfile collector: written to a temporary name, then renamed (atomic).
write_metrics() {
    local success="$1" now duration last_success size tmp run_at run_success good
    if [[ ! -d "$TEXTFILE_DIR" ]]; then
        echo "ℹ️ $TEXTFILE_DIR não existe: métricas do backup não foram escritas"
        return 0
    fi
    now="$(date +%s)"
    duration="$(awk -v s="$START_TIME" -v e="${EPOCHREALTIME/,/.}" \
        'BEGIN { printf "%.3f", e - s }')"
    run_at="$now"
    run_success="$success"
    if [[ "$STANDARD" == 1 && "$success" == 1 ]]; then
        last_success="$now"
        size="$ARCHIVE_SIZE"
    else
        last_success="$(previous_metric techno_os_backup_last_success_timestamp_seconds)"
        size="$(previous_metric techno_os_backup_size_bytes)"
    fi
    if [[ "$STANDARD" != 1 ]]; then
        # Another directory: the standard directory's run metrics stay as they were.
        run_at="$(previous_metric techno_os_backup_last_run_timestamp_seconds)"
        run_success="$(previous_metric techno_os_backup_last_run_success)"
        duration="$(previous_metric techno_os_backup_duration_seconds)"
    fi
    good="$(last_good_line "$success" "$now")"
    tmp="$TEXTFILE_DIR/.${METRICS_FILE}.$$"
    if ! {
        metric techno_os_backup_last_success_timestamp_seconds \
            "Unix time of the last successful PostgreSQL backup (standard directory)." \
            "$last_success"
        metric techno_os_backup_last_run_timestamp_seconds \
            "Unix time of the last backup run, successful or not (standard directory)." "$run_at"
        metric techno_os_backup_last_run_success \
            "1 if the last backup run succeeded, 0 if it failed (standard directory)." \
            "$run_success"
        metric techno_os_backup_duration_seconds \
            "Wall time of the last backup run in seconds (standard directory)." "$duration"
        metric techno_os_backup_size_bytes \
            "Size in bytes of the last successful backup archive (standard directory)." "$size"
        if [[ -n "$good" ]]; then
            printf '# HELP %s %s\n# TYPE %s gauge\n%s\n' \
                techno_os_backup_last_good_timestamp_seconds \
                "Unix time of the newest good backup, whichever directory it went to." \
                techno_os_backup_last_good_timestamp_seconds "$good"
        fi
    } >"$tmp" 2>/dev/null || ! chmod 0644 "$tmp" || ! mv -f -- "$tmp" "$TEXTFILE_DIR/$METRICS_FILE"
    then
        rm -f -- "$tmp"
        say_both "⚠️ Falha ao escrever métricas em $TEXTFILE_DIR/$METRICS_FILE"
    fi
}

on_exit() {
    local rc=$?
    trap - EXIT
    [[ -n "$TMP_ARCHIVE" ]] && rm -f -- "$TMP_ARCHIVE"
    [[ -n "$TMP_LINK" ]] && rm -f -- "$TMP_LINK"
    if ((DONE)); then
        exit "$rc"
    fi
    ((rc != 0)) || rc=1
    say_both "❌ Backup falhou: ${STEP}. Nenhum backup antigo foi removido (exit $rc)"
    write_metrics 0
    exit "$rc"
}

main() {
    umask 077
    START_TIME="${EPOCHREALTIME/,/.}"
    TIMESTAMP="$(date +%Y%m%d_%H%M%S)"
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    echo "✅ Iniciando backup: $TIMESTAMP"
    classify_directory
    check_settings
    prepare_backup_dir
    acquire_lock

    backup_postgres
    apply_retention "postgres_${TIMESTAMP}.tar.gz"

    DONE=1
    write_metrics 1
    echo "✅ Backup concluído: $TIMESTAMP"
}

main "$@"

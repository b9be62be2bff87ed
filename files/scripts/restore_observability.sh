#!/usr/bin/env bash
# Techno OS: restore the PostgreSQL database from a backup (runbook "Restore PostgreSQL").
#
# Usage: restore_observability.sh [--yes] [ARCHIVE]
#   ARCHIVE  a file name in BACKUP_DIR or a path (default: postgres_latest.tar.gz)
#   --yes    do not ask for confirmation (required when there is no terminal)
#
# The runbook's steps, in order: verify the archive (before anything is stopped), stop the stack
# (docker-compose down), remove and recreate the data volume, untar the archive into it with
# numeric ownership using an image already on the host, start the stack, wait until the
# database and the API are healthy, print the row count of user_preferences.
#
# Environment (defaults):
#   BACKUP_DIR      /opt/techno-os/backups/observability
#   BACKEND_DIR     /opt/techno-os/app/backend (compose project directory)
#   COMPOSE         docker-compose (command used inside BACKEND_DIR)
#   COMPOSE_PROJECT_NAME  techno-os-backend
#   VOLUME          ${COMPOSE_PROJECT_NAME}_postgres_data
#   DB_CONTAINER    techno-os-db
#   API_CONTAINER   techno-os-api          ("" = do not wait for the API)
#   HEALTH_URL      http://127.0.0.1:8000/health ("" = no HTTP check)
#   RESTORE_IMAGE   techno-os/debian:bookworm (must exist locally: nothing is pulled)
#   DB_USER / DB_NAME  techno_user / techno_os
#   COUNT_TABLES    user_preferences (space-separated tables whose rows are counted)
#   WAIT_TIMEOUT    300 (seconds to wait for health)
#   LOCK_FILE       $BACKUP_DIR/.backup_observability.lock (shared with the backup script)
set -euo pipefail

PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

# Site settings written by the deploy from group data; a variable the caller sets wins.
if [[ -r "${TECHNO_OS_SETTINGS:=/etc/default/techno-os}" ]]; then
    while IFS='=' read -r key value; do
        if [[ "$key" =~ ^[A-Z][A-Z0-9_]*$ && -z "${!key+x}" ]]; then export "$key=$value"; fi
    done <"$TECHNO_OS_SETTINGS"
fi

readonly BACKUP_DIR="${BACKUP_DIR:-/opt/techno-os/backups/observability}"
readonly BACKEND_DIR="${BACKEND_DIR:-/opt/techno-os/app/backend}"
readonly COMPOSE="${COMPOSE:-docker-compose}"
readonly PROJECT="${COMPOSE_PROJECT_NAME:-techno-os-backend}"
readonly VOLUME="${VOLUME:-${PROJECT}_postgres_data}"
readonly DB_CONTAINER="${DB_CONTAINER:-techno-os-db}"
readonly API_CONTAINER="${API_CONTAINER-techno-os-api}"
readonly HEALTH_URL="${HEALTH_URL-http://127.0.0.1:8000/health}"
readonly RESTORE_IMAGE="${RESTORE_IMAGE:-techno-os/debian:bookworm}"
readonly DB_USER="${DB_USER:-techno_user}"
readonly DB_NAME="${DB_NAME:-techno_os}"
readonly COUNT_TABLES="${COUNT_TABLES:-user_preferences}"
readonly WAIT_TIMEOUT="${WAIT_TIMEOUT:-300}"
readonly LOCK_FILE="${LOCK_FILE:-$BACKUP_DIR/.backup_observability.lock}"

ASSUME_YES=0
ARCHIVE="postgres_latest.tar.gz"
ARCHIVE_DIR=""
ARCHIVE_NAME=""
STEP="início"
STACK_STOPPED=0
CANCELLED=0

die() {
    STEP="$*"
    exit 1
}

# Print a line on stdout and, when it is a different file (not `>> log 2>&1`), on stderr too.
say_both() {
    printf '%s\n' "$*"
    if [[ "$(stat -L -c '%d:%i' "/proc/$$/fd/1" 2>/dev/null)" != \
        "$(stat -L -c '%d:%i' "/proc/$$/fd/2" 2>/dev/null)" ]]; then
        printf '%s\n' "$*" >&2
    fi
}

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0"
}

parse_args() {
    while (($#)); do
        case "$1" in
            -y | --yes) ASSUME_YES=1 ;;
            -h | --help)
                usage
                exit 0
                ;;
            -*) die "opção desconhecida: $1" ;;
            *) ARCHIVE="$1" ;;
        esac
        shift
    done
}

# The real file behind ARCHIVE (postgres_latest.tar.gz is a symlink): its directory is mounted
# read-only at /backup, so the name inside the container is always a plain file.
resolve_archive() {
    local path="$ARCHIVE" real
    [[ "$path" == */* ]] || path="$BACKUP_DIR/$path"
    [[ -e "$path" ]] || die "arquivo de backup não encontrado: $path"
    real="$(readlink -f -- "$path")"
    [[ -f "$real" ]] || die "não é um arquivo: $path"
    ARCHIVE_DIR="${real%/*}"
    ARCHIVE_NAME="${real##*/}"
    echo "📦 Backup escolhido: $path -> $real ($(du -h -- "$real" | cut -f1))"
}

verify_archive() {
    local listing
    STEP="verificar $ARCHIVE_NAME"
    listing="$(gzip -dc -- "$ARCHIVE_DIR/$ARCHIVE_NAME" | tar -tf -)" ||
        die "arquivo corrompido (gzip/tar): $ARCHIVE_NAME"
    grep -Eq '^(\./)?backup_label$' <<<"$listing" ||
        die "backup_label ausente em $ARCHIVE_NAME: não é um backup do backup_observability.sh"
    grep -Eq '^(\./)?PG_VERSION$' <<<"$listing" || die "PG_VERSION ausente em $ARCHIVE_NAME"
    echo "✅ Arquivo verificado (gzip íntegro, backup_label presente)"
}

check_prerequisites() {
    STEP="pré-requisitos"
    [[ "$WAIT_TIMEOUT" =~ ^[0-9]+$ ]] || die "WAIT_TIMEOUT inválido: $WAIT_TIMEOUT"
    docker image inspect "$RESTORE_IMAGE" >/dev/null 2>&1 ||
        die "imagem $RESTORE_IMAGE não existe neste host (defina RESTORE_IMAGE)"
    [[ -d "$BACKEND_DIR" ]] || die "diretório do compose não existe: $BACKEND_DIR"
    # shellcheck disable=SC2086 # COMPOSE may be "docker compose"
    (cd "$BACKEND_DIR" && $COMPOSE config --quiet) ||
        die "$COMPOSE config falhou em $BACKEND_DIR"
}

# No backup may run while the volume is replaced: take the backup script's lock.
acquire_lock() {
    STEP="lock $LOCK_FILE"
    if [[ -d "${LOCK_FILE%/*}" ]]; then
        exec 9>>"$LOCK_FILE"
        flock -n 9 || die "um backup está em andamento (lock: $LOCK_FILE); tente de novo"
    fi
}

confirm() {
    local answer
    ((ASSUME_YES)) && return 0
    [[ -t 0 ]] || die "sem terminal para confirmar: use --yes"
    echo "⚠️ O restore PARA a stack em $BACKEND_DIR e APAGA o volume $VOLUME,"
    echo "   substituindo o banco pelo conteúdo de $ARCHIVE_NAME."
    read -r -p "Digite 'sim' para continuar: " answer
    if [[ "$answer" != sim ]]; then
        echo "🚫 Restore cancelado: nada foi alterado"
        CANCELLED=1
        exit 1
    fi
}

stop_stack() {
    STEP="docker-compose down"
    echo "⏹️ Parando serviços..."
    STACK_STOPPED=1
    # shellcheck disable=SC2086
    (cd "$BACKEND_DIR" && $COMPOSE down)
}

replace_volume() {
    STEP="recriar volume $VOLUME"
    echo "🗑️ Removendo volume $VOLUME..."
    if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
        docker volume rm "$VOLUME" >/dev/null
    fi
    docker volume create "$VOLUME" >/dev/null
    echo "✅ Volume $VOLUME recriado vazio"
}

extract_archive() {
    STEP="extrair $ARCHIVE_NAME em $VOLUME"
    echo "📥 Restaurando $ARCHIVE_NAME..."
    docker run --rm --network none \
        -v "$VOLUME:/data" \
        -v "$ARCHIVE_DIR:/backup:ro" \
        "$RESTORE_IMAGE" \
        tar -C /data --numeric-owner -xzf "/backup/$ARCHIVE_NAME"
    echo "✅ Backup extraído"
}

start_stack() {
    STEP="docker-compose up -d"
    echo "▶️ Subindo serviços..."
    # shellcheck disable=SC2086
    (cd "$BACKEND_DIR" && $COMPOSE up -d)
    STACK_STOPPED=0
}

# healthy, or running for a container without a healthcheck.
container_ready() {
    local state
    state="$(docker inspect -f \
        '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
        "$1" 2>/dev/null || true)"
    [[ "$state" == healthy || "$state" == running ]]
}

everything_ready() {
    container_ready "$DB_CONTAINER" || return 1
    docker exec "$DB_CONTAINER" pg_isready -q -U "$DB_USER" -d "$DB_NAME" || return 1
    if [[ -n "$API_CONTAINER" ]]; then
        container_ready "$API_CONTAINER" || return 1
    fi
    if [[ -n "$HEALTH_URL" ]]; then
        curl -fsS --max-time 5 -o /dev/null "$HEALTH_URL" 2>/dev/null || return 1
    fi
}

wait_healthy() {
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    STEP="aguardar serviços saudáveis (${WAIT_TIMEOUT}s)"
    echo "⏳ Aguardando serviços saudáveis (até ${WAIT_TIMEOUT}s)..."
    until everything_ready; do
        ((SECONDS < deadline)) || die "serviços não ficaram saudáveis em ${WAIT_TIMEOUT}s" \
            "(veja: docker logs $DB_CONTAINER)"
        sleep 2
    done
    echo "✅ Serviços saudáveis"
    if [[ -n "$HEALTH_URL" ]]; then
        echo "   $HEALTH_URL: $(curl -fsS --max-time 5 "$HEALTH_URL")"
    fi
}

print_counts() {
    local table count
    STEP="validar dados"
    for table in $COUNT_TABLES; do
        if count="$(docker exec "$DB_CONTAINER" psql -X -At -U "$DB_USER" -d "$DB_NAME" \
            -c "SELECT COUNT(*) FROM \"$table\";" 2>/dev/null)"; then
            echo "📊 $table: $count linhas"
        else
            echo "⚠️ $table: tabela não encontrada em $DB_NAME"
        fi
    done
}

on_exit() {
    local rc=$?
    trap - EXIT
    ((rc == 0 || CANCELLED)) && exit "$rc"
    say_both "❌ Restore falhou: ${STEP} (exit $rc)"
    if ((STACK_STOPPED)); then
        say_both "   A stack está PARADA. Corrija e rode de novo," \
            "ou: cd $BACKEND_DIR && $COMPOSE up -d"
    fi
    exit "$rc"
}

main() {
    trap on_exit EXIT
    parse_args "$@"
    local started=$SECONDS

    resolve_archive
    verify_archive
    check_prerequisites
    acquire_lock
    confirm

    stop_stack
    replace_volume
    extract_archive
    start_stack
    wait_healthy
    print_counts
    echo "✅ Restore concluído em $((SECONDS - started))s: $ARCHIVE_NAME"
}

main "$@"

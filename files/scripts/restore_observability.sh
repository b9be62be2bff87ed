#!/usr/bin/env bash
# Techno OS: restore the PostgreSQL database (runbook "Restore PostgreSQL").
#
# Usage: restore_observability.sh [--yes] [ARCHIVE]
#        restore_observability.sh [--yes] --target-time 'YYYY-MM-DD HH:MM:SS'   (UTC)
#        restore_observability.sh [--yes] --latest
#   ARCHIVE        a nightly archive: a file name in BACKUP_DIR or a path (default latest)
#   --target-time  point in time: exactly the transactions committed up to that moment (UTC),
#                  from the offsite repository (base backup + archived WAL, pgBackRest)
#   --latest       everything the offsite repository holds (every archived WAL segment)
#   --yes          do not ask for confirmation (required when there is no terminal)
#
# In every mode: check what is asked before anything stops, stop the API of this host, then
# the stack (docker-compose down), keep a copy of the data volume, restore into the volume,
# start the stack, wait until the database and the API are healthy, drop the copy, print the
# row counts. A point-in-time or latest restore first recovers in a one-off container that only
# listens on its Unix socket (no TCP: nothing reaches a half-restored database), checks it got
# where it was asked, and only then starts the stack. Whatever fails after the stack stopped,
# the previous database is put back and the stack started again.
# (The one-off containers use the database image and the service's mounts, from the settings.)
#
# Environment (defaults; /etc/default/techno-os is read first):
#   BACKUP_DIR      /opt/techno-os/backups/observability
#   BACKEND_DIR     /opt/techno-os/app/backend (compose project directory)
#   COMPOSE         docker-compose (command used inside BACKEND_DIR)
#   COMPOSE_PROJECT_NAME  techno-os-backend
#   VOLUME          ${COMPOSE_PROJECT_NAME}_postgres_data
#   DB_CONTAINER    techno-os-db
#   API_CONTAINER   techno-os-api  ("" = the API runs on other hosts: tools/restore.py stops it)
#   API_LABEL       techno-os.slot (label of this host's API containers, stopped and restarted)
#   HEALTH_URL      http://127.0.0.1:8000/health ("" = no HTTP check)
#   READY_URL       HEALTH_URL's /ready (the API reaches the database; "" = no check)
#   RESTORE_IMAGE   techno-os/debian:bookworm (must exist locally: nothing is pulled)
#   DB_USER / DB_NAME  techno_user / techno_os
#   COUNT_TABLES    user_preferences (space-separated tables whose rows are counted)
#   WAIT_TIMEOUT    300 (seconds to wait for health)
#   LOCK_FILE       $BACKUP_DIR/.backup_observability.lock (shared with the backup script)
#   RELEASE_LOCK    "" (the API release tool's lock: no release starts during a restore)
#   PGBACKREST_STANZA          techno-os
#   PGBACKREST_CONF_DIR        /etc/techno-os/pgbackrest/conf (mounted at /etc/pgbackrest)
#   PGBACKREST_RESTORE_CONFIG  /etc/pgbackrest/restore.conf (inside the database image)
#   PGBACKREST_SPOOL_VOLUME    ${COMPOSE_PROJECT_NAME}_pgbackrest_spool
#   DB_CONFIG_DIR              "" (PostgreSQL's config dir on the host, mounted read-only at
#   DB_CONF_IN_CONTAINER       /etc/techno-os/postgres; "" = the config inside the data volume)
#   RECOVERY_TIMEOUT           3600 (seconds allowed for WAL replay)
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
readonly API_LABEL="${API_LABEL:-techno-os.slot}"
readonly HEALTH_URL="${HEALTH_URL-http://127.0.0.1:8000/health}"
# The API's readiness (it reaches the restored database), beside its liveness.
readonly READY_URL="${READY_URL-${HEALTH_URL:+${HEALTH_URL%/health}/ready}}"
readonly RESTORE_IMAGE="${RESTORE_IMAGE:-techno-os/debian:bookworm}"
readonly DB_USER="${DB_USER:-techno_user}"
readonly DB_NAME="${DB_NAME:-techno_os}"
readonly COUNT_TABLES="${COUNT_TABLES:-user_preferences}"
readonly WAIT_TIMEOUT="${WAIT_TIMEOUT:-300}"
readonly LOCK_FILE="${LOCK_FILE:-$BACKUP_DIR/.backup_observability.lock}"
readonly RELEASE_LOCK="${RELEASE_LOCK:-}"
readonly STANZA="${PGBACKREST_STANZA:-techno-os}"
readonly PGBACKREST_CONF_DIR="${PGBACKREST_CONF_DIR:-/etc/techno-os/pgbackrest/conf}"
readonly RESTORE_CONFIG="${PGBACKREST_RESTORE_CONFIG:-/etc/pgbackrest/restore.conf}"
readonly SPOOL_VOLUME="${PGBACKREST_SPOOL_VOLUME:-${PROJECT}_pgbackrest_spool}"
readonly DB_CONFIG_DIR="${DB_CONFIG_DIR:-}"
readonly DB_CONF_IN_CONTAINER="${DB_CONF_IN_CONTAINER:-/etc/techno-os/postgres}"
readonly RECOVERY_TIMEOUT="${RECOVERY_TIMEOUT:-3600}"
# Marks the line that keeps the one-off recovery container off TCP (removed before the start).
readonly NO_TCP_MARK="# techno-os restore: socket only until checked"

MODE="archive"
ASSUME_YES=0
ARCHIVE="postgres_latest.tar.gz"
ARCHIVE_DIR=""
ARCHIVE_NAME=""
TARGET=""
STEP="início"
STACK_STOPPED=0
CANCELLED=0
PREVIOUS=""
VOLUME_TOUCHED=0
RECOVERY_CONTAINER=""
ARCHIVE_MAX=""
SYSTEM_ID=""
API_STOPPED=()
DB_MOUNTS=()

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
    sed -n '2,14s/^# \{0,1\}//p' "$0"
}

parse_args() {
    while (($#)); do
        case "$1" in
            -y | --yes) ASSUME_YES=1 ;;
            -h | --help)
                usage
                exit 0
                ;;
            --latest) MODE="latest" ;;
            --target-time)
                (($# >= 2)) || die "--target-time precisa de 'YYYY-MM-DD HH:MM:SS' (UTC)"
                MODE="time"
                TARGET="$2"
                shift
                ;;
            --target-time=*)
                MODE="time"
                TARGET="${1#--target-time=}"
                ;;
            -*) die "opção desconhecida: $1" ;;
            *) ARCHIVE="$1" ;;
        esac
        shift
    done
}

compose() {
    # shellcheck disable=SC2086 # COMPOSE may be "docker compose"
    (cd "$BACKEND_DIR" && $COMPOSE "$@")
}

# The database service's mounts, for one-off containers of its image (docker-compose 1.29's
# `run` refuses a service on the host's network): the data volume, pgBackRest's config and TLS
# files, its spool, and PostgreSQL's config. The host's network: the backup host is reached.
db_mounts() {
    DB_MOUNTS=(-v "$VOLUME:/var/lib/postgresql/data" -v "$PGBACKREST_CONF_DIR:/etc/pgbackrest:ro"
        -v "$SPOOL_VOLUME:/var/spool/pgbackrest")
    if [[ -n "$DB_CONFIG_DIR" ]]; then
        DB_MOUNTS+=(-v "$DB_CONFIG_DIR:$DB_CONF_IN_CONTAINER:ro")
    fi
}

# pgBackRest as postgres, through the backup host's restore endpoint.
pgbackrest_run() {
    docker run --rm --network host -u postgres "${DB_MOUNTS[@]}" --entrypoint pgbackrest \
        "$RESTORE_IMAGE" "--config=$RESTORE_CONFIG" "--stanza=$STANZA" "$@"
}

# --- the nightly archive (the runbook's procedure) ---------------------------------------------
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

# --- point in time / latest (pgBackRest) ---------------------------------------------------------
validate_target() {
    local epoch
    STEP="validar --target-time"
    [[ "$TARGET" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}\ [0-9]{2}:[0-9]{2}:[0-9]{2}$ ]] ||
        die "--target-time '$TARGET': use 'YYYY-MM-DD HH:MM:SS' (UTC)"
    epoch="$(date -u -d "$TARGET UTC" +%s 2>/dev/null)" ||
        die "--target-time '$TARGET' não é uma data válida"
    [[ "$(date -u -d "@$epoch" '+%Y-%m-%d %H:%M:%S')" == "$TARGET" ]] ||
        die "--target-time '$TARGET' não é uma data válida"
    ((epoch <= $(date +%s))) || die "--target-time '$TARGET' está no futuro (UTC: $(date -u '+%F %T'))"
}

# What the repository holds (through the restore endpoint): the oldest backup's end and the
# newest archived segment. A target before the oldest backup cannot be restored.
repository_info() {
    local json summary oldest
    STEP="ler o repositório offsite ($STANZA)"
    json="$(pgbackrest_run --output=json info 2>&1)" ||
        die "repositório offsite inacessível: ${json##*$'\n'}" \
            "(o endpoint de restore do host de backup está no ar? pgbackrest-restore-server)"
    summary="$(python3 -c '
import json, sys
stanza = json.loads(sys.stdin.read())[0]
backups = [b for b in stanza.get("backup", []) if not b.get("error")]
archive = stanza.get("archive") or [{}]
db = stanza.get("db") or [{}]
print(min((b["timestamp"]["stop"] for b in backups), default=0), archive[-1].get("max") or "-",
      db[-1].get("system-id", "-"))
' <<<"$json")" || die "resposta inesperada de pgbackrest info"
    read -r oldest ARCHIVE_MAX SYSTEM_ID <<<"$summary"
    ((oldest > 0)) || die "nenhum backup no repositório offsite ($STANZA)"
    [[ "$ARCHIVE_MAX" != - ]] || die "nenhum WAL arquivado no repositório offsite ($STANZA)"
    echo "📚 Repositório offsite: backup mais antigo até $(date -u -d "@$oldest" '+%F %T') UTC," \
        "último segmento WAL $ARCHIVE_MAX"
    if [[ "$MODE" == time ]] && (($(date -u -d "$TARGET UTC" +%s) < oldest)); then
        die "--target-time '$TARGET' é anterior ao backup mais antigo" \
            "($(date -u -d "@$oldest" '+%F %T') UTC): não há como voltar até lá"
    fi
}

db_sql() {
    docker exec "$1" psql -X -qAt -v ON_ERROR_STOP=1 -U "$DB_USER" -d postgres -c "$2"
}

# The live database's newest WAL, archived before it stops: a commit record after the current
# moment (a time target needs one), then a segment switch, waited for (bounded) on the backup host.
flush_wal() {
    local segment deadline archived
    STEP="arquivar o WAL atual"
    if ! docker exec "$DB_CONTAINER" pg_isready -q -U "$DB_USER" 2>/dev/null; then
        echo "ℹ️ $DB_CONTAINER não está no ar: o restore usa o que já foi arquivado"
        return 0
    fi
    # A new host's fresh cluster (host loss) is not the repository's: it has nothing to add.
    if [[ "$(db_sql "$DB_CONTAINER" 'SELECT system_identifier FROM pg_control_system()')" != \
        "$SYSTEM_ID" ]]; then
        echo "ℹ️ $DB_CONTAINER é outro cluster (host novo?): o restore usa o que já foi arquivado"
        return 0
    fi
    db_sql "$DB_CONTAINER" "SELECT txid_current()" >/dev/null
    segment="$(db_sql "$DB_CONTAINER" "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")"
    db_sql "$DB_CONTAINER" "SELECT pg_switch_wal()" >/dev/null
    deadline=$((SECONDS + 120))
    until archived="$(db_sql "$DB_CONTAINER" \
        "SELECT coalesce(last_archived_wal, '') >= '$segment' FROM pg_stat_archiver")" &&
        [[ "$archived" == t ]]; do
        if ((SECONDS >= deadline)); then
            say_both "⚠️ O WAL até $segment não chegou ao host de backup em 120 s:" \
                "o restore usa o que já foi arquivado"
            return 0
        fi
        sleep 1
    done
    echo "✅ WAL arquivado até $segment"
}

pgbackrest_restore() {
    local recovery=("--recovery-option=restore_command=pgbackrest --config=$RESTORE_CONFIG --stanza=$STANZA archive-get %f \"%p\"")
    STEP="pgbackrest restore ($MODE)"
    echo "📥 Restaurando do repositório offsite ($MODE${TARGET:+: $TARGET UTC})..."
    if [[ "$MODE" == time ]]; then
        pgbackrest_run "${recovery[@]}" --type=time "--target=$TARGET+00" \
            --target-action=promote restore
    else
        # A standby never promotes on its own: a plain restore would promote at a missing or
        # unreadable segment and serve what came before it (pgBackRest 2.45, PostgreSQL 15).
        pgbackrest_run "${recovery[@]}" --type=standby restore
    fi
    # Until checked, the recovering server listens on its Unix socket only.
    docker run --rm --network none -u postgres -v "$VOLUME:/data" --entrypoint sh \
        "$RESTORE_IMAGE" -c "printf '%s\n%s\n' '$NO_TCP_MARK' \"listen_addresses = ''\" \
        >> /data/postgresql.auto.conf"
}

start_recovery() {
    STEP="iniciar a recuperação (container $DB_CONTAINER-restore)"
    RECOVERY_CONTAINER="$DB_CONTAINER-restore"
    docker rm -f "$RECOVERY_CONTAINER" >/dev/null 2>&1 || true
    local config=()
    if [[ -n "$DB_CONFIG_DIR" ]]; then
        config=(-c "config_file=$DB_CONF_IN_CONTAINER/postgresql.conf")
    fi
    docker run -d --name "$RECOVERY_CONTAINER" --network host "${DB_MOUNTS[@]}" \
        "$RESTORE_IMAGE" postgres "${config[@]}" >/dev/null
    echo "⏳ Reaplicando o WAL (sem TCP: nada alcança o banco até a verificação)..."
}

# The recovery container's log lines that explain a stop.
recovery_log() {
    docker logs "$RECOVERY_CONTAINER" 2>&1 |
        grep -E 'FATAL|ERROR|unable to|FormatError|recovery stopping|redo done|restored log file' |
        tail -n 8 || true
}

recovery_failed() {
    local log last
    log="$(recovery_log)"
    last="$(grep -o 'restored log file "[0-9A-F]\{24\}"' <<<"$log" | tail -n 1 | grep -o '[0-9A-F]\{24\}' || true)"
    say_both "$log"
    if grep -q 'FormatError\|ERROR: \[' <<<"$log"; then
        die "um segmento WAL do repositório está corrompido (veja acima): nada foi restaurado"
    elif [[ -n "$last" && "$last" < "$ARCHIVE_MAX" ]]; then
        die "falta o segmento WAL seguinte a $last no repositório (o último é $ARCHIVE_MAX):" \
            "não é possível chegar ao alvo; nada foi restaurado"
    fi
    die "a recuperação terminou antes do alvo: $*"
}

running() {
    [[ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" == true ]]
}

segment_of_lsn() {
    python3 -c 'import sys; h, l = sys.argv[1].split("/"); print(((int(h, 16) << 32) + int(l, 16)) >> 24)' "$1"
}

segment_number() {
    echo $((16#${1:8:8} * 256 + 16#${1:16:8}))
}

wait_recovery() {
    local deadline=$((SECONDS + RECOVERY_TIMEOUT)) lsn last="" still=0 newest
    STEP="reaplicar o WAL"
    newest="$(segment_number "$ARCHIVE_MAX")"
    while :; do
        ((SECONDS < deadline)) || die "a recuperação não terminou em ${RECOVERY_TIMEOUT}s"
        running "$RECOVERY_CONTAINER" || recovery_failed "o servidor parou"
        if [[ "$MODE" == time ]]; then
            [[ "$(db_sql "$RECOVERY_CONTAINER" 'SELECT pg_is_in_recovery()' 2>/dev/null)" == f ]] &&
                break
        elif lsn="$(db_sql "$RECOVERY_CONTAINER" 'SELECT pg_last_wal_replay_lsn()' 2>/dev/null)" &&
            [[ -n "$lsn" ]]; then
            if [[ "$lsn" == "$last" ]]; then still=$((still + 1)); else still=0; fi
            last="$lsn"
            (($(segment_of_lsn "$lsn") >= newest && still >= 2)) && break
            ((still >= 15)) && recovery_failed "a reaplicação parou em $lsn, antes do último" \
                "segmento arquivado $ARCHIVE_MAX: segmento faltando ou ilegível"
        fi
        sleep 1
    done
    if [[ "$MODE" == latest ]]; then
        STEP="promover"
        [[ "$(db_sql "$RECOVERY_CONTAINER" 'SELECT pg_promote(true, 120)')" == t ]] ||
            die "a promoção do banco restaurado falhou"
        echo "✅ WAL reaplicado até $last (último segmento arquivado: $ARCHIVE_MAX); promovido"
    else
        echo "✅ Recuperação parou no alvo: $(recovery_log | grep -o 'recovery stopping.*' | tail -n 1)"
    fi
}

# Stop the recovery container cleanly (a checkpoint), and open TCP again for the real start.
finish_recovery() {
    STEP="encerrar o container de recuperação"
    docker stop -t 120 "$RECOVERY_CONTAINER" >/dev/null
    docker rm "$RECOVERY_CONTAINER" >/dev/null
    RECOVERY_CONTAINER=""
    docker run --rm --network none -u postgres -v "$VOLUME:/data" --entrypoint sed \
        "$RESTORE_IMAGE" -i -e "/^$NO_TCP_MARK\$/,+1d" /data/postgresql.auto.conf
}

# --- common steps ----------------------------------------------------------------------------------
check_prerequisites() {
    STEP="pré-requisitos"
    [[ "$WAIT_TIMEOUT" =~ ^[0-9]+$ ]] || die "WAIT_TIMEOUT inválido: $WAIT_TIMEOUT"
    docker image inspect "$RESTORE_IMAGE" >/dev/null 2>&1 ||
        die "imagem $RESTORE_IMAGE não existe neste host (defina RESTORE_IMAGE)"
    [[ -d "$BACKEND_DIR" ]] || die "diretório do compose não existe: $BACKEND_DIR"
    compose config --quiet || die "$COMPOSE config falhou em $BACKEND_DIR"
}

# No backup (nor an API release) may run while the volume is replaced.
acquire_lock() {
    STEP="lock $LOCK_FILE"
    if [[ -d "${LOCK_FILE%/*}" ]]; then
        exec 9>>"$LOCK_FILE"
        flock -n 9 || die "um backup está em andamento (lock: $LOCK_FILE); tente de novo"
    fi
    if [[ -n "$RELEASE_LOCK" && -d "${RELEASE_LOCK%/*}" ]]; then
        exec 8>>"$RELEASE_LOCK"
        flock -n 8 || die "uma release da API está em andamento (lock: $RELEASE_LOCK)"
    fi
}

what_is_restored() {
    case "$MODE" in
        archive) echo "o conteúdo de $ARCHIVE_NAME" ;;
        time) echo "o estado de $TARGET UTC (repositório offsite)" ;;
        latest) echo "tudo o que o repositório offsite tem (último WAL arquivado)" ;;
    esac
}

confirm() {
    local answer
    ((ASSUME_YES)) && return 0
    [[ -t 0 ]] || die "sem terminal para confirmar: use --yes"
    echo "⚠️ O restore PARA a API e a stack em $BACKEND_DIR e SUBSTITUI o volume $VOLUME"
    echo "   por $(what_is_restored)."
    read -r -p "Digite 'sim' para continuar: " answer
    if [[ "$answer" != sim ]]; then
        echo "🚫 Restore cancelado: nada foi alterado"
        CANCELLED=1
        exit 1
    fi
}

# This host's API containers (every release slot): nothing answers from a database being
# replaced. On a multi-host layout the API hosts are stopped by tools/restore.py.
stop_api() {
    local ids
    [[ -n "$API_CONTAINER" ]] || return 0
    STEP="parar a API"
    mapfile -t ids < <(docker ps -q --filter "label=$API_LABEL")
    if running "$API_CONTAINER"; then ids+=("$(docker inspect -f '{{.Id}}' "$API_CONTAINER")"); fi
    ((${#ids[@]})) || return 0
    echo "⏹️ Parando a API..."
    mapfile -t API_STOPPED < <(printf '%s\n' "${ids[@]}" | sort -u)
    docker stop -t 30 "${API_STOPPED[@]}" >/dev/null
}

start_api() {
    ((${#API_STOPPED[@]})) || return 0
    STEP="subir a API"
    echo "▶️ Subindo a API..."
    docker start "${API_STOPPED[@]}" >/dev/null
    API_STOPPED=()
}

stop_stack() {
    STEP="docker-compose down"
    echo "⏹️ Parando serviços..."
    STACK_STOPPED=1
    compose down
}

# A copy of the volume as it was, until the restored database is healthy.
keep_previous() {
    PREVIOUS="${VOLUME}_before_restore_$(date -u +%Y%m%d_%H%M%S)"
    STEP="copiar $VOLUME para $PREVIOUS"
    echo "💾 Guardando uma cópia do volume atual em $PREVIOUS..."
    docker volume create "$PREVIOUS" >/dev/null
    if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
        docker run --rm --network none -v "$VOLUME:/from:ro" -v "$PREVIOUS:/to" \
            --entrypoint cp "$RESTORE_IMAGE" -a /from/. /to/
    fi
}

empty_volume() {
    STEP="esvaziar $VOLUME"
    docker volume create "$VOLUME" >/dev/null
    VOLUME_TOUCHED=1
    docker run --rm --network none -v "$VOLUME:/data" --entrypoint find "$RESTORE_IMAGE" \
        /data -mindepth 1 -delete
    echo "✅ Volume $VOLUME esvaziado (cópia em $PREVIOUS)"
}

drop_previous() {
    [[ -n "$PREVIOUS" ]] || return 0
    docker volume rm "$PREVIOUS" >/dev/null
    echo "🗑️ Cópia $PREVIOUS removida (o banco restaurado está saudável)"
    PREVIOUS=""
}

start_stack() {
    STEP="docker-compose up -d"
    echo "▶️ Subindo serviços..."
    compose up -d
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
        # Serving through the front (below) is the proof; Docker's healthcheck only runs every
        # 15 s, so "starting" is fine, "unhealthy" is not.
        [[ "$(docker inspect -f '{{.State.Running}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' \
            "$API_CONTAINER" 2>/dev/null)" =~ ^true\ (healthy|starting|)$ ]] || return 1
    fi
    if [[ -n "$HEALTH_URL" ]]; then
        curl -fsS --max-time 5 -o /dev/null "$HEALTH_URL" 2>/dev/null || return 1
    fi
    if [[ -n "$READY_URL" ]]; then
        curl -fsS --max-time 5 -o /dev/null "$READY_URL" 2>/dev/null || return 1
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

# After a failure with the stack stopped: the previous volume back, the stack and the API up.
put_previous_back() {
    if [[ -n "$RECOVERY_CONTAINER" ]]; then
        docker rm -f "$RECOVERY_CONTAINER" >/dev/null 2>&1 || true
    fi
    if ((VOLUME_TOUCHED)); then
        say_both "↩️ Recolocando o banco anterior (cópia $PREVIOUS)..."
        docker run --rm --network none -v "$VOLUME:/data" --entrypoint find "$RESTORE_IMAGE" \
            /data -mindepth 1 -delete &&
            docker run --rm --network none -v "$PREVIOUS:/from:ro" -v "$VOLUME:/to" \
                --entrypoint cp "$RESTORE_IMAGE" -a /from/. /to/ || return 1
    fi
    compose up -d || return 1
    STACK_STOPPED=0
    wait_healthy_quietly || return 1
}

wait_healthy_quietly() {
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    until container_ready "$DB_CONTAINER" &&
        docker exec "$DB_CONTAINER" pg_isready -q -U "$DB_USER" -d "$DB_NAME"; do
        ((SECONDS < deadline)) || return 1
        sleep 2
    done
}

on_exit() {
    local rc=$? failed_step
    trap - EXIT
    ((rc == 0 || CANCELLED)) && exit "$rc"
    failed_step="$STEP"
    say_both "❌ Restore falhou: ${failed_step} (exit $rc)"
    if ((STACK_STOPPED)); then
        if put_previous_back; then
            say_both "   O banco anterior foi recolocado e está no ar; nada restaurado pela metade" \
                "serve tráfego."
            drop_previous
        else
            say_both "   A stack está PARADA. Cópia do banco anterior: volume ${PREVIOUS:-(nenhuma)}." \
                "Corrija e rode de novo, ou: cd $BACKEND_DIR && $COMPOSE up -d"
        fi
    fi
    if ((${#API_STOPPED[@]})); then
        docker start "${API_STOPPED[@]}" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}

main() {
    trap on_exit EXIT
    parse_args "$@"
    db_mounts
    local started=$SECONDS

    if [[ "$MODE" == archive ]]; then
        resolve_archive
        verify_archive
        check_prerequisites
    else
        [[ "$MODE" == latest ]] || validate_target
        check_prerequisites
        repository_info
    fi
    acquire_lock
    confirm

    stop_api
    if [[ "$MODE" != archive ]]; then
        flush_wal
        repository_info
    fi
    stop_stack
    keep_previous
    empty_volume
    if [[ "$MODE" == archive ]]; then
        extract_archive
    else
        pgbackrest_restore
        start_recovery
        wait_recovery
        finish_recovery
    fi
    start_stack
    start_api
    wait_healthy
    drop_previous
    print_counts
    echo "✅ Restore concluído em $((SECONDS - started))s: $(what_is_restored)"
}

main "$@"

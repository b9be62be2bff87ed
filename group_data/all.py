"""Defaults for every host. Every value the runbook names is here; environments override in
group_data/<group>.py. Secrets (API keys, DB password) never live here: see `secrets_file`."""

# --- Paths (the runbook's) ---------------------------------------------------------------
backend_dir = "/opt/techno-os/app/backend"
scripts_dir = "/opt/techno-os/scripts"
backup_dir = "/opt/techno-os/backups/observability"
build_dir = "/opt/techno-os/build"
backup_log = "/var/log/backup_obs.log"
textfile_collector_dir = "/var/lib/prometheus/node-exporter"

# --- Compose stack -------------------------------------------------------------------------
compose_project = "techno-os-backend"  # makes the volume techno-os-backend_postgres_data
api_container = "techno-os-api"
db_container = "techno-os-db"
db_volume = "techno-os-backend_postgres_data"
db_user = "techno_user"
db_name = "techno_os"
api_bind_address = "127.0.0.1"  # loopback only: a proxy, not Docker, exposes the API
api_port = 8000
container_log_max_size = "10m"
container_log_max_files = 5
stack_health_timeout_seconds = 180

# --- Images ---------------------------------------------------------------------------------
base_image = "techno-os/debian:bookworm"
api_image_repository = "techno-os/api"
db_image_repository = "techno-os/postgres"
debian_mirror = "http://deb.debian.org/debian"
artifact_dir = "build/artifact"  # on the control machine, made by `make artifact`

# --- Prometheus (standalone, outside compose) ------------------------------------------------
prometheus_listen_address = "127.0.0.1:9090"
prometheus_retention = "15d"
# Repository files, relative to the repo root; a site may point them at its own copies.
prometheus_config_file = "files/prometheus.yml"
prometheus_rules_dir = "files/prometheus"
node_exporter_listen_address = "127.0.0.1:9100"

# --- Backup ----------------------------------------------------------------------------------
backup_cron_schedule = "0 2 * * *"
retention_days = 7

# --- LLM hardening (F9.9-B) ---------------------------------------------------------------
# Fail-closed allowlist: only these providers may be called. Real providers need a key.
llm_allowed_providers = ["fake"]
llm_provider = "fake"
llm_timeout_seconds = 30
llm_circuit_failure_threshold = 3
llm_circuit_cooldown_seconds = 60
# Provider -> base URL override (e.g. a regional endpoint or a proxy); empty uses the default.
llm_base_urls: dict[str, str] = {}

# --- Secrets ----------------------------------------------------------------------------
# KEY=VALUE lines (DB_PASSWORD, <PROVIDER>_API_KEY), untracked; the operator's environment wins.
secrets_file = "secrets/{group}.env"

# --- Safety --------------------------------------------------------------------------------
# Drills (stop services, inject faults, restore backups) run only where this is True.
disposable = False
# The LLM provider stand-in of the drills (compose profile "sandbox"); never on production.
llm_standin = False

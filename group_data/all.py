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

# --- Alertmanager (Debian's prometheus-alertmanager, loopback, no clustering) ----------------
alertmanager_listen_address = "127.0.0.1:9093"  # files/prometheus.yml sends alerts here
# Routed by the rules' `severity` label: `critical` and `warning` each have a receiver, and each
# receiver posts Alertmanager's webhook JSON to this URL (chat bridge, incident tool). Empty: the
# secret ALERT_WEBHOOK_URL (webhook URLs often carry a token); a deploy with no receiver stops.
alert_webhook_url = ""
# Optional e-mail, addresses per severity; the SMTP password is the secret ALERT_SMTP_PASSWORD.
alert_email_to: dict[str, list[str]] = {"critical": [], "warning": []}
alert_email_from = ""  # required when an address is set
alert_smtp_smarthost = ""  # host:port, required when an address is set
alert_smtp_username = ""  # empty: no SMTP authentication
alert_smtp_require_tls = True
# Wait before a group's first notification, between its updates (resolved ones included), and
# before repeating an unchanged firing group, per severity.
alertmanager_group_wait = "30s"
alertmanager_group_interval = "5m"
alertmanager_repeat_interval = {"critical": "1h", "warning": "4h"}
# Disposable hosts only: a webhook receiver on 127.0.0.1:9095 that appends every notification to
# /var/lib/techno-os-webhook/notifications.jsonl, where the drills read it.
alert_webhook_sink = False

# --- Reverse proxy (Debian's caddy): the only public listener ---------------------------------
# Serves api.<domain> (all but /metrics), prometheus.<domain> and alertmanager.<domain> (basic
# auth) over TLS on ports 443 and 80 (80 redirects to HTTPS and answers ACME challenges).
public_domain = "verittadigital.com"
# "acme": certificates from Let's Encrypt (the names resolve to this host, 80/443 reachable);
# "files": tls_cert_file/tls_key_file (PEM on the host, readable by the caddy user; one
# certificate naming the three hosts, or a wildcard); "internal": Caddy's local CA (sandbox).
tls_mode = "acme"
acme_email = ""  # ACME account contact (expiry notices); optional
tls_cert_file = ""
tls_key_file = ""
# Basic auth in front of Prometheus and Alertmanager; the bcrypt hash is the secret
# PROXY_BASIC_AUTH_HASH (generated, with its password, on disposable hosts).
proxy_basic_auth_user = "ops"
hsts_max_age_seconds = 31536000
# Ports that may listen on public addresses besides SSH (tests/infra check it).
public_ports = [80, 443]

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

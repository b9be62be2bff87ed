"""Defaults for every host. Every value the runbook names is here; environments override in
group_data/<group>.py. Secrets (API keys, DB password) never live here: see `secrets_file`.

Roles come from the inventory's groups (`edge`, `db`, `api`, `backup`), and each host's data
`private_address` says where the others reach it (tasks/topology.py)."""

# --- Paths (the runbook's) ---------------------------------------------------------------
backend_dir = "/opt/techno-os/app/backend"
scripts_dir = "/opt/techno-os/scripts"
backup_dir = "/opt/techno-os/backups/observability"
build_dir = "/opt/techno-os/build"
backup_log = "/var/log/backup_obs.log"
textfile_collector_dir = "/var/lib/prometheus/node-exporter"

# --- Database host: the compose project (PostgreSQL) ---------------------------------------
compose_project = "techno-os-backend"  # makes the volume techno-os-backend_postgres_data
db_container = "techno-os-db"
db_volume = "techno-os-backend_postgres_data"
db_user = "techno_user"
db_name = "techno_os"
db_port = 5432  # on loopback, and on the private address when an API host is elsewhere
db_config_dir = "/opt/techno-os/postgres"  # postgresql.conf and pg_hba.conf, managed here
container_log_max_size = "10m"
container_log_max_files = 5
stack_health_timeout_seconds = 180

# --- API hosts: releases without downtime (tasks/release.py, techno-os-release) ---------------
# Each API host's front (HAProxy, tasks/balancer.py) listens on api_port (loopback, and the
# private address when the edge is another host) and forwards to the release slots (loopback
# only); a new release starts on the free slot and takes over when it is ready, the old one
# drains and stops.
api_container = "techno-os-api"
api_port = 8000
api_slot_ports = [8001, 8002]
api_ready_timeout_seconds = 120  # a new release that is not ready by then is not switched to
api_drain_seconds = 3  # from the new release ready to stopping the old (the front sees it up)
# After the drain, the old release gets SIGTERM: its requests in flight (streams) may run for
# api_graceful_shutdown_seconds more, and it is killed at api_stop_timeout_seconds.
api_graceful_shutdown_seconds = 60
api_stop_timeout_seconds = 70
keep_releases = 3  # images of the last releases kept on each host (`make rollback`)

# --- Load balancing (HAProxy): the edge's balancer behind Caddy, and each API host's front ----
api_balancer_port = 8100  # the edge's balancer, on its loopback (Caddy's api. site sends to it)
balancer_metrics_port = 8405  # HAProxy's Prometheus exporter (loopback; private for the edge)
balancer_connect_timeout = "1s"  # then the request is tried on another host or slot
balancer_idle_timeout = "10m"  # the longest silence within a request or an answer (streams)
balancer_hard_stop_after = "15m"  # a reload's old process ends its requests by then
balancer_check_interval = "1s"  # health of each API host (/health, 2 failures take it out)
front_check_interval = "1s"  # health of each release slot (/health, 2 failures take it out)

# --- The release's artifact (wheel, wheelhouses, images), made by `make artifact` ------------
artifact_dir = "build/artifact"  # on the control machine

# --- Prometheus (standalone, outside compose) ------------------------------------------------
prometheus_listen_address = "127.0.0.1:9090"
prometheus_retention = "15d"
# Alert rules: repository files, relative to the repo root (a site may point at its own copy).
prometheus_rules_dir = "files/prometheus"
node_exporter_port = 9100  # loopback, and the private address when Prometheus is elsewhere
# How often every target is scraped and the rules evaluated (the rules' unit tests assume 15s).
prometheus_scrape_interval = "15s"
prometheus_evaluation_interval = "15s"
# Prometheus resends firing alerts this often; Alertmanager drops one that is not resent within
# four times this (Prometheus stopped): how soon the watchdog stops reaching the dead-man's switch.
prometheus_alert_resend_delay = "1m"

# --- Exporters (issue 12: no silent failure) -------------------------------------------------
# Debian's prometheus-postgres-exporter on the db host: loopback (and the private address when
# Prometheus is elsewhere), connecting as this role (pg_monitor only; its password is the secret
# POSTGRES_EXPORTER_PASSWORD, generated on disposable hosts).
postgres_exporter_port = 9187
postgres_exporter_role = "techno_monitor"
postgres_exporter_connection_limit = 3
# Debian's prometheus-blackbox-exporter on the edge: probes https://api.<domain>/health and the
# HTTP -> HTTPS redirect as a client does. True: connect to the edge's private address with the
# public name (Host, SNI) instead of resolving it (names that resolve nowhere, or no NAT hairpin).
blackbox_listen_address = "127.0.0.1:9115"
blackbox_probe_via_edge_address = False
blackbox_probe_timeout_seconds = 10
# TLSCertificateExpiringSoon: the certificate chain expires within this many days.
tls_cert_expiry_alert_days = 14

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
# The dead-man's switch: Alertmanager posts the always-firing Watchdog alert here every
# deadmans_switch_interval; the service behind the URL (a heartbeat check) alarms when it stops.
# Empty: the secret DEADMANS_SWITCH_URL (such URLs carry a token); a deploy with neither stops.
deadmans_switch_url = ""
deadmans_switch_interval = "1m"

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
# What the proxy lets reach the API (slow or huge clients cannot hold connections or memory).
proxy_max_body_size = "8MB"
proxy_max_header_size = "64KB"
proxy_read_header_timeout = "10s"
proxy_read_body_timeout = "60s"
proxy_idle_timeout = "2m"

# --- Firewall (nftables, every host): SSH, 80/443 on the edge, the flows between roles --------
ssh_allowed_from = ["0.0.0.0/0", "::/0"]

# --- Backup ----------------------------------------------------------------------------------
backup_cron_schedule = "0 2 * * *"
retention_days = 7

# --- Offsite backups: pgBackRest (tasks/pgbackrest.py, docs/architecture.md) -------------------
# WAL is archived continuously from the db host to the backup host's repository (encrypted,
# aes-256-cbc; the passphrase is the secret PGBACKREST_CIPHER_PASS, on the backup host only);
# the backup host takes the base backups, verifies them, expires them and test-restores them.
pgbackrest_stanza = "techno-os"
pgbackrest_repo_path = "/var/lib/pgbackrest"
pgbackrest_archive_port = 8432  # backup host: WAL from the db host (user pgarchive, write-once)
pgbackrest_restore_port = 8433  # backup host: restores and archive-get (user pgrestore, read-only)
pgbackrest_db_port = 8432  # db host: the sidecar the backup host takes base backups through
pgbackrest_container = "techno-os-pgbackrest"  # that sidecar (compose service `pgbackrest`)
pgbackrest_config_dir = "/etc/techno-os/pgbackrest"  # db host: config + TLS, /etc/pgbackrest inside
# A quiet database still archives a segment at least this often (PostgreSQL's archive_timeout):
# the bound on the writes a lost db host costs.
pg_archive_timeout_seconds = 60
# How long the db host's archive-push waits for the repository before it reports a failure
# (pgBackRest's archive-timeout; PostgreSQL retries, nothing is lost).
pgbackrest_push_timeout_seconds = 60
# Base backups: one systemd calendar run a day; a full backup when the newest full one is at
# least this many days old, else a differential one (a restore reads one full + one diff).
backup_calendar = "*-*-* 03:00:00 UTC"
backup_full_every_days = 7
# Kept on the backup host: every full backup (with its diffs and the WAL to replay them) needed to
# restore any moment of the last N days. The db host cannot shorten it.
backup_retention_full_days = 30
# Seconds between runs of the sealer (hands finished WAL to the repository owner; until then the
# db host could still replace a segment it just wrote) and of the metrics.
pgbackrest_seal_interval_seconds = 15
pgbackrest_metrics_interval_seconds = 60
# The nightly restore test: these tables must exist with at least this many rows, and each must
# keep at least this share of the rows the previous test found.
restore_test_tables: dict[str, int] = {"alembic_version": 1, "user_preferences": 0}
restore_test_min_rows_ratio = 0.5

# --- LLM hardening (F9.9-B) ---------------------------------------------------------------
# Fail-closed allowlist: only these providers may be called. Real providers need a key.
llm_allowed_providers = ["fake"]
llm_provider = "fake"
llm_timeout_seconds = 30
llm_circuit_failure_threshold = 3
llm_circuit_cooldown_seconds = 60
# Provider -> base URL override (e.g. a regional endpoint or a proxy); empty uses the default.
llm_base_urls: dict[str, str] = {}
# Fallbacks (LLM_FALLBACKS): provider -> ordered alternatives "provider/model", tried when the
# provider's circuit is open or its call fails (timeout, 5xx, 429, connection) before any
# streamed chunk; never after a 4xx or a content filter. Each alternative must be in
# llm_allowed_providers (so it has its key); the deploy and the API's start-up refuse others.
# e.g. {"openai": ["anthropic/claude-3-5-haiku-latest", "google/gemini-2.0-flash"]}
llm_fallbacks: dict[str, list[str]] = {}
# Longest silence between two events of a streamed answer before it is cut (stream_interrupted);
# the wait for the first one is llm_timeout_seconds. The proxies' idle timeouts
# (balancer_idle_timeout) must be longer.
llm_stream_idle_timeout_seconds = 30

# --- Client keys, limits and spend (python -m techno_os_api.keys; `make api-key`) ------------
# Defaults of every key (a key's own values win): the models it may call (empty: any allowed
# one), a per-call cap on max_tokens (None: none), its concurrent calls per API instance.
key_default_models: list[str] = []
key_default_max_tokens: int | None = None
key_default_max_parallel = 8
# max_tokens the gateway sends (and reserves budget for) when a call names none.
llm_default_max_tokens = 4096
# Prices replacing the shipped table's (USD per million tokens), e.g.
# {"openai": {"models": {"gpt-4o": {"prompt": 2.5, "completion": 10}}}}.
llm_prices: dict[str, dict] = {}
# Alert (LLMSpendHigh) when every key together spends faster than this.
llm_spend_alert_usd_per_hour = 50.0
# Serve /docs, /redoc and /openapi.json (they tell a stranger every route): off in production.
api_docs_enabled = False

# --- Secrets ----------------------------------------------------------------------------
# KEY=VALUE lines (DB_PASSWORD, <PROVIDER>_API_KEY), untracked; the operator's environment wins.
secrets_file = "secrets/{group}.env"

# --- Safety --------------------------------------------------------------------------------
# Drills (stop services, inject faults, restore backups) run only where this is True.
disposable = False
# The LLM provider stand-in of the drills (tasks/standin.py); never on production. It plays the
# providers listed here (their base URLs point at it, each gets a generated dummy key).
llm_standin = False
llm_standin_providers = ["openai"]

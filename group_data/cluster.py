"""The cluster sandbox (inventories/cluster.py): disposable, with the drills' provider stand-in
on each API host, the sandbox's webhook sink and a local CA, exactly as the single-host sandbox
(group_data/local.py), spread over five hosts."""

disposable = True
llm_standin = True
# `openai` is served by the stand-in on each API host's loopback (tasks/standin.py).
llm_allowed_providers = ["fake", "openai", "anthropic"]
# `anthropic` too, by the same stand-in in Anthropic's wire format (a generated dummy key), so a
# fallback can be drilled: anthropic's calls go to openai when its circuit is open or it fails.
llm_fallbacks = {"anthropic": ["openai/gpt-4o-mini"]}
llm_standin_providers = ["openai", "anthropic"]

alert_webhook_url = "http://127.0.0.1:9095/alerts"
alert_webhook_sink = True
alertmanager_group_wait = "5s"
alertmanager_group_interval = "15s"
# The dead-man's switch is the sink too, at its own path; the drills watch its cadence.
deadmans_switch_url = "http://127.0.0.1:9095/deadmans-switch"
deadmans_switch_interval = "10s"
# Quicker scrapes and evaluations so the drills see a fault sooner; the rules, their `for` and
# their thresholds are production's. Alertmanager drops an alert Prometheus stopped resending
# after 4 x the resend delay (the Prometheus drill).
prometheus_scrape_interval = "5s"
prometheus_evaluation_interval = "5s"
prometheus_alert_resend_delay = "5s"
# The names resolve nowhere: the probes connect to the edge with the public name.
blackbox_probe_via_edge_address = True
# Caddy's local CA issues 12-hour certificates and renews them with 4 hours left (its
# intermediate lives 7 days): alert when one has under 2 hours, i.e. a renewal failed.
tls_cert_expiry_alert_days = 0.0833
public_domain = "techno-os.test"
tls_mode = "internal"

# Offsite backups: quicker sealer and metrics for the drills (see group_data/local.py).
pgbackrest_seal_interval_seconds = 5
pgbackrest_metrics_interval_seconds = 10
pgbackrest_push_timeout_seconds = 20

"""The local sandbox (inventories/local.py): disposable, with the drills' provider stand-in."""

disposable = True
llm_standin = True
# `openai` is served by the stand-in on the API host's loopback (tasks/standin.py), so drills
# exercise a real provider path (HTTP, breaker, timeout) without leaving the machine.
llm_allowed_providers = ["fake", "openai"]

# Alerting and exposure: quick notifications for the drills, captured by the sandbox's webhook
# sink; the proxy serves techno-os.test with Caddy's local CA (tests trust its root).
alert_webhook_url = "http://127.0.0.1:9095/alerts"
alert_webhook_sink = True
alertmanager_group_wait = "5s"
alertmanager_group_interval = "15s"
public_domain = "techno-os.test"
tls_mode = "internal"

# Offsite backups: the sealer and the metrics run more often, so the drills wait seconds, not
# minutes, for what production does on its slower schedule (the archive bound stays 60 s).
pgbackrest_seal_interval_seconds = 5
pgbackrest_metrics_interval_seconds = 10
pgbackrest_push_timeout_seconds = 20

"""The cluster sandbox (inventories/cluster.py): disposable, with the drills' provider stand-in
on each API host, the sandbox's webhook sink and a local CA, exactly as the single-host sandbox
(group_data/local.py), spread over five hosts."""

disposable = True
llm_standin = True
# `openai` is served by the stand-in on each API host's loopback (tasks/standin.py).
llm_allowed_providers = ["fake", "openai"]

alert_webhook_url = "http://127.0.0.1:9095/alerts"
alert_webhook_sink = True
alertmanager_group_wait = "5s"
alertmanager_group_interval = "15s"
public_domain = "techno-os.test"
tls_mode = "internal"

# Offsite backups: quicker sealer and metrics for the drills (see group_data/local.py).
pgbackrest_seal_interval_seconds = 5
pgbackrest_metrics_interval_seconds = 10
pgbackrest_push_timeout_seconds = 20

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from tasks import inputs
from tasks.facts import PathsDiffer
from tasks.services import keep_service

CONFIG = "/etc/prometheus/alertmanager.yml"
STAGED = "/etc/prometheus/staged/alertmanager.yml"
SINK_SCRIPT = "/opt/techno-os/webhook-sink/webhook_sink.py"
SINK_UNIT = "/etc/systemd/system/techno-os-webhook.service"
SINK_LISTEN = "127.0.0.1:9095"
SINK_OUTPUT = "/var/lib/techno-os-webhook/notifications.jsonl"


@deploy("Webhook sink for the drills (sandbox only): notifications as JSON lines")
def _webhook_sink() -> None:
    apt.packages(name="Install python3 (the sink)", packages=["python3"], no_recommends=True)
    changed = [
        files.put(
            name=f"Install the webhook sink {SINK_SCRIPT}",
            src="files/webhook_sink/webhook_sink.py",
            dest=SINK_SCRIPT,
            mode="0755",
        ),
        files.template(
            name=f"Unit techno-os-webhook.service: {SINK_LISTEN} -> {SINK_OUTPUT}",
            src="templates/techno-os-webhook.service.j2",
            dest=SINK_UNIT,
            mode="0644",
            script=SINK_SCRIPT,
            listen=SINK_LISTEN,
            output=SINK_OUTPUT,
        ),
    ]
    systemd.service(
        name="Keep the webhook sink enabled and running; restart on a new script or unit",
        service="techno-os-webhook",
        running=True,
        enabled=True,
        daemon_reload=changed[1].will_change,
        restarted=any(op.will_change for op in changed),
    )


@deploy("Alertmanager on loopback, routing by severity, config validated before reload")
def alertmanager() -> None:
    if host.data.alert_webhook_sink:
        _webhook_sink()

    # Before the package, so its first start already listens on loopback only, without the
    # cluster port (dpkg keeps an existing conffile: pyinfra passes --force-confold).
    defaults = files.template(
        name="Alertmanager on loopback, no clustering (/etc/default/prometheus-alertmanager)",
        src="templates/alertmanager.default.j2",
        dest="/etc/default/prometheus-alertmanager",
        mode="0644",
        config_file=CONFIG,
    )
    apt.packages(
        name="Install Alertmanager (Debian)",
        packages=["prometheus-alertmanager"],
        no_recommends=True,
    )

    # Staged, checked by amtool on the host (the same text amtool checked on the control machine
    # in validate_inputs), then installed: a bad config never reaches the running Alertmanager.
    staged = files.template(
        name=f"Stage {CONFIG} (root:prometheus, 0640: it may hold secrets)",
        src="templates/alertmanager.yml.j2",
        dest=STAGED,
        user="root",
        group="prometheus",
        mode="0640",
        severities=inputs.ALERT_SEVERITIES,
        **inputs.alerting_secrets(),
    )
    drifted = host.get_fact(PathsDiffer, first=STAGED, second=CONFIG)
    installed = server.shell(
        name="Check the staged config with amtool and install it",
        commands=[
            f"amtool check-config {STAGED}",
            f"install -m 0640 -o root -g prometheus {STAGED} {CONFIG}",
        ],
        # Also when the live config drifted from the staged one (edited by hand).
        _if=staged.did_change if not drifted else (lambda: True),
    )
    keep_service("prometheus-alertmanager", config_installed=installed, flags=defaults)

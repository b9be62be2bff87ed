"""The edge host: Alertmanager (Debian's, loopback, no clustering) routing by severity to the
receivers of group data; on disposable hosts, the drills' webhook sink."""

from __future__ import annotations

import yaml
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from tasks import topology
from tasks.common import (
    REPO,
    DataRules,
    check_data,
    check_with_tool,
    fail,
    is_duration,
    render,
    secret,
    secrets_path,
)
from tasks.services import ConfigFile, checked_config, keep_service

CONFIG = "/etc/prometheus/alertmanager.yml"
SINK_SCRIPT = "/opt/techno-os/webhook-sink/webhook_sink.py"
SINK_UNIT = "/etc/systemd/system/techno-os-webhook.service"
SINK_LISTEN = "127.0.0.1:9095"
SINK_OUTPUT = "/var/lib/techno-os-webhook/notifications.jsonl"
# The rules' severities (files/prometheus/*.yml): Alertmanager has a route for each.
ALERT_SEVERITIES = ("critical", "warning")
# The always-firing alert (files/prometheus/monitoring.yml), routed by name to the dead-man's
# switch only, whatever its severity.
WATCHDOG = "Watchdog"


def _is_loopback_address(value: str) -> bool:
    import ipaddress

    address, _, port = value.rpartition(":")
    try:
        return port.isdigit() and ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


DATA: DataRules = {
    "alertmanager_listen_address": (str, _is_loopback_address, "a loopback host:port"),
    "alert_webhook_url": (
        str,
        lambda v: not v or v.startswith(("http://", "https://")),
        "empty or an http(s) URL",
    ),
    "alert_email_to": (
        dict,
        lambda v: all(
            isinstance(a, list) and all(isinstance(x, str) and "@" in x for x in a)
            for a in v.values()
        ),
        "severity -> list of e-mail addresses",
    ),
    "alert_email_from": (str, lambda v: not v or "@" in v, "empty or an e-mail address"),
    "alert_smtp_smarthost": (
        str,
        lambda v: not v or v.rpartition(":")[2].isdigit(),
        "empty or host:port",
    ),
    "alert_smtp_username": (str, lambda v: True, "a string"),
    "alert_smtp_require_tls": (bool, lambda v: True, "True or False"),
    "alertmanager_group_wait": (str, is_duration, "a duration such as 30s or 5m"),
    "alertmanager_group_interval": (str, is_duration, "a duration such as 5m"),
    "alertmanager_repeat_interval": (
        dict,
        lambda v: all(is_duration(d) for d in v.values()),
        "severity -> duration such as 4h",
    ),
    "alert_webhook_sink": (bool, lambda v: True, "True or False"),
    "deadmans_switch_url": (
        str,
        lambda v: not v or v.startswith(("http://", "https://")),
        "empty or an http(s) URL",
    ),
    "deadmans_switch_interval": (str, is_duration, "a duration such as 1m"),
}


def receivers() -> dict[str, str]:
    """The receiver settings that may be secret: the webhook URL and the SMTP password."""
    webhook_url = host.data.alert_webhook_url or secret("ALERT_WEBHOOK_URL")
    if webhook_url and not webhook_url.startswith(("http://", "https://")):
        raise fail("ALERT_WEBHOOK_URL must be an http(s) URL")
    smtp_password = secret("ALERT_SMTP_PASSWORD") if host.data.alert_smtp_username else ""
    if host.data.alert_smtp_username and not smtp_password:
        raise fail(
            f"group data `alert_smtp_username` = {host.data.alert_smtp_username!r} needs "
            f"ALERT_SMTP_PASSWORD: set it in the environment or in {secrets_path().name}"
        )
    deadmans_url = host.data.deadmans_switch_url or secret("DEADMANS_SWITCH_URL")
    if deadmans_url and not deadmans_url.startswith(("http://", "https://")):
        raise fail("DEADMANS_SWITCH_URL must be an http(s) URL")
    return {
        "webhook_url": webhook_url,
        "smtp_password": smtp_password,
        "deadmans_switch_url": deadmans_url,
    }


def _rule_severities() -> set[str]:
    found = set()
    for rule_file in sorted((REPO / host.data.prometheus_rules_dir).glob("*.yml")):
        for group in (yaml.safe_load(rule_file.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule and rule["alert"] != WATCHDOG:
                    found.add(rule.get("labels", {}).get("severity", "<none>"))
    return found


def check() -> None:
    check_data(DATA)
    if host.data.alert_webhook_sink and not host.data.disposable:
        raise fail("group data `alert_webhook_sink` = True is only allowed on a disposable host")
    if not topology.has("edge"):
        return
    unrouted = sorted(_rule_severities() - set(ALERT_SEVERITIES))
    if unrouted:
        raise fail(f"alert rules use severities {unrouted} that Alertmanager does not route")
    for key in ("alert_email_to", "alertmanager_repeat_interval"):
        unknown = sorted(set(host.data.get(key)) - set(ALERT_SEVERITIES))
        if unknown:
            raise fail(f"group data `{key}` names unknown severities {unknown}")
    missing = sorted(set(ALERT_SEVERITIES) - set(host.data.alertmanager_repeat_interval))
    if missing:
        raise fail(f"group data `alertmanager_repeat_interval` lacks severities {missing}")
    settings = receivers()
    if not settings["deadmans_switch_url"]:
        raise fail(
            f"no dead man's switch receiver for the {WATCHDOG} alert: set group data "
            "`deadmans_switch_url` (or the secret DEADMANS_SWITCH_URL) to a service that raises "
            "the alarm when its messages stop (a heartbeat/healthcheck URL)"
        )
    if any(host.data.alert_email_to.values()):
        for key in ("alert_email_from", "alert_smtp_smarthost"):
            if not host.data.get(key):
                raise fail(f"group data `{key}` is required when `alert_email_to` has addresses")
    for severity in ALERT_SEVERITIES:
        if not settings["webhook_url"] and not host.data.alert_email_to.get(severity):
            raise fail(
                f"no receiver for `{severity}` alerts: set group data `alert_webhook_url` (or "
                f"the secret ALERT_WEBHOOK_URL) or `alert_email_to[{severity!r}]`"
            )
    check_with_tool(
        ["amtool", "check-config", "{dir}/alertmanager.yml"],
        {"alertmanager.yml": config_text()},
        "templates/alertmanager.yml.j2 rendered",
        redact=tuple(settings.values()),
    )


def config_text() -> str:
    return render(
        "templates/alertmanager.yml.j2",
        severities=ALERT_SEVERITIES,
        watchdog=WATCHDOG,
        **receivers(),
    )


@deploy("Webhook sink for the drills (sandbox only): notifications as JSON lines")
def _webhook_sink() -> None:
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
    if not topology.has("edge"):
        return
    if host.data.alert_webhook_sink:
        _webhook_sink()
    # Before the package, so its first start already listens on loopback only, without the
    # cluster port (dpkg keeps an existing conffile: pyinfra passes --force-confold).
    flags = files.template(
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
    installed = checked_config(
        "alertmanager",
        [
            ConfigFile(
                CONFIG,
                template="templates/alertmanager.yml.j2",
                group="prometheus",
                mode="0640",  # the webhook URL and the SMTP password may be secrets
                data={"severities": ALERT_SEVERITIES, "watchdog": WATCHDOG, **receivers()},
            )
        ],
        check=f"amtool check-config {{staged:{CONFIG}}}",
        what="the Alertmanager config (amtool check-config)",
    )
    keep_service("prometheus-alertmanager", config_installed=installed, flags=flags)

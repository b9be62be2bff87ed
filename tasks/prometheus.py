"""The edge host: Prometheus (Debian's package, standalone, loopback), its targets rendered from
the inventory, its alert rules from the repository plus thresholds from group data; checked by
promtool here and on the host before it reloads."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files

from tasks import balancer, blackbox_exporter, postgres_exporter, topology
from tasks.common import REPO, DataRules, check_data, check_with_tool, is_duration, render
from tasks.services import ConfigFile, checked_config, keep_service

CONFIG = "/etc/prometheus/prometheus.yml"
RULES = "/etc/prometheus/rules"
THRESHOLDS = "/etc/prometheus/thresholds/thresholds.yml"

DATA: DataRules = {
    "prometheus_listen_address": (str, lambda v: ":" in v, "host:port"),
    "prometheus_retention": (str, is_duration, "a duration such as 15d"),
    "prometheus_rules_dir": (str, lambda v: (REPO / v).is_dir(), "a directory of the repository"),
    "node_exporter_port": (int, lambda v: 0 < v < 65536, "a TCP port"),
    "llm_spend_alert_usd_per_hour": ((int, float), lambda v: v > 0, "a positive amount in USD"),
    "prometheus_scrape_interval": (str, is_duration, "a duration such as 15s"),
    "prometheus_evaluation_interval": (str, is_duration, "a duration such as 15s"),
    "prometheus_alert_resend_delay": (str, is_duration, "a duration such as 1m"),
    "tls_cert_expiry_alert_days": ((int, float), lambda v: v > 0, "a positive number of days"),
}


def check() -> None:
    check_data(DATA)
    if topology.has("edge"):
        rules = {
            f"rules/{path.name}": path.read_text()
            for path in sorted((REPO / host.data.prometheus_rules_dir).glob("*.yml"))
        }
        check_with_tool(
            ["promtool", "check", "config", "{dir}/prometheus.yml"],
            {
                "prometheus.yml": config_text(),
                **rules,
                "rules/thresholds.yml": render("templates/thresholds.yml.j2"),
            },
            "the Prometheus config and rules",
        )


def targets() -> dict[str, list[dict[str, object]]]:
    """Scrape targets from the inventory, as the edge host reaches each of them."""
    data = host.data
    return {
        "api_targets": [
            {"name": api.name, "address": f"{topology.address_from(api)}:{data.api_port}"}
            for api in topology.hosts_with("api")
        ],
        "postgres_targets": postgres_exporter.targets(),
        "haproxy_targets": balancer.targets(),
        "blackbox_address": data.blackbox_listen_address,
        "probes": blackbox_exporter.probes(),
        "node_targets": [
            {
                "name": member.name,
                "address": f"{topology.address_from(member)}:{data.node_exporter_port}",
                "roles": ",".join(r for r in topology.ROLES if topology.has(r, member)),
            }
            for member in _all_hosts()
        ],
    }


def _all_hosts() -> list:
    seen: dict[str, object] = {}
    for role in topology.ROLES:
        for member in topology.hosts_with(role):
            seen.setdefault(member.name, member)
    return list(seen.values())


def config_text() -> str:
    return render("templates/prometheus.yml.j2", **targets())


@deploy("Prometheus on the edge, targets from the inventory, config checked before reload")
def standalone_prometheus() -> None:
    if not topology.has("edge"):
        return
    # Written before the package is installed, so its first start already listens on loopback
    # only (dpkg keeps an existing conffile: pyinfra passes --force-confold).
    flags = files.template(
        name="Prometheus listens on loopback only (/etc/default/prometheus)",
        src="templates/prometheus.default.j2",
        dest="/etc/default/prometheus",
        mode="0644",
    )
    apt.packages(name="Install Prometheus (Debian)", packages=["prometheus"], no_recommends=True)
    rules_dir = str(REPO / host.data.prometheus_rules_dir)
    installed = checked_config(
        "prometheus",
        [
            ConfigFile(CONFIG, template="templates/prometheus.yml.j2", data=targets()),
            ConfigFile(RULES, src=rules_dir + "/", directory=True),
            ConfigFile(THRESHOLDS, template="templates/thresholds.yml.j2"),
        ],
        # The staged tree has the live layout: rule_files (rules/*.yml, thresholds/) resolve.
        check=f"promtool check config {{staged:{CONFIG}}}",
        what="the Prometheus config and rules (promtool check config)",
    )
    keep_service("prometheus", config_installed=installed, flags=flags)

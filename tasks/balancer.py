"""HAProxy (Debian's 2.6): the API's load balancing. On the edge, the balancer behind Caddy's
api. site spreads requests over the API hosts' fronts; on each API host, the front on api_port
sends them to the live release slot. One haproxy.cfg per host, with the parts of its roles;
checked by `haproxy -c`, installed, and reloaded without dropping a connection.

Why not Caddy for this part: see templates/haproxy.cfg.j2 (retries of requests with a body).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files

from tasks import topology
from tasks.common import DataRules, check_data, fail, is_duration, is_port
from tasks.services import ConfigFile, checked_config, keep_service

CONFIG = "/etc/haproxy/haproxy.cfg"
ERRORS_DIR = "/etc/haproxy/errors"
ERROR_PAGES = ("techno-os-502.http", "techno-os-503.http", "techno-os-504.http")

DATA: DataRules = {
    "api_balancer_port": (int, is_port, "a TCP port"),
    "balancer_metrics_port": (int, is_port, "a TCP port"),
    "balancer_connect_timeout": (str, is_duration, "a duration such as 1s"),
    "balancer_idle_timeout": (str, is_duration, "a duration such as 5m"),
    "balancer_hard_stop_after": (str, is_duration, "a duration such as 15m"),
    "balancer_check_interval": (str, is_duration, "a duration such as 1s"),
    "front_check_interval": (str, is_duration, "a duration such as 1s"),
}


def check() -> None:
    check_data(DATA)
    data = host.data
    taken = {data.api_port, *data.api_slot_ports}
    if topology.has("edge") and data.api_balancer_port in taken:
        raise fail("group data `api_balancer_port` must differ from `api_port` and the slots")
    if data.balancer_metrics_port in taken | {data.api_balancer_port}:
        raise fail("group data `balancer_metrics_port` must differ from the API's ports")


def balancer_data() -> dict[str, object]:
    edge = topology.the("edge")
    return {
        "balancer": topology.has("edge"),
        "front": topology.has("api"),
        "api_fronts": [
            (api.name, f"{topology.address_from(api)}:{host.data.api_port}")
            for api in topology.hosts_with("api")
        ],
        "front_bind": topology.listen_addresses(serves_other_hosts=edge.name != host.name),
        # Prometheus runs on the edge.
        "metrics_bind": topology.listen_addresses(serves_other_hosts=edge.name != host.name),
    }


def targets() -> list[dict[str, str]]:
    """Every HAProxy (edge and API hosts), as the edge's Prometheus reaches it."""
    seen: dict[str, dict[str, str]] = {}
    for member in [*topology.hosts_with("edge"), *topology.hosts_with("api")]:
        address = f"{topology.address_from(member)}:{host.data.balancer_metrics_port}"
        seen.setdefault(member.name, {"name": member.name, "address": address})
    return list(seen.values())


@deploy("Load balancing (HAProxy): the edge's balancer over the API hosts, each API host's front")
def load_balancer() -> None:
    if not (topology.has("edge") or topology.has("api")):
        return
    apt.packages(name="Install HAProxy (Debian)", packages=["haproxy"], no_recommends=True)
    for page in ERROR_PAGES:
        files.put(
            name=f"Error answer {ERRORS_DIR}/{page} (the API's error shape)",
            src=f"files/haproxy/errors/{page}",
            dest=f"{ERRORS_DIR}/{page}",
            mode="0644",
        )
    installed = checked_config(
        "haproxy",
        [ConfigFile(CONFIG, template="templates/haproxy.cfg.j2", data=balancer_data())],
        check=f"haproxy -c -q -f {{staged:{CONFIG}}}",
        what="the HAProxy config (haproxy -c)",
    )
    keep_service("haproxy", config_installed=installed)

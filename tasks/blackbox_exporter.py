"""The edge host: Debian's prometheus-blackbox-exporter probing the public endpoint the way a
client does (TLS verified, through the proxy): https://api.<domain>/health must answer 200 with
{"status": "ok"}, and http://api.<domain>/ must redirect to https://. The certificate's expiry
comes with the first probe (probe_ssl_earliest_cert_expiry).

The exporter listens on loopback (Prometheus runs on this host). Its config is rendered from
group data, checked with `prometheus-blackbox-exporter --config.check` on the host before it is
installed and the exporter reloads.

Group data `blackbox_probe_via_edge_address`: the probes connect to the edge's private address
with the public name in the Host header and TLS SNI, instead of resolving the name (the
sandbox's names resolve nowhere; a production edge behind a NAT without hairpinning cannot reach
its own public address). `tls_mode` internal: the probes trust the root of Caddy's local CA,
copied where the exporter's user can read it.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from tasks import topology
from tasks.common import DataRules, check_data, render
from tasks.facts import PathsDiffer
from tasks.services import ConfigFile, checked_config, keep_service

CONFIG = "/etc/prometheus/blackbox.yml"
DEFAULTS_FILE = "/etc/default/prometheus-blackbox-exporter"
CA_FILE = "/etc/prometheus/blackbox-local-ca.crt"
# Where Debian's caddy keeps its local CA (tls_mode internal): the caddy user's home.
CADDY_LOCAL_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
HEALTH_MODULE = "techno_os_health"
REDIRECT_MODULE = "techno_os_https_redirect"

DATA: DataRules = {
    "blackbox_listen_address": (
        str,
        lambda v: v.startswith("127.") and v.rpartition(":")[2].isdigit(),
        "a loopback host:port (Prometheus runs on the same host)",
    ),
    "blackbox_probe_via_edge_address": (bool, lambda v: True, "True or False"),
    "blackbox_probe_timeout_seconds": (int, lambda v: 1 <= v <= 60, "1 to 60 seconds"),
}


def check() -> None:
    check_data(DATA)


def _api_name() -> str:
    return f"api.{host.data.public_domain}"


def _connect_to() -> str:
    """Where the probes connect: the public name (DNS), or the edge's private address."""
    if host.data.blackbox_probe_via_edge_address:
        return topology.private_address(topology.the("edge"))
    return _api_name()


def probes() -> list[dict[str, str]]:
    """The probe jobs of templates/prometheus.yml.j2: job, module, what the exporter is asked to
    connect to (`target`) and the URL a client uses (`url`, the `instance` label)."""
    name, connect = _api_name(), _connect_to()
    return [
        {
            "job": "blackbox-health",
            "module": HEALTH_MODULE,
            "target": f"https://{connect}/health",
            "url": f"https://{name}/health",
        },
        {
            "job": "blackbox-redirect",
            "module": REDIRECT_MODULE,
            "target": f"http://{connect}/health",
            "url": f"http://{name}/health",
        },
    ]


def config_data() -> dict[str, object]:
    return {
        "api_name": _api_name(),
        "set_host": bool(host.data.blackbox_probe_via_edge_address),
        "ca_file": CA_FILE if host.data.tls_mode == "internal" else "",
        "health_module": HEALTH_MODULE,
        "redirect_module": REDIRECT_MODULE,
    }


def config_text() -> str:
    return render("templates/blackbox.yml.j2", **config_data())


@deploy("Blackbox exporter on the edge: the public endpoint probed as a client sees it")
def blackbox_exporter() -> None:
    if not topology.has("edge"):
        return
    if host.data.tls_mode == "internal":
        # Caddy makes its local CA with the first certificate, soon after it first starts.
        missing_or_old = host.get_fact(PathsDiffer, first=CADDY_LOCAL_CA, second=CA_FILE)
        server.shell(
            name=f"Trust Caddy's local CA root in the probes ({CA_FILE}, public, 0644)",
            commands=[
                f"for _ in $(seq 60); do [ -s {CADDY_LOCAL_CA} ] && break; sleep 1; done",
                # -D: on an edge without the db role nothing has made /etc/prometheus yet.
                f"install -D -m 0644 -o root -g root {CADDY_LOCAL_CA} {CA_FILE}",
            ],
            _if=lambda: missing_or_old,
        )
    # Before the package, so its first start already listens on loopback only.
    flags = files.template(
        name=f"Blackbox exporter listens on {host.data.blackbox_listen_address} ({DEFAULTS_FILE})",
        src="templates/blackbox-exporter.default.j2",
        dest=DEFAULTS_FILE,
        mode="0644",
        config_file=CONFIG,
    )
    apt.packages(
        name="Install the blackbox exporter (Debian)",
        packages=["prometheus-blackbox-exporter"],
        no_recommends=True,
    )
    installed = checked_config(
        "blackbox",
        [ConfigFile(CONFIG, template="templates/blackbox.yml.j2", data=config_data())],
        check=f"prometheus-blackbox-exporter --config.check --config.file={{staged:{CONFIG}}}",
        what="the blackbox exporter's modules (--config.check)",
    )
    keep_service("prometheus-blackbox-exporter", config_installed=installed, flags=flags)

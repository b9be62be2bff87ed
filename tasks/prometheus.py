from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from tasks.facts import PathsDiffer
from tasks.services import keep_service

STAGED = "/etc/prometheus/staged"


@deploy("Prometheus standalone, on loopback, config validated before reload")
def standalone_prometheus() -> None:
    # Written before the package is installed, so its first start already listens on loopback
    # only (dpkg keeps an existing conffile: pyinfra passes --force-confold).
    defaults = files.template(
        name="Prometheus listens on loopback only (/etc/default/prometheus)",
        src="templates/prometheus.default.j2",
        dest="/etc/default/prometheus",
        mode="0644",
    )
    apt.packages(name="Install Prometheus (Debian)", packages=["prometheus"], no_recommends=True)

    # Staged, checked by promtool on the host, then installed: a bad config never reaches the
    # running Prometheus. Rule files are relative to the config (rules/*.yml).
    staged = [
        files.put(
            name="Stage prometheus.yml",
            src=host.data.prometheus_config_file,
            dest=f"{STAGED}/prometheus.yml",
            mode="0644",
        ),
        files.sync(
            name="Stage the alert rules",
            src=host.data.prometheus_rules_dir,
            dest=f"{STAGED}/rules",
            mode="0644",
            dir_mode="0755",
            delete=True,
        ),
    ]
    drifted = host.get_fact(
        PathsDiffer, first=f"{STAGED}/prometheus.yml", second="/etc/prometheus/prometheus.yml"
    ) or host.get_fact(PathsDiffer, first=f"{STAGED}/rules", second="/etc/prometheus/rules")
    installed = server.shell(
        name="Check the staged config with promtool and install it",
        commands=[
            f"promtool check config {STAGED}/prometheus.yml",
            f"rm -rf /etc/prometheus/rules.new && cp -a {STAGED}/rules /etc/prometheus/rules.new",
            "rm -rf /etc/prometheus/rules && mv /etc/prometheus/rules.new /etc/prometheus/rules",
            f"install -m 0644 {STAGED}/prometheus.yml /etc/prometheus/prometheus.yml",
        ],
        # Also when the live files drifted from the staged ones (edited by hand): a redeploy
        # puts back what the repository says.
        _if=(lambda: True) if drifted else any_changed(*staged),
    )
    keep_service("prometheus", config_installed=installed, flags=defaults)

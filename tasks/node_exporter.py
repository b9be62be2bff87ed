from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd


@deploy("Node exporter on loopback, with the textfile collector for the backup metrics")
def node_exporter() -> None:
    # Before the package, so its first start already listens on loopback only.
    defaults = files.template(
        name="Node exporter listens on loopback only (/etc/default/prometheus-node-exporter)",
        src="templates/node-exporter.default.j2",
        dest="/etc/default/prometheus-node-exporter",
        mode="0644",
    )
    apt.packages(
        name="Install the node exporter (Debian)",
        packages=["prometheus-node-exporter"],
        no_recommends=True,
    )
    files.directory(
        name=f"Textfile collector directory {host.data.textfile_collector_dir}",
        path=host.data.textfile_collector_dir,
        user="root",
        group="root",
        mode="0755",
    )
    systemd.service(
        name="Keep the node exporter enabled and running; restart on new flags",
        service="prometheus-node-exporter",
        running=True,
        enabled=True,
        restarted=defaults.will_change,
    )

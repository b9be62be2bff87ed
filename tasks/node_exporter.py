"""Every host: the node exporter (host metrics, and the textfile collector for the backup and
verification metrics), on loopback, and on the private address when Prometheus is elsewhere."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from tasks import topology


@deploy("Node exporter, with the textfile collector")
def node_exporter() -> None:
    edge_elsewhere = topology.the("edge").name != host.name
    listen = [
        f"{address}:{host.data.node_exporter_port}"
        for address in topology.listen_addresses(serves_other_hosts=edge_elsewhere)
    ]
    # Before the package, so its first start already listens where it should.
    flags = files.template(
        name="Node exporter listens on loopback (and the private address for Prometheus)",
        src="templates/node-exporter.default.j2",
        dest="/etc/default/prometheus-node-exporter",
        mode="0644",
        listen=listen,
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
        restarted=flags.will_change,
    )

"""The hosts that run containers (db, api): Docker engine and compose from Debian."""

from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from tasks import topology


def runs_containers() -> bool:
    return topology.has("db") or topology.has("api")


@deploy("Docker engine and compose")
def docker_engine() -> None:
    if not runs_containers():
        return
    apt.packages(
        name="Install Docker engine and compose from Debian (docker.io, docker-compose)",
        packages=["docker.io", "docker-compose"],
        no_recommends=True,
    )
    systemd.service(
        name="Keep Docker enabled and running", service="docker", running=True, enabled=True
    )

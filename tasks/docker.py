from pyinfra.api import deploy
from pyinfra.operations import apt, systemd


@deploy("Docker engine and compose")
def docker_engine() -> None:
    apt.packages(
        name="Install Docker engine and compose from Debian (docker.io, docker-compose)",
        packages=["docker.io", "docker-compose"],
        no_recommends=True,
    )
    systemd.service(
        name="Keep Docker enabled and running", service="docker", running=True, enabled=True
    )

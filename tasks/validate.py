"""Every module's own checks, run while the deploy is planned: a bad value stops it before any
operation touches any host, with a message naming the host and the value."""

from pyinfra import config
from pyinfra.api import DeployError, deploy

from tasks import (
    alertmanager,
    backup,
    balancer,
    base,
    blackbox_exporter,
    database,
    environment,
    firewall,
    images,
    pgbackrest,
    postgres_exporter,
    prometheus,
    proxy,
    release,
    standin,
    topology,
)


@deploy("Validate the deploy's inputs before any change")
def validate_inputs() -> None:
    if config.DIFF:
        raise DeployError("--diff would print the .env (secrets) into the log: run without it")
    for module in (
        topology,
        base,
        firewall,
        images,
        database,
        postgres_exporter,
        standin,
        environment,
        release,
        proxy,
        balancer,
        blackbox_exporter,
        prometheus,
        alertmanager,
        backup,
        pgbackrest,
    ):
        module.check()

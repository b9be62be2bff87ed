"""Every module's own checks, run while the deploy is planned: a bad value stops it before any
operation touches any host, with a message naming the host and the value."""

from pyinfra import config
from pyinfra.api import DeployError, deploy

from tasks import (
    alertmanager,
    backup,
    base,
    database,
    environment,
    firewall,
    images,
    pgbackrest,
    prometheus,
    proxy,
    release,
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
        environment,
        release,
        proxy,
        prometheus,
        alertmanager,
        backup,
        pgbackrest,
    ):
        module.check()

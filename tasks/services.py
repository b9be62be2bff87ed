"""The one way a long-running service is kept: enabled and running, restarted when its
command-line flags changed, reloaded when its (already validated) config was installed."""

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server, systemd


def keep_service(
    service: str,
    *,
    config_installed: OperationMeta,
    flags: OperationMeta | None = None,
) -> None:
    systemd.service(
        name=f"Keep {service} enabled and running"
        + ("; restart on new flags" if flags is not None else ""),
        service=service,
        running=True,
        enabled=True,
        restarted=flags.will_change if flags is not None else False,
    )
    server.shell(
        name=f"Reload {service} after a config change",
        # reload-or-restart: also starts a service that an earlier bad config had stopped.
        commands=[f"systemctl reload-or-restart {service}"],
        _if=config_installed.did_change,
    )

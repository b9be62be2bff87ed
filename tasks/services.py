"""The one way a service's configuration reaches it, and the one way a service is kept.

`checked_config`: stage the files (rendered or copied) beside the live ones, check them with the
service's own tool, install them, and reload the service; a bad config never reaches the running
service, and a live file edited by hand is put back by the next deploy (it differs from the
staged copy). `keep_service`: enabled and running, restarted on new flags, reloaded when its
config was installed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd

from tasks.facts import PathsDiffer

STAGING = "/etc/techno-os/staged"


@dataclass(frozen=True)
class ConfigFile:
    """One live file (or directory, with `directory=True`) and where it comes from: a template
    (rendered with `data`) or a repository path."""

    live: str
    template: str | None = None
    src: str | None = None
    directory: bool = False
    user: str = "root"
    group: str = "root"
    mode: str = "0644"
    data: dict[str, Any] = field(default_factory=dict)

    def staged(self, service: str) -> str:
        return f"{STAGING}/{service}{self.live}"


def _stage(service: str, item: ConfigFile) -> OperationMeta:
    staged = item.staged(service)
    # As open as the file itself: a world-readable config may be checked by an unprivileged
    # tool (PostgreSQL's runs as postgres), a secret one stays closed to others.
    world_readable = int(item.mode, 8) & 0o004
    files.directory(
        name=f"Staging directory for {item.live}",
        path=staged.rsplit("/", 1)[0],
        user="root",
        group=item.group,
        mode="0755" if world_readable else "0750",
    )
    if item.directory:
        assert item.src is not None
        return files.sync(
            name=f"Stage {item.live}/",
            src=item.src,
            dest=staged,
            user=item.user,
            group=item.group,
            mode=item.mode,
            dir_mode="0755",
            delete=True,
        )
    if item.template is not None:
        return files.template(
            name=f"Stage {item.live}",
            src=item.template,
            dest=staged,
            user=item.user,
            group=item.group,
            mode=item.mode,
            **item.data,
        )
    assert item.src is not None
    return files.put(
        name=f"Stage {item.live}",
        src=item.src,
        dest=staged,
        user=item.user,
        group=item.group,
        mode=item.mode,
    )


def _install(service: str, item: ConfigFile) -> str:
    staged, live = shlex.quote(item.staged(service)), shlex.quote(item.live)
    if item.directory:
        return (
            f"rm -rf {live}.new && cp -a {staged} {live}.new && rm -rf {live} "
            f"&& mv {live}.new {live}"
        )
    return f"install -D -m {item.mode} -o {item.user} -g {item.group} {staged} {live}"


def checked_config(
    service: str,
    items: list[ConfigFile],
    *,
    check: str,
    what: str,
) -> OperationMeta:
    """Stage `items`, run `check` (`{staged:<live path>}` placeholders name staged copies) and,
    when something changed or a live file drifted, install them. Returns the install operation:
    `keep_service(..., config_installed=it)` reloads the service after it."""
    staged_ops = [_stage(service, item) for item in items]
    drifted = any(
        host.get_fact(PathsDiffer, first=item.staged(service), second=item.live) for item in items
    )
    check_command = check
    for item in items:
        check_command = check_command.replace(
            f"{{staged:{item.live}}}", shlex.quote(item.staged(service))
        )
    return server.shell(
        name=f"Check {what} and install it",
        commands=[check_command, *(_install(service, item) for item in items)],
        # Also when a live file drifted from its staged copy (edited by hand): a redeploy puts
        # back what the repository says.
        _if=(lambda: True) if drifted else lambda: any(op.did_change() for op in staged_ops),
    )


def keep_service(
    service: str,
    *,
    config_installed: OperationMeta | None = None,
    flags: OperationMeta | None = None,
) -> None:
    kept = systemd.service(
        name=f"Keep {service} enabled and running"
        + ("; restart on new flags" if flags is not None else ""),
        service=service,
        running=True,
        enabled=True,
        restarted=flags.will_change if flags is not None else False,
    )
    if config_installed is not None:
        server.shell(
            name=f"Reload {service} after a config change",
            # reload-or-restart: also starts a service that an earlier bad config had stopped.
            commands=[f"systemctl reload-or-restart {service}"],
            # Not when the service was just (re)started above: it read the new config then,
            # and a SIGHUP that lands before it has set up its handler kills it (Prometheus).
            _if=lambda: config_installed.did_change() and not kept.did_change(),
        )

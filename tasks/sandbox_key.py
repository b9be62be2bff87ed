"""Disposable hosts: an admin client key for the drills and the read-only suite, created with
the operators' tool on the first API host and kept in the untracked secrets file
(SANDBOX_API_KEY, SANDBOX_API_KEY_ID), like the proxy's basic auth password. Production gets
none: its keys are made by operators (`make api-key`)."""

from __future__ import annotations

import json
import shlex

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import python

from tasks import topology
from tasks.common import replace_secret, secret
from tasks.facts import ClientKeyStatus

KEY_ENV = "SANDBOX_API_KEY"
KEY_ID_ENV = "SANDBOX_API_KEY_ID"


def _create(container: str, key_id: str) -> None:
    if key_id:
        # Asked again now: at planning time the database may have refused the tool (a password
        # being rotated by this very deploy), and the key may well be there.
        ok, now = host.run_shell_command(
            command=ClientKeyStatus().command(container, key_id), print_output=False
        )
        status = ClientKeyStatus().process(now.stdout_lines) if ok else "unknown"
        if status == "active":
            return
        if status == "unknown":
            raise DeployError(f"{host.name}: cannot tell whether the sandbox key exists")
    command = (
        f"docker exec {shlex.quote(container)} python -m techno_os_api.keys create "
        "--user sandbox-drills --name 'sandbox drills (made by the deploy)' --admin"
    )
    ok, output = host.run_shell_command(command=command, print_output=False)
    if not ok:
        raise DeployError(f"{host.name}: creating the sandbox key failed: {output.stderr}")
    created = json.loads(output.stdout)
    replace_secret(KEY_ID_ENV, created["id"], "The drills' admin client key, made by the deploy.")
    replace_secret(KEY_ENV, created["key"], "(its secret)")


@deploy("The drills' client key (disposable hosts only)")
def sandbox_key() -> None:
    api_hosts = topology.hosts_with("api")
    if not host.data.disposable or not api_hosts or host.name != api_hosts[0].name:
        return
    key_id = secret(KEY_ID_ENV)
    status = (
        host.get_fact(ClientKeyStatus, container=host.data.api_container, key_id=key_id)
        if key_id and secret(KEY_ENV)
        else "absent"
    )
    if status != "active":
        python.call(
            name="Create the drills' admin key (secrets file: SANDBOX_API_KEY)",
            function=_create,
            container=host.data.api_container,
            key_id=key_id,
        )

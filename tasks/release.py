"""API hosts: the API released without dropping a request (techno-os-release, blue/green behind
the host's front), one host at a time.

A release happens when the image, the .env or the price overrides changed, or when the live
release is not the one they describe (stopped, removed by hand). `make rollback` runs
`techno-os-release rollback` on each API host, one at a time (tools/release.py).
"""

from __future__ import annotations

import json
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from tasks import topology
from tasks.common import DataRules, check_data, fail, is_port
from tasks.environment import PRICES_IN_CONTAINER
from tasks.facts import ReleaseServing
from tasks.images import api_image

TOOL = "/usr/local/bin/techno-os-release"
TOOL_SOURCE = "files/scripts/techno_os_release.py"
SETTINGS = "/etc/techno-os/release.json"
STATE = "/var/lib/techno-os/releases.json"

DATA: DataRules = {
    "api_container": (str, bool, "a non-empty name"),
    "api_port": (int, is_port, "a TCP port (1-65535)"),
    "api_slot_ports": (
        list,
        lambda v: len(v) == 2 and all(isinstance(p, int) and is_port(p) for p in v),
        "two TCP ports",
    ),
    "api_ready_timeout_seconds": (int, lambda v: v > 0, "a positive number of seconds"),
    "api_drain_seconds": ((int, float), lambda v: v >= 2, "a number of seconds >= 2"),
    "api_graceful_shutdown_seconds": (int, lambda v: v > 0, "a positive number of seconds"),
    "api_stop_timeout_seconds": (int, lambda v: v > 0, "a positive number of seconds"),
    "keep_releases": (int, lambda v: 2 <= v <= 20, "a whole number from 2 to 20"),
}


def check() -> None:
    check_data(DATA)
    if host.data.api_port in host.data.api_slot_ports:
        raise fail("group data `api_port` must differ from the `api_slot_ports`")
    if host.data.api_stop_timeout_seconds <= host.data.api_graceful_shutdown_seconds:
        raise fail(
            "group data `api_stop_timeout_seconds` must exceed `api_graceful_shutdown_seconds`: "
            "the old release is killed before its requests in flight are done"
        )


def settings() -> dict[str, object]:
    data = host.data
    return {
        "container": data.api_container,
        "env_file": f"{data.backend_dir}/.env",
        "mounts": [f"{data.backend_dir}/llm-prices.json:{PRICES_IN_CONTAINER}:ro"],
        "slots": data.api_slot_ports,
        "front": f"127.0.0.1:{data.api_port}",
        # The front's runtime API (tasks/balancer.py): a release drains a slot through it.
        "haproxy_socket": "/run/haproxy/admin.sock",
        "front_backend": "api_slots",
        "ready_timeout": data.api_ready_timeout_seconds,
        "drain_seconds": data.api_drain_seconds,
        "drain_file": "/tmp/techno-os.draining",
        "stop_timeout": data.api_stop_timeout_seconds,
        "keep_releases": data.keep_releases,
        "log_max_size": data.container_log_max_size,
        "log_max_files": data.container_log_max_files,
        "state_file": STATE,
        "image_repository": api_image().tag.rsplit(":", 1)[0],
    }


@deploy("API release tool (techno-os-release) and its settings")
def release_tool() -> list[OperationMeta]:
    if not topology.has("api"):
        return []
    return [
        files.put(
            name=f"Install {TOOL}",
            src=TOOL_SOURCE,
            dest=TOOL,
            mode="0755",
        ),
        files.put(
            name=f"Release settings {SETTINGS}",
            src=StringIO(json.dumps(settings(), indent=2) + "\n"),
            dest=SETTINGS,
            mode="0644",
        ),
    ]


@deploy("Release the API on each API host, one at a time, without dropping a request")
def api_release(inputs: list[OperationMeta]) -> None:
    if not topology.has("api"):
        return
    image = api_image().tag
    serving = host.get_fact(ReleaseServing, image=image)
    server.shell(
        name=f"Release {image} (blue/green behind the front; the old one drains)",
        commands=[f"{TOOL} release {image}"],
        _if=any_changed(*inputs) if serving else (lambda: True),
        # One API host at a time: the others keep serving while one switches.
        _serial=True,
    )

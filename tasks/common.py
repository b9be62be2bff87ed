"""What the tasks share: failing with a message that names the host and the value, group data
type checks, the secrets, the app artifact, and rendering a template exactly as the deploy does.

Each tasks/ module validates its own inputs in a `check()` function; tasks/validate.py calls them
all while the deploy is being planned, so a bad value stops it before anything touches a host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api.exceptions import DeployError

REPO = Path(__file__).resolve().parent.parent

# name -> (type, predicate, what the predicate demands)
DataRules = Mapping[str, tuple[type | tuple[type, ...], Callable[[Any], bool], str]]


def fail(message: str) -> DeployError:
    return DeployError(f"{host.name}: {message}")


def check_data(rules: DataRules) -> None:
    for name, (kind, predicate, demand) in rules.items():
        value = host.data.get(name)
        wrong_type = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong_type or not predicate(value):
            raise fail(f"group data `{name}` = {value!r} must be {demand}")


def is_path(value: str) -> bool:
    return value.startswith("/")


def is_duration(value: str) -> bool:
    return re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", value) is not None


def duration_seconds(value: str) -> float:
    """A duration of the services' configs (`is_duration`: 1m30s, 500ms, 10m) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", value))


def is_port(value: int) -> bool:
    return 0 < value < 65536


def host_group() -> str:
    """The environment group (local, cluster, prod): the inventory's first group, not a role."""
    roles = {"edge", "db", "api", "backup", "all"}
    groups = [g for g in host.groups if g not in roles]
    return groups[0] if groups else "all"


# --- secrets -----------------------------------------------------------------------------------
@cache
def _secrets_for(group: str, secrets_file: str) -> dict[str, str]:
    path = REPO / secrets_file.format(group=group)
    values: dict[str, str] = {}
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise DeployError(f"{path} is readable by others: chmod 600 {path}")
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise DeployError(f"{path}:{number}: expected KEY=VALUE")
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def secrets_path() -> Path:
    return REPO / host.data.secrets_file.format(group=host_group())


def secret(key: str) -> str:
    """A secret: the operator's environment, then the secrets file ("" when absent)."""
    from_file = _secrets_for(host_group(), host.data.secrets_file)
    return os.environ.get(key) or from_file.get(key, "")


def required_secret(key: str) -> str:
    value = secret(key)
    if not value:
        where = host.data.secrets_file.format(group=host_group())
        raise fail(f"{key} is missing: set it in the environment or in {where} (untracked)")
    if any(c in value for c in "\n\r\"'$`\\ "):
        raise fail(f"{key} contains a character that cannot go into a .env file")
    return value


def append_secrets(values: Mapping[str, str], comment: str) -> None:
    """Add generated secrets (disposable hosts) to the secrets file, mode 0600."""
    from contextlib import suppress

    path = secrets_path()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        with suppress(OSError):
            if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
                out.write("\n")
        out.write(f"# {comment}\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    _secrets_for.cache_clear()


def replace_secret(key: str, value: str, comment: str) -> None:
    """Set one generated secret in the secrets file, dropping an older value of it."""
    path = secrets_path()
    if path.exists():
        kept = [
            line for line in path.read_text().splitlines() if not line.strip().startswith(f"{key}=")
        ]
        path.write_text("\n".join(kept) + ("\n" if kept else ""))
        path.chmod(0o600)
    append_secrets({key: value}, comment)


# --- the app artifact --------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    version: str
    directory: Path
    wheel: str
    wheelhouses: dict[str, str]
    known_providers: tuple[str, ...]
    migration_head: str
    images: dict[str, dict[str, str]]

    @property
    def real_providers(self) -> tuple[str, ...]:
        return tuple(p for p in self.known_providers if p != "fake")


@cache
def _artifact(directory: str) -> Artifact:
    manifest = Path(directory) / "manifest.json"
    if not manifest.exists():
        raise DeployError(f"{manifest} is missing: build the app artifact first (make artifact)")
    data = json.loads(manifest.read_text())
    missing = {"known_providers", "migration_head"} - set(data)
    if missing:
        raise DeployError(f"{manifest} lacks {sorted(missing)}: rebuild it (make artifact)")
    return Artifact(
        data["version"],
        Path(directory),
        data["wheel"],
        data["wheelhouses"],
        tuple(data["known_providers"]),
        data["migration_head"],
        data.get("images", {}),
    )


def artifact() -> Artifact:
    return _artifact(str(REPO / host.data.artifact_dir))


def run_artifact(code: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run Python with the artifact's wheel first on sys.path: checks by the release's own code,
    never the source tree's."""
    wheel = artifact().directory / artifact().wheel
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(wheel)!r}); {code}"],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- templates ---------------------------------------------------------------------------------
def render(template: str, **data: object) -> str:
    """A template rendered exactly as files.template renders it (same loader, same context)."""
    from pyinfra.api.util import get_template

    return get_template(str(REPO / template)).render({"host": host, **data})


def check_with_tool(
    argv: list[str], files: Mapping[str, str], what: str, redact: tuple[str, ...] = ()
) -> None:
    """Write `files` (relative name -> text) into a temporary directory and run a service's own
    checker on them on this machine: `{dir}` in argv is that directory. `redact`: secrets the
    files hold, kept out of the message."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        command = [arg.replace("{dir}", tmp) for arg in argv]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise DeployError(f"{argv[0]} is missing on this machine (make host-deps)") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).replace(tmp, "")
        for value in redact:
            if value:
                output = output.replace(value, "<secret>")
        raise fail(f"{what} is invalid ({' '.join(argv[:2])}):\n{output}")

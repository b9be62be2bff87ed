"""The deploy's inputs, read and checked on the control machine before anything touches a host.

Every check raises DeployError with a message that names the offending value, so a bad inventory
value, a missing key or an invalid Prometheus config stops the deploy before its first change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pyinfra import host
from pyinfra.api.exceptions import DeployError

REPO = Path(__file__).resolve().parent.parent
# The app owns the list of providers it can call; the deploy validates against the same list.
from techno_os_api.core.config import KNOWN_PROVIDERS  # noqa: E402

REAL_PROVIDERS = tuple(name for name in KNOWN_PROVIDERS if name != "fake")

# name -> (type, predicate, what the predicate demands)
_DATA_RULES: dict[str, tuple[type | tuple[type, ...], object, str]] = {
    "backend_dir": (str, lambda v: v.startswith("/"), "an absolute path"),
    "scripts_dir": (str, lambda v: v.startswith("/"), "an absolute path"),
    "backup_dir": (str, lambda v: v.startswith("/"), "an absolute path"),
    "build_dir": (str, lambda v: v.startswith("/"), "an absolute path"),
    "backup_log": (str, lambda v: v.startswith("/"), "an absolute path"),
    "compose_project": (str, lambda v: v.replace("-", "").replace("_", "").isalnum(),
                        "letters, digits, '-' and '_'"),
    "api_container": (str, bool, "a non-empty name"),
    "db_container": (str, bool, "a non-empty name"),
    "db_user": (str, lambda v: v.isidentifier(), "a plain identifier"),
    "db_name": (str, lambda v: v.isidentifier(), "a plain identifier"),
    "api_port": (int, lambda v: 0 < v < 65536, "a TCP port (1-65535)"),
    "retention_days": (int, lambda v: v >= 1, "a whole number of days >= 1"),
    "llm_timeout_seconds": ((int, float), lambda v: v > 0, "a positive number of seconds"),
    "llm_circuit_failure_threshold": (int, lambda v: v >= 1, "a whole number >= 1"),
    "llm_circuit_cooldown_seconds": ((int, float), lambda v: v > 0, "a positive number"),
    "backup_cron_schedule": (str, lambda v: len(v.split()) == 5, "five cron fields"),
    "llm_allowed_providers": (list, lambda v: all(isinstance(p, str) for p in v),
                              "a list of provider names"),
    "llm_provider": (str, bool, "a provider name"),
    "llm_base_urls": (dict, lambda v: all(u.startswith(("http://", "https://"))
                                          for u in v.values()), "provider -> http(s) URL"),
    "disposable": (bool, lambda v: True, "True or False"),
    "llm_standin": (bool, lambda v: True, "True or False"),
}  # fmt: skip


@dataclass(frozen=True)
class Artifact:
    version: str
    directory: Path
    wheel: str
    wheelhouses: dict[str, str]


def fail(message: str) -> DeployError:
    return DeployError(f"{host.name}: {message}")


def host_group() -> str:
    groups = [g for g in host.groups if g != "all"]
    return groups[0] if groups else "all"


def check_host_data() -> None:
    for name, (kind, predicate, demand) in _DATA_RULES.items():
        value = host.data.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(f"group data `{name}` = {value!r} must be {demand}")
        if not predicate(value):  # type: ignore[operator]
            raise fail(f"group data `{name}` = {value!r} must be {demand}")
    if host.data.llm_standin and not host.data.disposable:
        raise fail("group data `llm_standin` = True is only allowed on a disposable host")


def check_providers() -> None:
    allowed = host.data.llm_allowed_providers
    unknown = sorted(set(allowed) - set(KNOWN_PROVIDERS))
    if unknown:
        raise fail(
            f"group data `llm_allowed_providers` names unknown provider(s) {unknown}; "
            f"known: {list(KNOWN_PROVIDERS)}"
        )
    if host.data.llm_provider not in allowed:
        raise fail(
            f"group data `llm_provider` = {host.data.llm_provider!r} is not in "
            f"`llm_allowed_providers` = {allowed}"
        )
    for provider in host.data.llm_base_urls:
        if provider not in KNOWN_PROVIDERS:
            raise fail(f"group data `llm_base_urls` names unknown provider {provider!r}")


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


def secrets() -> dict[str, str]:
    """DB_PASSWORD and the API keys of the allowed real providers: environment, then file."""
    from_file = _secrets_for(host_group(), host.data.secrets_file)
    wanted = ["DB_PASSWORD"] + [
        f"{p.upper()}_API_KEY" for p in host.data.llm_allowed_providers if p in REAL_PROVIDERS
    ]
    found = {}
    for key in wanted:
        value = os.environ.get(key) or from_file.get(key)
        if not value:
            where = host.data.secrets_file.format(group=host_group())
            raise fail(f"{key} is missing: set it in the environment or in {where} (untracked)")
        if any(c in value for c in "\n\r\"'$`\\ "):
            raise fail(f"{key} contains a character that cannot go into a .env file")
        found[key] = value
    return found


@cache
def _artifact(directory: str) -> Artifact:
    manifest = Path(directory) / "manifest.json"
    if not manifest.exists():
        raise DeployError(f"{manifest} is missing: build the app artifact first (make artifact)")
    data = json.loads(manifest.read_text())
    return Artifact(data["version"], Path(directory), data["wheel"], data["wheelhouses"])


def artifact() -> Artifact:
    return _artifact(str(REPO / host.data.artifact_dir))


def check_prometheus_config() -> None:
    _check_prometheus_config(
        str(REPO / host.data.prometheus_config_file), str(REPO / host.data.prometheus_rules_dir)
    )


@cache
def _check_prometheus_config(config_file: str, rules_dir: str) -> None:
    """promtool here, on the files laid out as on the host (rule_files are relative: rules/)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise DeployError("promtool is missing on this machine: apt-get install prometheus")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(config_file, Path(tmp) / "prometheus.yml")
        shutil.copytree(rules_dir, Path(tmp) / "rules")
        command = [promtool, "check", "config", str(Path(tmp) / "prometheus.yml")]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).replace(tmp, "")
            raise DeployError(
                f"{config_file} or the rules in {rules_dir} are invalid "
                f"(promtool check config):\n{output}"
            )

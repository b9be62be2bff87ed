"""The deploy's inputs, read and checked on the control machine before anything touches a host.

Every check raises DeployError with a message that names the offending value, so a bad inventory
value, a missing key or an invalid Prometheus config stops the deploy before its first change.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
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
# The rules' severities (files/prometheus/alerts.yml): Alertmanager has a route for each.
ALERT_SEVERITIES = ("critical", "warning")
TLS_MODES = ("acme", "files", "internal")
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


def _is_duration(value: str) -> bool:
    return re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", value) is not None


def _is_domain(value: str) -> bool:
    label = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    return len(value) <= 200 and re.fullmatch(rf"({label}\.)+{label}", value) is not None


def _is_loopback_address(value: str) -> bool:
    address, _, port = value.rpartition(":")
    try:
        return port.isdigit() and ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


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
    # Alerting and exposure (tasks/alertmanager.py, tasks/proxy.py); more in check_alerting/proxy.
    "alertmanager_listen_address": (str, lambda v: _is_loopback_address(v), "a loopback host:port"),
    "alert_webhook_url": (str, lambda v: not v or v.startswith(("http://", "https://")),
                          "empty or an http(s) URL"),
    "alert_email_to": (dict, lambda v: all(isinstance(a, list) and all(
                           isinstance(x, str) and "@" in x for x in a) for a in v.values()),
                       "severity -> list of e-mail addresses"),
    "alert_email_from": (str, lambda v: not v or "@" in v, "empty or an e-mail address"),
    "alert_smtp_smarthost": (str, lambda v: not v or v.rpartition(":")[2].isdigit(),
                             "empty or host:port"),
    "alert_smtp_username": (str, lambda v: True, "a string"),
    "alert_smtp_require_tls": (bool, lambda v: True, "True or False"),
    "alertmanager_group_wait": (str, lambda v: _is_duration(v), "a duration such as 30s or 5m"),
    "alertmanager_group_interval": (str, lambda v: _is_duration(v), "a duration such as 5m"),
    "alertmanager_repeat_interval": (dict, lambda v: all(_is_duration(d) for d in v.values()),
                                     "severity -> duration such as 4h"),
    "alert_webhook_sink": (bool, lambda v: True, "True or False"),
    "public_domain": (str, lambda v: _is_domain(v), "a DNS name such as example.com"),
    "tls_mode": (str, lambda v: v in TLS_MODES, f"one of {TLS_MODES}"),
    "acme_email": (str, lambda v: not v or "@" in v, "empty or an e-mail address"),
    "tls_cert_file": (str, lambda v: not v or v.startswith("/"), "empty or an absolute path"),
    "tls_key_file": (str, lambda v: not v or v.startswith("/"), "empty or an absolute path"),
    "proxy_basic_auth_user": (str, lambda v: re.fullmatch(r"[A-Za-z0-9._-]+", v) is not None,
                              "a user name of letters, digits, '.', '_' and '-'"),
    "hsts_max_age_seconds": (int, lambda v: v >= 0, "a whole number of seconds"),
    "public_ports": (list, lambda v: all(isinstance(p, int) for p in v), "a list of TCP ports"),
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


# --- Alerting and exposure (tasks/alertmanager.py, tasks/proxy.py) ----------------------------
def _secret(key: str) -> str:
    """An optional secret: the operator's environment, then the secrets file ("" when absent)."""
    from_file = _secrets_for(host_group(), host.data.secrets_file)
    return os.environ.get(key) or from_file.get(key, "")


def render(template: str, **data: object) -> str:
    """A template rendered exactly as files.template renders it (same loader, same context)."""
    from pyinfra.api.util import get_template

    return get_template(str(REPO / template)).render({"host": host, **data})


def alerting_secrets() -> dict[str, str]:
    """The receiver settings that may be secret: the webhook URL and the SMTP password."""
    webhook_url = host.data.alert_webhook_url or _secret("ALERT_WEBHOOK_URL")
    if webhook_url and not webhook_url.startswith(("http://", "https://")):
        raise fail("ALERT_WEBHOOK_URL must be an http(s) URL")
    smtp_password = _secret("ALERT_SMTP_PASSWORD") if host.data.alert_smtp_username else ""
    if host.data.alert_smtp_username and not smtp_password:
        where = host.data.secrets_file.format(group=host_group())
        raise fail(
            f"group data `alert_smtp_username` = {host.data.alert_smtp_username!r} needs "
            f"ALERT_SMTP_PASSWORD: set it in the environment or in {where} (untracked)"
        )
    return {"webhook_url": webhook_url, "smtp_password": smtp_password}


def _rule_severities() -> set[str]:
    import yaml

    rules_dir = REPO / host.data.get("prometheus_rules_dir", "files/prometheus")
    found = set()
    for rule_file in sorted(rules_dir.glob("*.yml")):
        for group in (yaml.safe_load(rule_file.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    found.add(rule.get("labels", {}).get("severity", "<none>"))
    return found


def check_alerting() -> None:
    """Receivers for every severity, the sink only where drills may run, amtool on the config."""
    if host.data.alert_webhook_sink and not host.data.disposable:
        raise fail("group data `alert_webhook_sink` = True is only allowed on a disposable host")
    unrouted = sorted(_rule_severities() - set(ALERT_SEVERITIES))
    if unrouted:
        raise fail(f"alert rules use severities {unrouted} that Alertmanager does not route")
    for key in ("alert_email_to", "alertmanager_repeat_interval"):
        unknown = sorted(set(host.data.get(key)) - set(ALERT_SEVERITIES))
        if unknown:
            raise fail(f"group data `{key}` names unknown severities {unknown}")
    missing = sorted(set(ALERT_SEVERITIES) - set(host.data.alertmanager_repeat_interval))
    if missing:
        raise fail(f"group data `alertmanager_repeat_interval` lacks severities {missing}")
    receiver = alerting_secrets()
    if any(host.data.alert_email_to.values()):
        for key in ("alert_email_from", "alert_smtp_smarthost"):
            if not host.data.get(key):
                raise fail(f"group data `{key}` is required when `alert_email_to` has addresses")
    for severity in ALERT_SEVERITIES:
        if not receiver["webhook_url"] and not host.data.alert_email_to.get(severity):
            raise fail(
                f"no receiver for `{severity}` alerts: set group data `alert_webhook_url` (or "
                f"the secret ALERT_WEBHOOK_URL) or `alert_email_to[{severity!r}]`"
            )
    _check_alertmanager_config(alertmanager_config())


def alertmanager_config() -> str:
    return render(
        "templates/alertmanager.yml.j2", severities=ALERT_SEVERITIES, **alerting_secrets()
    )


@cache
def _check_alertmanager_config(text: str) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        raise DeployError(
            "amtool is missing on this machine: apt-get install prometheus-alertmanager"
        )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "alertmanager.yml"
        config.write_text(text)
        result = subprocess.run(
            [amtool, "check-config", str(config)], capture_output=True, text=True
        )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).replace(tmp, "")
        for value in alerting_secrets().values():
            if value:
                output = output.replace(value, "<secret>")
        raise DeployError(
            f"{host.name}: templates/alertmanager.yml.j2 renders an invalid Alertmanager config "
            f"(amtool check-config):\n{output}"
        )


def _generate_sandbox_basic_auth(path: Path) -> None:
    """A disposable host's proxy password and its bcrypt hash, appended to its secrets file."""
    import secrets as token
    from contextlib import suppress

    import bcrypt

    password = token.token_urlsafe(18)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        with suppress(OSError):
            if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
                out.write("\n")
        out.write(
            "# Reverse proxy basic auth (Prometheus, Alertmanager), made by the deploy.\n"
            f"PROXY_BASIC_AUTH_PASSWORD={password}\nPROXY_BASIC_AUTH_HASH={hashed}\n"
        )
    _secrets_for.cache_clear()


def proxy_basic_auth_hash() -> str:
    """PROXY_BASIC_AUTH_HASH (bcrypt); generated with its password on a disposable host."""
    hashed = _secret("PROXY_BASIC_AUTH_HASH")
    where = host.data.secrets_file.format(group=host_group())
    if not hashed and host.data.disposable:
        _generate_sandbox_basic_auth(REPO / where)
        hashed = _secret("PROXY_BASIC_AUTH_HASH")
    if not hashed:
        raise fail(
            f"PROXY_BASIC_AUTH_HASH is missing: set a bcrypt hash in the environment or in {where} "
            "(untracked), e.g. `caddy hash-password` or "
            "`python3 -c 'import bcrypt,getpass; "
            "print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt()).decode())'`"
        )
    if not _BCRYPT.fullmatch(hashed):
        raise fail("PROXY_BASIC_AUTH_HASH is not a bcrypt hash ($2a$/$2b$/$2y$, 60 characters)")
    return hashed


def check_proxy() -> None:
    if host.data.tls_mode == "files" and not (host.data.tls_cert_file and host.data.tls_key_file):
        raise fail("group data `tls_mode` = 'files' needs `tls_cert_file` and `tls_key_file`")
    if host.data.tls_mode == "internal" and not host.data.disposable:
        raise fail(
            "group data `tls_mode` = 'internal' (a local CA no browser trusts) is only allowed "
            "on a disposable host: use 'acme' or 'files'"
        )
    bad = sorted(set(host.data.public_ports) - {22, 80, 443})
    if bad:
        raise fail(f"group data `public_ports` names {bad}: only SSH and the proxy (80, 443)")
    proxy_basic_auth_hash()

"""What the runbook suites share: the hosts of the pyinfra inventory, one polling helper, and small
readers (HTTP through curl on the host, Prometheus' HTTP API, `docker inspect`, `.env`, listening
sockets). Nothing here asserts a runbook expectation; the test modules do.

Every command runs on the target host over SSH, exactly as an operator would type it there, so
the same suite checks the sandbox and production unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
DEFAULT_INVENTORY = "inventories/local.py"

# Defaults of docs/architecture.md, used when group data does not name a value.
DEFAULTS: dict[str, Any] = {
    "db_port": 5432,
    "node_exporter_port": 9100,
    "api_slot_ports": [8001, 8002],
    "api_balancer_port": 8100,
    "balancer_metrics_port": 8405,
    "postgres_exporter_port": 9187,
    "keep_releases": 3,
    "backend_dir": "/opt/techno-os/app/backend",
    "scripts_dir": "/opt/techno-os/scripts",
    "backup_dir": "/opt/techno-os/backups/observability",
    "backup_log": "/var/log/backup_obs.log",
    "textfile_collector_dir": "/var/lib/prometheus/node-exporter",
    "compose_project": "techno-os-backend",
    "api_container": "techno-os-api",
    "db_container": "techno-os-db",
    "db_volume": "techno-os-backend_postgres_data",
    "db_user": "techno_user",
    "db_name": "techno_os",
    "api_port": 8000,
    "prometheus_listen_address": "127.0.0.1:9090",
    "prometheus_config": "/etc/prometheus/prometheus.yml",
    "base_image": "techno-os/debian:bookworm",
    "backup_cron_schedule": "0 2 * * *",
    "retention_days": 7,
    "llm_timeout_seconds": 30,
    "llm_circuit_failure_threshold": 3,
    "llm_circuit_cooldown_seconds": 60,
    "disposable": False,
    "llm_standin": False,
    "standin_port": 8080,
    "secrets_file": "secrets/{group}.env",
}
FALLBACK_KNOWN_PROVIDERS = ("fake", "openai", "anthropic", "google", "xai", "deepseek")

T = TypeVar("T")


# --- waiting ---------------------------------------------------------------------------------
class WaitTimeout(AssertionError):
    """A condition was not reached before its deadline (a test failure, not an error)."""


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
) -> T:
    """Call `probe` until it returns a truthy value and return that value; on the deadline fail
    with `what` and the last value or exception seen. The suite's only way of waiting."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except (AssertionError, RuntimeError, OSError, ValueError, KeyError) as exc:
            value, last = None, exc  # type: ignore[assignment]
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what}: not reached within {timeout:.0f} s (last: {last!r:.500})")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# --- the inventory (pyinfra's own loader, shared with tools/) -----------------------------------
sys.path.insert(0, str(REPO / "tools"))
# The deploy's own helpers (tasks/), where a check must agree with what the deploy does.
sys.path.insert(1, str(REPO))
from inventory import InventoryHost  # noqa: E402
from inventory import load_inventory as _load  # noqa: E402
from inventory import ssh_argv as ssh_argv  # noqa: E402  (for the drills' SSH tunnel)


@cache
def inventory_path() -> str:
    return os.environ.get("INVENTORY", DEFAULT_INVENTORY)


def load_inventory(path: str | None = None) -> tuple[InventoryHost, ...]:
    return _load(path or inventory_path())


# --- the operators' key tool ------------------------------------------------------------------
def api_key_tool(*args: str) -> dict[str, Any]:
    """`make api-key ARGS=...` (tools/api_key.py) against the inventory; its JSON answer."""
    import subprocess

    run = subprocess.run(
        [sys.executable, "tools/api_key.py", inventory_path(), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"api_key.py {args[0]}: exit {run.returncode}: {run.stderr[-800:]}"
    return json.loads(run.stdout)


# --- HTTP through curl on the host ------------------------------------------------------------
@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: str
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


def parse_curl_include(raw: str) -> HttpResponse:
    """Split `curl -i` output (possibly several header blocks, e.g. 100 Continue)."""
    rest = raw
    status, headers = 0, {}
    while rest.startswith("HTTP/"):
        head, sep, rest = rest.partition("\r\n\r\n")
        if not sep:
            head, sep, rest = head.partition("\n\n")
        lines = head.splitlines()
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return HttpResponse(status, headers, rest)


# --- Prometheus text format -----------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def family(self, name: str) -> list[Sample]:
        suffixes = ("", "_total", "_created", "_bucket", "_sum", "_count")
        base = name.removesuffix("_total")
        return [s for s in self.samples if s.name in {base + x for x in suffixes} | {name}]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


def parse_exposition(text: str) -> Exposition:
    out = Exposition()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            out.types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line.strip())
            if m:
                labels = dict(_LABEL.findall(m.group(3) or ""))
                out.samples.append(Sample(m.group(1), labels, float(m.group(4))))
    return out


def parse_env_file(text: str) -> dict[str, str]:
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def parse_proc_net_tcp(text: str, v6: bool) -> list[tuple[str, int]]:
    """Listening sockets (state 0A) of /proc/net/tcp{,6} as (address, port)."""
    import ipaddress

    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or parts[3] != "0A":
            continue
        hexaddr, hexport = parts[1].split(":")
        raw = bytes.fromhex(hexaddr)
        if v6:  # four little-endian 32-bit words
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
            addr = ipaddress.IPv6Address(raw)
            address = str(addr.ipv4_mapped or addr)
        else:
            address = str(ipaddress.IPv4Address(raw[::-1]))
        out.append((address, int(hexport, 16)))
    return out


def is_loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address).is_loopback


# --- the target host --------------------------------------------------------------------------
ROLES = ("edge", "db", "api", "backup")


def secret(data: dict[str, Any], groups: tuple[str, ...], key: str) -> str | None:
    """A sandbox secret the deploy generated (basic auth password, the drills' client key):
    the environment, else the inventory's untracked secrets file."""
    if os.environ.get(key):
        return os.environ[key]
    environment = next((g for g in groups if g not in (*ROLES, "all")), "all")
    path = REPO / str(data.get("secrets_file") or DEFAULTS["secrets_file"]).format(
        group=environment
    )
    if path.exists():
        return parse_env_file(path.read_text()).get(key)
    return None


class Target:
    """One inventory host: its testinfra Host (`.host`), its merged group data, its roles, and
    readers."""

    def __init__(self, inv: InventoryHost, host: Any) -> None:
        self.name = inv.name
        self.groups = inv.groups
        self.data = inv.data
        self.host = host

    def has(self, role: str) -> bool:
        return role in self.groups

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r for r in ROLES if r in self.groups)

    @property
    def private_address(self) -> str:
        return str(self.data.get("private_address") or "127.0.0.1")

    @property
    def api_key(self) -> str | None:
        """The drills' admin client key (disposable hosts: made by the deploy), if known."""
        return secret(self.data, self.groups, "SANDBOX_API_KEY")

    def __repr__(self) -> str:
        return f"<Target {self.name}>"

    # data
    def cfg(self, key: str) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        return DEFAULTS[key]

    @property
    def disposable(self) -> bool:
        return self.data.get("disposable") is True

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg('api_port')}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.cfg('prometheus_listen_address')}"

    @property
    def known_providers(self) -> tuple[str, ...]:
        if self.data.get("known_providers"):
            return tuple(self.data["known_providers"])
        try:
            from techno_os_api.core.config import KNOWN_PROVIDERS

            return tuple(KNOWN_PROVIDERS)
        except ImportError:
            return FALLBACK_KNOWN_PROVIDERS

    # commands
    def run(self, command: str, *args: Any) -> Any:
        return self.host.run(command, *[str(a) for a in args])

    def check(self, command: str, *args: Any) -> str:
        """Run and require exit status 0; return stdout."""
        result = self.run(command, *args)
        shown = result.command
        shown = shown.decode(errors="replace") if isinstance(shown, bytes) else shown
        assert result.rc == 0, (
            f"`{shown[:300]}` on {self.name} exited {result.rc}: "
            f"{(result.stderr or result.stdout).strip()[:800]}"
        )
        return result.stdout

    def http(
        self,
        method: str,
        url: str,
        body: Any = None,
        timeout: float = 10,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """An HTTP request made with curl on the host (status 0 when nothing answered)."""
        cmd = "curl -sS -i -m %s -X %s"
        args: list[Any] = [timeout, method]
        for name, value in (headers or {}).items():
            cmd += " -H %s"
            args.append(f"{name}: {value}")
        if body is not None:
            cmd += " -H 'Content-Type: application/json' --data-binary %s"
            args.append(body if isinstance(body, str) else json.dumps(body))
        cmd += " %s"
        args.append(url)
        started = time.monotonic()
        result = self.run(cmd, *args)
        elapsed = time.monotonic() - started
        if result.rc != 0:
            return HttpResponse(0, {}, (result.stderr or "").strip(), elapsed)
        response = parse_curl_include(result.stdout)
        response.seconds = elapsed
        return response

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 10,
        key: str | None = "",
    ) -> HttpResponse:
        """A request to the API through the host's front; with the drills' client key unless
        `key` is None (anonymous) or another key."""
        key = self.api_key if key == "" else key
        headers = {"Authorization": f"Bearer {key}"} if key else None
        return self.http(method, self.api_url + path, body, timeout, headers)

    def metrics(self) -> Exposition:
        response = self.api("GET", "/metrics")
        assert response.status == 200, f"/metrics answered {response.status}: {response.body}"
        return parse_exposition(response.body)

    def prom(self, path: str, **params: str) -> dict[str, Any]:
        """GET Prometheus' HTTP API on the host; returns the decoded `data` (fails on error)."""
        cmd = "curl -sS -G -m 10 " + " ".join("--data-urlencode %s" for _ in params) + " %s"
        args = [f"{k}={v}" for k, v in params.items()] + [self.prometheus_url + path]
        out = self.check(cmd, *args)
        payload = json.loads(out)
        assert payload.get("status") == "success", f"Prometheus {path} {params}: {payload}"
        return payload["data"]

    def prom_query_raw(self, expr: str) -> dict[str, Any]:
        """The whole JSON answer of an instant query (status, data, error, warnings)."""
        out = self.check(
            "curl -sS -G -m 10 --data-urlencode %s %s",
            f"query={expr}",
            self.prometheus_url + "/api/v1/query",
        )
        return json.loads(out)

    def prom_query(self, expr: str) -> list[dict[str, Any]]:
        payload = self.prom_query_raw(expr)
        assert payload.get("status") == "success", f"PromQL {expr!r}: {payload}"
        result = payload["data"]["result"]
        return result if isinstance(result, list) else [result]

    def prom_values(self, expr: str) -> list[float]:
        return [float(r["value"][1]) for r in self.prom_query(expr)]

    def inspect(self, name: str) -> dict[str, Any] | None:
        result = self.run("docker inspect --type container %s", name)
        if result.rc != 0:
            return None
        return json.loads(result.stdout)[0]

    def env_file(self) -> dict[str, str]:
        """The deployed .env (root-only). Values are secrets: never put them in a message."""
        return parse_env_file(self.check("cat %s", f"{self.cfg('backend_dir')}/.env"))

    def listeners(self) -> list[tuple[str, int]]:
        out = parse_proc_net_tcp(self.check("cat /proc/net/tcp"), v6=False)
        v6 = self.run("cat /proc/net/tcp6")
        if v6.rc == 0:
            out += parse_proc_net_tcp(v6.stdout, v6=True)
        return out

    def container_ip(self, name: str) -> str:
        info = self.inspect(name)
        assert info, f"container {name} does not exist on {self.name}"
        ips = [n.get("IPAddress") for n in info["NetworkSettings"]["Networks"].values()]
        ips = [ip for ip in ips if ip]
        assert ips, f"container {name} has no IP address"
        return ips[0]

    # waiting for the stack
    def wait_api_healthy(self, timeout: float = 120) -> None:
        wait_until(
            lambda: self.api("GET", "/health", timeout=5).status == 200,
            timeout=timeout,
            what=f"{self.name}: API /health answers 200",
        )

    def wait_api_ready(self, timeout: float = 120) -> None:
        wait_until(
            lambda: self.api("GET", "/ready", timeout=5).status == 200,
            timeout=timeout,
            what=f"{self.name}: API /ready answers 200 (database reachable)",
        )

    def wait_container_healthy(self, name: str, timeout: float = 120) -> None:
        def healthy() -> bool:
            info = self.inspect(name)
            return bool(info) and info["State"].get("Health", {}).get("Status") == "healthy"

        wait_until(healthy, timeout=timeout, what=f"{self.name}: container {name} healthy")

    def wait_prometheus_healthy(self, timeout: float = 60) -> None:
        wait_until(
            lambda: self.http("GET", self.prometheus_url + "/-/ready", timeout=5).status == 200,
            timeout=timeout,
            what=f"{self.name}: Prometheus ready",
        )


def ssh_options(data: dict[str, Any], control_dir: str) -> dict[str, Any]:
    """testinfra `ssh` backend arguments from pyinfra's SSH data keys. The operator's own
    ~/.ssh/config stays in effect (production aliases, ProxyJump); the inventory's values win."""
    extra = ["-o BatchMode=yes", f"-o ControlPath={shlex.quote(control_dir)}/%C"]
    known = data.get("ssh_known_hosts_file")
    if known:
        known = str(Path(known) if Path(known).is_absolute() else REPO / known)
        extra.append(f"-o UserKnownHostsFile={shlex.quote(known)}")
    strict = data.get("ssh_strict_host_key_checking")
    if strict is not None:
        strict = {True: "yes", False: "no"}.get(strict, strict)
        extra.append(f"-o StrictHostKeyChecking={shlex.quote(str(strict))}")
    options: dict[str, Any] = {"ssh_extra_args": " ".join(extra), "timeout": 15}
    key = data.get("ssh_key")
    if key:
        key = str(Path(key).expanduser() if Path(key).expanduser().is_absolute() else REPO / key)
        options["ssh_identity_file"] = key
        extra.append("-o IdentitiesOnly=yes")
        options["ssh_extra_args"] = " ".join(extra)
    user = data.get("ssh_user")
    if (user and user != "root") or data.get("_sudo"):
        options["sudo"] = True
    return options


def hostspec(name: str, data: dict[str, Any]) -> str:
    address = data.get("ssh_hostname") or name
    if ":" in address:
        address = f"[{address}]"
    user = data.get("ssh_user")
    port = data.get("ssh_port")
    spec = f"ssh://{user + '@' if user else ''}{address}"
    return spec + (f":{port}" if port else "")


def lines_matching(text: str, patterns: Iterable[str]) -> list[str]:
    regex = re.compile("|".join(patterns))
    return [line for line in text.splitlines() if regex.search(line)]

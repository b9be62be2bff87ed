#!/usr/bin/env python3
"""Gateway overhead: the API (one uvicorn worker, fake provider) side by side with a bare uvicorn
app returning a constant, in the same run, with wrk on loopback.

    python bench/bench_gateway.py                   # 10 s per case, 32 connections
    python bench/bench_gateway.py --duration 5 --json reports/bench_gateway.json

Servers, run in --rounds alternating rounds per case (medians reported):
  bare         a constant answer: the floor
  noauth       the API with the client-key dependency replaced by a fixed key: no auth at all
  api          the API with a client key (cached after its first call), no shared limits
  api-limited  the same API with a key whose rpm, tpm and budget are admitted and settled in
               PostgreSQL on every call (limits far above the load: nothing is refused)
Cases: GET /health and POST /v1/chat/completions (fake) with --connections connections
(throughput) and with one connection (no queueing: the added p50 is the per-request cost).
The API's resident memory (VmRSS) is sampled while it is under load. The servers are pinned to
CPU 0 and wrk to CPU 1 when `taskset` and two CPUs are available, so they do not compete
(PostgreSQL, started here from Debian's binaries like the app tests', is not pinned).
Everything listens on 127.0.0.1; every load run is bounded by --duration.

Needs wrk (`apt-get install wrk`), PostgreSQL 15 (`apt-get install postgresql-15`) and the app
installed in this interpreter (`pip install -e app`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CHAT_SCRIPT = BENCH / "gateway_chat.lua"
CHAT = "/v1/chat/completions"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Result:
    server: str
    case: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinning() -> tuple[list[str], list[str]]:
    """taskset prefixes for (servers, wrk)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    return [], []


@contextlib.contextmanager
def serve(argv: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"server {' '.join(argv)} did not start:\n{stderr}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wrk(
    prefix: list[str], url: str, connections: int, duration: float, script: Path | None
) -> tuple[float, float, float, int]:
    argv = [
        *prefix,
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    if script:
        argv += ["--script", str(script)]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 30)
    text = out.stdout

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no {percent}% latency in wrk output:\n{text}")
        return float(match.group(1)) * UNITS[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{text}")
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors:.*?timeout (\d+)"):
        match = re.search(pattern, text)
        if match:
            errors += int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", text)
    if match:
        errors += sum(int(g) for g in match.groups())
    return float(rps.group(1)), latency("50"), latency("99"), errors


class RssSampler:
    """Peak VmRSS of a process, sampled every 100 ms while active."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError):
                self.peak_kib = max(self.peak_kib, self.current_kib())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def uvicorn_argv(prefix: list[str], target: str, port: int, app_dir: Path | None) -> list[str]:
    argv = [*prefix, sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"]
    if app_dir:
        argv += ["--app-dir", str(app_dir)]
    return argv


def chat_script(directory: Path, key: str | None) -> Path:
    """gateway_chat.lua, with the client key's Authorization header when there is one."""
    text = CHAT_SCRIPT.read_text()
    if key:
        text += f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    path = directory / f"chat-{key[:12] if key else 'anonymous'}.lua"
    path.write_text(text)
    return path


@contextlib.contextmanager
def database() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL 15 (the app tests' own, tests/app/pgserver.py), migrated."""
    sys.path.insert(0, str(BENCH.parent / "tests" / "app"))
    from pgserver import PostgresServer

    server = PostgresServer()
    server.init()
    try:
        env = {**os.environ, **server.env}
        subprocess.run(
            [sys.executable, "-m", "techno_os_api.migrate"], env=env, check=True,
            capture_output=True, timeout=120,
        )  # fmt: skip
        yield server.env
    finally:
        server.destroy()


def create_key(env: dict[str, str], *args: str) -> str:
    """A client key made with the operators' tool, as `make api-key` makes one."""
    out = subprocess.run(
        [sys.executable, "-m", "techno_os_api.keys", "create", "--user", "bench", *args],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    key: str = json.loads(out.stdout)["key"]
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case (10)")
    parser.add_argument("--connections", type=int, default=32, help="for throughput (32)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per server (2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("bench_gateway: wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be between 1 and 60 seconds")

    server_cpu, wrk_cpu = pinning()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "LLM_", "VERITTA"))}
    results: list[Result] = []
    rss = {"idle_mib": 0.0, "peak_under_load_mib": 0.0}
    with database() as db_env, tempfile.TemporaryDirectory() as scratch:
        app_env = {
            **env,
            **db_env,
            "VERITTA_LLM_ALLOWED_PROVIDERS": "fake",
            "LLM_PROVIDER": "fake",
            "LOG_LEVEL": "warning",
        }
        # A key without shared limits (authentication only), and one whose rpm, tpm and budget
        # are far above the load, so that every call is admitted and settled in PostgreSQL.
        plain_key = create_key(app_env, "--name", "bench plain")
        limited_key = create_key(
            app_env, "--name", "bench limited", "--rpm", "10000000", "--tpm", "2000000000",
            "--budget-usd", "1000000", "--max-parallel", "10000",
        )  # fmt: skip
        ports = {name: free_port() for name in ("bare", "api", "noauth")}
        argvs = {
            "bare": uvicorn_argv(server_cpu, "gateway_bare_app:app", ports["bare"], BENCH),
            "api": uvicorn_argv(server_cpu, "techno_os_api.main:app", ports["api"], None),
            "noauth": uvicorn_argv(server_cpu, "gateway_noauth_app:app", ports["noauth"], BENCH),
        }
        # server -> (base URL, chat script): api-limited is the same process as api.
        scripts = {
            "bare": chat_script(Path(scratch), None),
            "noauth": chat_script(Path(scratch), None),
            "api": chat_script(Path(scratch), plain_key),
            "api-limited": chat_script(Path(scratch), limited_key),
        }
        with (
            serve(argvs["bare"], ports["bare"], env),
            serve(argvs["noauth"], ports["noauth"], app_env),
            serve(argvs["api"], ports["api"], app_env) as api_process,
        ):
            sampler = RssSampler(api_process.pid)
            rss["idle_mib"] = sampler.current_kib() / 1024
            base = {
                "bare": f"http://127.0.0.1:{ports['bare']}",
                "noauth": f"http://127.0.0.1:{ports['noauth']}",
                "api": f"http://127.0.0.1:{ports['api']}",
                "api-limited": f"http://127.0.0.1:{ports['api']}",
            }
            for server in ("bare", "api"):  # warm-up, not recorded
                wrk(wrk_cpu, base[server] + "/health", args.connections, args.warmup, None)
            for server in ("noauth", "api", "api-limited"):
                wrk(wrk_cpu, base[server] + CHAT, 4, args.warmup, scripts[server])
            every = ("bare", "noauth", "api", "api-limited")
            cases = (
                ("GET /health", "/health", ("bare", "api")),
                ("POST /v1/chat/completions (fake)", CHAT, every),
            )
            with sampler:
                for connections in (args.connections, 1):
                    for case, path, servers in cases:
                        # Rounds alternate the servers, so a change in background load hits all.
                        rounds: dict[str, list[tuple[float, float, float, int]]] = {
                            server: [] for server in servers
                        }
                        for _ in range(args.rounds):
                            for server in servers:
                                script = scripts[server] if path == CHAT else None
                                rounds[server].append(
                                    wrk(wrk_cpu, base[server] + path, connections,
                                        args.duration / args.rounds, script)
                                )  # fmt: skip
                        for server, runs in rounds.items():
                            result = Result(
                                server,
                                case,
                                connections,
                                statistics.median(r[0] for r in runs),
                                statistics.median(r[1] for r in runs),
                                statistics.median(r[2] for r in runs),
                                sum(r[3] for r in runs),
                            )
                            results.append(result)
                            print(
                                f"{server:11} {case:34} c={connections:<3} "
                                f"{result.requests_per_second:9.0f} req/s  "
                                f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms"
                                + (f"  errors {result.errors}" if result.errors else ""),
                                flush=True,
                            )
            rss["peak_under_load_mib"] = sampler.peak_kib / 1024

    def find(server: str, case: str, connections: int) -> Result:
        return next(
            r
            for r in results
            if r.server == server and r.case.startswith(case) and r.connections == connections
        )

    c = args.connections
    summary = {
        "health_throughput_ratio": find("api", "GET", c).requests_per_second
        / find("bare", "GET", c).requests_per_second,
        "chat_throughput_ratio": find("api", "POST", c).requests_per_second
        / find("bare", "POST", c).requests_per_second,
        "health_added_p50_ms_c1": find("api", "GET", 1).p50_ms - find("bare", "GET", 1).p50_ms,
        "chat_added_p50_ms_c1": find("api", "POST", 1).p50_ms - find("bare", "POST", 1).p50_ms,
        "chat_added_p50_ms_loaded": find("api", "POST", c).p50_ms - find("bare", "POST", c).p50_ms,
        "auth_added_p50_ms_c1": find("api", "POST", 1).p50_ms - find("noauth", "POST", 1).p50_ms,
        "auth_throughput_ratio": find("api", "POST", c).requests_per_second
        / find("noauth", "POST", c).requests_per_second,
        "limits_added_p50_ms_c1": find("api-limited", "POST", 1).p50_ms
        - find("api", "POST", 1).p50_ms,
        "limited_requests_per_second": find("api-limited", "POST", c).requests_per_second,
        "api_rss_idle_mib": rss["idle_mib"],
        "api_rss_peak_under_load_mib": rss["peak_under_load_mib"],
    }
    environment = {
        "python": platform.python_version(),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "techno_os_api": version("techno-os-api"),
        "cpus": os.cpu_count(),
        "pinned": bool(server_cpu),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": c,
    }
    print()
    ratio, added = summary["health_throughput_ratio"], summary["chat_added_p50_ms_c1"]
    print(f"/health throughput: {ratio:.2f}x the bare app (goal >= 0.8)")
    print(f"chat (fake) throughput: {summary['chat_throughput_ratio']:.2f}x the bare app")
    print(f"chat (fake) added p50, 1 connection: {added:.3f} ms (goal < 1)")
    print(f"chat (fake) added p50, {c} connections: {summary['chat_added_p50_ms_loaded']:.3f} ms")
    print(
        f"authentication (cached key) added p50, 1 connection: "
        f"{summary['auth_added_p50_ms_c1']:.3f} ms (goal < 0.3); throughput "
        f"{summary['auth_throughput_ratio']:.2f}x without"
    )
    print(
        f"shared limits (rpm+tpm+budget in PostgreSQL) added p50, 1 connection: "
        f"{summary['limits_added_p50_ms_c1']:.3f} ms; "
        f"{summary['limited_requests_per_second']:.0f} req/s at {c} connections"
    )
    print(
        f"API RSS: {summary['api_rss_idle_mib']:.1f} MiB idle, "
        f"{summary['api_rss_peak_under_load_mib']:.1f} MiB peak under load"
    )
    print(f"environment: {json.dumps(environment)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "results": [asdict(r) for r in results],
            "summary": summary,
            "environment": environment,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    failed = [r for r in results if r.errors]
    if failed:
        print(f"bench_gateway: {len(failed)} case(s) had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

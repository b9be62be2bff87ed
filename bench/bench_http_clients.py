#!/usr/bin/env python3
"""Which async HTTP client the gateway should call providers with: each candidate in its own
one-worker uvicorn app that forwards the request to an nginx stand-in provider, against the same
app answering in-process, with wrk on loopback.

    python bench/bench_http_clients.py --venv /tmp/bench-http-clients           # the full run
    python bench/bench_http_clients.py --venv /tmp/bench-http-clients --gateway # + the real API
    python bench/bench_http_clients.py --duration 3 --rounds 1 --connections 16 --json out.json

--venv DIR builds (once) a throwaway venv there from Debian's python3 and app/requirements.lock
(the image's exact pins: httpx, httpcore, anyio, uvicorn, uvloop, httptools; no sniffio), plus
EXTRAS (aiohttp, httpx2, httpx-aiohttp), plus sniffio alone in DIR/sniffio, which the `+sniffio`
variants put on PYTHONPATH. Without --venv the servers use this interpreter, and the variants
it cannot run are skipped (e.g. "without sniffio" when sniffio is installed).

Servers (all started at once, one uvicorn worker each, uvloop + httptools, pinned to CPU 0):
  inprocess           the baseline: parses the body, answers a constant completion, no network
  <client variants>   parse the body, POST it as JSON to the stand-in, read the answer as a
                      bounded stream of decompressed chunks, parse it, return it
                      (bench/http_client_apps.py lists them)
  with --gateway also the real API (app/src of --app-rev, unchanged): `fake` provider as its
  baseline, and the `openai` provider pointed at the stand-in with several clients
  (bench/gateway_client_app.py)
The stand-in is Debian's nginx (bench/provider_standin_nginx.conf) run as a foreground child on
127.0.0.1, pinned with wrk to CPU 1; its capacity is measured first so it is never the limit.

Each connection count runs --rounds rounds; a round runs the baseline, then every variant (the
order rotates each round), each for --duration seconds. Reported: medians of req/s, p50, p99,
CPU per request (the server's user+sys CPU from /proc/<pid>/stat over the run / requests
completed), the stand-in's CPU per request and connections it accepted (nginx stub_status), and
the medians of the per-round ratios to the baseline: req/s ("x") and baseline CPU per request /
variant CPU per request ("CPU x", what a saturated worker would reach; immune to stolen CPU).
The whole run takes about 6 min, 12 min with --gateway.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench_gateway import UNITS, free_port, pinning

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOCK = ROOT / "app" / "requirements.lock"
APP_SRC = ROOT / "app" / "src"
NGINX_TEMPLATE = BENCH / "provider_standin_nginx.conf"
FAKE_SCRIPT = BENCH / "gateway_chat.lua"
PROVIDER_SCRIPT = BENCH / "provider_chat.lua"
CHAT_PATH = "/v1/chat/completions"
# The API revision --gateway runs by default: the one the slow through-provider path was measured
# on (its providers call `client.post(...)`). Later revisions (client keys from a50a12c on, a
# bounded streaming Transport) run too: gateway_client_app.py gives them bench's fixed key.
GATEWAY_REVISION = "2ca26a9"
# Added to the lock's pins in the throwaway venv (the current releases when this was written).
EXTRAS = ("aiohttp==3.14.5", "httpx2==2.16.2", "httpx-aiohttp==0.2.0")
SNIFFIO = "sniffio==1.3.1"
PACKAGES = [
    *("uvicorn", "uvloop", "httptools", "httpx", "httpcore", "anyio", "h11", "sniffio"),
    *("httpx2", "httpcore2", "aiohttp", "httpx-aiohttp", "multidict", "yarl", "propcache"),
]
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    key: str
    group: str  # "clients" or "gateway"
    client: str  # BENCH_CLIENT
    sniffio: bool | None  # True: added to PYTHONPATH; False: must be absent; None: either
    baseline: bool
    label: str
    script: Path
    port: int = 0
    pid: int = 0


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_ms_per_request: float
    standin_cpu_ms_per_request: float
    connections_opened: int  # TCP connections the stand-in accepted during the run


@dataclass
class Result:
    server: str
    label: str
    group: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    standin_cpu_ms_per_request: float
    connections_opened_per_1000: float  # keep-alive churn: 0 when the pool keeps its connections
    ratio_to_baseline: float
    capacity_ratio: float  # baseline CPU/request / this CPU/request: immune to CPU stolen
    errors: int
    rounds: list[dict[str, float]] = field(default_factory=list)


# --- environment ---------------------------------------------------------------------------------
def run_quiet(argv: list[str]) -> None:
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")


def make_venv(root: Path, base_python: str) -> tuple[str, Path]:
    """The throwaway venv: the lock's pins, then EXTRAS; sniffio alone in root/sniffio."""
    python = root / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    marker = root / "venv" / "bench-http-clients.txt"
    wanted = "\n".join([LOCK.read_text(), *EXTRAS])
    if not python.exists():
        print(f"building {root}/venv from {base_python} and {LOCK.name} ...", flush=True)
        run_quiet([base_python, "-m", "venv", str(root / "venv")])
    if not marker.exists() or marker.read_text() != wanted:
        run_quiet([*pip, "--require-hashes", "--requirement", str(LOCK)])
        run_quiet([*pip, *EXTRAS])
        marker.write_text(wanted)
    sniffio_dir = root / "sniffio"
    if not (sniffio_dir / "sniffio").is_dir():
        run_quiet([*pip, "--target", str(sniffio_dir), SNIFFIO])
    return str(python), sniffio_dir


def installed(python: str, pythonpath: str | None) -> dict[str, str]:
    """Distribution versions the interpreter sees (with that PYTHONPATH)."""
    code = (
        "import json, importlib.metadata as m\n"
        f"names = {PACKAGES!r}\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "import platform; found['python'] = platform.python_version()\n"
        "print(json.dumps(found))\n"
    )
    env = clean_env()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, check=True)
    found: dict[str, str] = json.loads(out.stdout)
    return found


def clean_env() -> dict[str, str]:
    prefixes = ("DB_", "LLM_", "VERITTA", "OPENAI_", "PYTHONPATH", "BENCH_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


# --- processes -----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """user + sys CPU of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(
    process: subprocess.Popen[bytes], url: str, log: Path, data: bytes | None = None
) -> bytes:
    deadline = time.monotonic() + 30
    last: object = None
    while True:
        request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body: bytes = response.read()
                if response.status == 200:
                    return body
                last = response.status
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last = exc
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"{url} did not answer 200 (last: {last}); log {log}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def standin(prefix: list[str], workdir: Path) -> Iterator[tuple[str, int]]:
    """nginx in the foreground on a free port; yields (base URL, master pid)."""
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_TEMPLATE.read_text().replace("@PORT@", str(port)))
    log = workdir / "error.log"
    argv = [*prefix, "nginx", "-c", str(conf), "-p", f"{workdir}/", "-e", str(log)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        log.touch()
        wait_http(process, base + "/health", log)
        yield base, process.pid
    finally:
        stop(process)


@contextlib.contextmanager
def uvicorn(
    python: str, prefix: list[str], server: Server, env: dict[str, str], workdir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    target = "http_client_apps:app" if server.group == "clients" else "gateway_client_app:app"
    argv = [*prefix, python, "-m", "uvicorn", target, "--host", "127.0.0.1"]
    argv += ["--port", str(server.port), "--workers", "1", "--no-access-log"]
    argv += ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    argv += ["--app-dir", str(BENCH)]
    log = workdir / f"{server.key}.log"
    with log.open("wb") as sink:
        # cwd: a small directory, as in the image (WORKDIR /tmp): sys.path[0] is scanned by every
        # failed import, and the failed `import sniffio` is one of the costs measured here.
        process = subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        wait_http(process, f"http://127.0.0.1:{server.port}/health", log)
        yield process
    finally:
        stop(process)


# --- load ----------------------------------------------------------------------------------------
def wrk(
    prefix: list[str], url: str, connections: int, duration: float, script: Path
) -> tuple[float, float, float, int, int]:
    """(req/s, p50 ms, p99 ms, requests completed, errors)"""
    argv = [*prefix, "wrk", "--threads", "1", "--connections", str(connections)]
    argv += ["--duration", f"{max(1, round(duration))}s", "--timeout", "5s", "--latency"]
    argv += ["--script", str(script), url]
    text = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no {percent}% latency in wrk output:\n{text}")
        return float(match.group(1)) * UNITS[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    count = re.search(r"^\s+(\d+) requests in", text, re.MULTILINE)
    if not rps or not count:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{text}")
    errors = 0
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if match:
        errors += int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if match:
        errors += sum(int(g) for g in match.groups())
    return float(rps.group(1)), latency("50"), latency("99"), int(count.group(1)), errors


def accepted(standin_url: str) -> int:
    """The stand-in's count of accepted connections (nginx stub_status; this GET is one)."""
    with urllib.request.urlopen(standin_url + "/nginx_status", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^\s*(\d+)\s+\d+\s+\d+\s*$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no counters in the stand-in's status:\n{text}")
    return int(match.group(1))


def measure(
    prefix: list[str],
    server: Server,
    connections: int,
    duration: float,
    standin: tuple[str, int],
) -> Run:
    standin_url, standin_pid = standin
    workers = children(standin_pid)
    accepts = accepted(standin_url)
    before = cpu_seconds(server.pid)
    standin_before = sum(cpu_seconds(p) for p in workers)
    url = f"http://127.0.0.1:{server.port}{CHAT_PATH}"
    rps, p50, p99, requests, errors = wrk(prefix, url, connections, duration, server.script)
    cpu = cpu_seconds(server.pid) - before
    standin_cpu = sum(cpu_seconds(p) for p in workers) - standin_before
    opened = accepted(standin_url) - accepts - 1  # less the status request's own connection
    per = 1000 / max(requests, 1)
    return Run(rps, p50, p99, requests, errors, cpu * per, standin_cpu * per, opened)


# --- main ----------------------------------------------------------------------------------------
def plan(
    sniffio_native: bool, sniffio_dir: Path | None, have: dict[str, str], gateway: bool
) -> tuple[list[Server], list[str]]:
    """The servers this interpreter can run, and the reasons for those it cannot."""
    can_add_sniffio = sniffio_native or sniffio_dir is not None
    wanted: list[tuple[str, str, str, bool | None, bool, str]] = [
        ("inprocess", "clients", "inprocess", None, True, "in-process (no network)"),
        ("httpx", "clients", "httpx", False, False, "httpx as today, no sniffio (the image)"),
        ("httpx+sniffio", "clients", "httpx", True, False, "httpx as today + sniffio"),
        ("httpx-tuned", "clients", "httpx-tuned", True, False, "httpx + sniffio, keep-alive 100"),
        ("httpx2", "clients", "httpx2", None, False, "httpx2, keep-alive 100"),
        ("aiohttp", "clients", "aiohttp", None, False, "aiohttp, plain"),
        ("aiohttp-tuned", "clients", "aiohttp-tuned", None, False, "aiohttp, tuned"),
        ("httpx-aiohttp", "clients", "httpx-aiohttp", None, False, "httpx API on aiohttp"),
    ]
    if gateway:
        wanted += [
            ("api-fake", "gateway", "httpx", None, True, "API, fake provider (in-process)"),
            ("api-httpx", "gateway", "httpx", False, False, "API, httpx as today (the image)"),
            ("api-httpx+sniffio", "gateway", "httpx", True, False, "API, httpx today + sniffio"),
            ("api-httpx-tuned", "gateway", "httpx-tuned", True, False, "API, httpx tuned"),
            ("api-httpx2", "gateway", "httpx2", None, False, "API, httpx2 keep-alive 100"),
            ("api-aiohttp", "gateway", "aiohttp", None, False, "API, aiohttp tuned (adapter)"),
            ("api-httpx-aiohttp", "gateway", "httpx-aiohttp", None, False, "API, httpx-aiohttp"),
        ]
    servers, skipped = [], []
    for key, group, client, sniffio, baseline, label in wanted:
        module = client.removesuffix("-tuned")  # the distribution it needs
        if module != "inprocess" and module not in have:
            skipped.append(f"{key}: {module} is not installed")
        elif sniffio and not can_add_sniffio:
            skipped.append(f"{key}: no sniffio to add (pass --venv)")
        elif sniffio is False and sniffio_native:
            skipped.append(f"{key}: sniffio is installed in this interpreter (pass --venv)")
        else:
            script = PROVIDER_SCRIPT if group == "gateway" and not baseline else FAKE_SCRIPT
            servers.append(Server(key, group, client, sniffio, baseline, label, script))
    return servers, skipped


def app_source(revision: str, workdir: Path) -> tuple[Path, str]:
    """The API's source for --gateway: app/src of a git revision, exported (the work tree may be
    mid-edit), or the work tree itself."""
    if revision == "worktree":
        return APP_SRC, "work tree"
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "app/src"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    return workdir / "app" / "src", commit


def server_env(
    server: Server,
    base: dict[str, str],
    sniffio_dir: Path | None,
    standin_url: str,
    app_src: Path,
) -> dict[str, str]:
    env = {**base, "BENCH_CLIENT": server.client}
    paths = []
    if server.group == "gateway":
        paths.append(str(app_src))
        env.update(
            {
                "VERITTA_LLM_ALLOWED_PROVIDERS": "fake,openai",
                "LLM_PROVIDER": "fake",
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": f"{standin_url}/v1",
                "DB_HOST": "127.0.0.1",
                "DB_PORT": str(free_port()),  # nothing listens: the chat path never touches it
                "LOG_LEVEL": "warning",
                # Later revisions cap a key's calls in flight (default 8): above the load here.
                "KEY_DEFAULT_MAX_PARALLEL": "1000",
            }
        )
    else:
        env["BENCH_PROVIDER_URL"] = standin_url + CHAT_PATH
    if server.sniffio and sniffio_dir is not None:
        paths.append(str(sniffio_dir))
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def check_answer(server: Server, body: bytes) -> None:
    answer = json.loads(body)
    content = answer["choices"][0]["message"]["content"]
    through_standin = not server.baseline
    if through_standin != content.startswith("Hello from the provider stand-in"):
        raise RuntimeError(f"{server.key}: unexpected answer {body[:200]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated (1,16,64)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per server (2)")
    parser.add_argument("--venv", type=Path, help="build/use the throwaway venv in this directory")
    parser.add_argument(
        "--base-python", default="/usr/bin/python3", help="for --venv (Debian's, as the image)"
    )
    parser.add_argument("--gateway", action="store_true", help="also the real API (--app-rev)")
    parser.add_argument(
        "--app-rev",
        default=GATEWAY_REVISION,
        help="the API's code for --gateway: a git revision of app/src, or 'worktree' "
        f"(default {GATEWAY_REVISION}, where the slow path was reported)",
    )
    parser.add_argument("--only", help="comma-separated server keys (baselines always run)")
    parser.add_argument(
        "--skip-clients", action="store_true", help="with --gateway: only the API's servers"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            print(f"bench_http_clients: {tool} not found: apt-get install {tool}", file=sys.stderr)
            return 2
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be between 1 and 60 seconds")
    connection_counts = [int(c) for c in args.connections.split(",")]

    if args.venv:
        base_python = args.base_python if Path(args.base_python).exists() else sys.executable
        python, sniffio_dir = make_venv(args.venv.resolve(), base_python)
    else:
        python, sniffio_dir = sys.executable, None
    have = installed(python, None)
    sniffio_native = "sniffio" in have
    with_sniffio = installed(python, str(sniffio_dir)) if sniffio_dir else have
    servers, skipped = plan(sniffio_native, sniffio_dir, have, args.gateway)
    if args.only:
        keep = set(args.only.split(","))
        servers = [s for s in servers if s.baseline or s.key in keep]
    if args.skip_clients and args.gateway:
        servers = [s for s in servers if s.group == "gateway"]
    for reason in skipped:
        print(f"skipped {reason}", flush=True)

    server_cpu, wrk_cpu = pinning()
    base_env = clean_env()
    results: list[Result] = []
    capacity: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-clients-") as tmp:
        workdir = Path(tmp)
        (workdir / "nginx").mkdir()
        app_src, app_version = APP_SRC, ""
        if any(s.group == "gateway" for s in servers):
            app_src, app_version = app_source(args.app_rev, workdir)
        with contextlib.ExitStack() as stack:
            standin_url, standin_pid = stack.enter_context(standin(wrk_cpu, workdir / "nginx"))
            # The stand-in alone, on its own CPU (wrk on the servers' CPU for this one check).
            rps, p50, _, _, errors = wrk(
                server_cpu, standin_url + CHAT_PATH, 64, args.duration, FAKE_SCRIPT
            )
            capacity = {"requests_per_second": rps, "p50_ms": p50, "errors": errors}
            print(f"stand-in alone, 64 connections: {rps:,.0f} req/s, p50 {p50:.3f} ms", flush=True)

            for server in servers:
                server.port = free_port()
                env = server_env(server, base_env, sniffio_dir, standin_url, app_src)
                process = stack.enter_context(uvicorn(python, server_cpu, server, env, workdir))
                server.pid = process.pid
                payload = re.search(r"wrk.body = '(.*)'", server.script.read_text())
                if not payload:
                    raise RuntimeError(f"no wrk.body in {server.script}")
                url = f"http://127.0.0.1:{server.port}{CHAT_PATH}"
                log = workdir / f"{server.key}.log"
                check_answer(server, wait_http(process, url, log, payload.group(1).encode()))
                wrk(wrk_cpu, url, 16, args.warmup, server.script)  # warm-up, not recorded

            for connections in connection_counts:
                for group in ("clients", "gateway"):
                    members = [s for s in servers if s.group == group]
                    if not members:
                        continue
                    baseline = next(s for s in members if s.baseline)
                    variants = [s for s in members if not s.baseline]
                    runs: dict[str, list[Run]] = {s.key: [] for s in members}
                    for index in range(args.rounds):
                        shift = index % max(len(variants), 1)
                        for server in [baseline, *variants[shift:], *variants[:shift]]:
                            run = measure(
                                wrk_cpu,
                                server,
                                connections,
                                args.duration,
                                (standin_url, standin_pid),
                            )
                            runs[server.key].append(run)
                    for server in members:
                        results.append(
                            summarise(server, connections, runs[server.key], runs[baseline.key])
                        )
                        print(line(results[-1]), flush=True)

    environment = {
        "python": have.get("python"),
        "packages": have,
        "packages_with_sniffio_path": with_sniffio,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": "4.1 (Debian)" if Path("/usr/bin/wrk").exists() else shutil.which("wrk"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "pinned": bool(server_cpu),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": connection_counts,
        "skipped": skipped,
        "api_source": app_version or None,
    }
    print()
    print(summary_table(results, connection_counts))
    print(f"stand-in capacity: {json.dumps(capacity)}")
    print(f"environment: {json.dumps(environment)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload_out = {
            "results": [asdict(r) for r in results],
            "standin_capacity": capacity,
            "environment": environment,
        }
        args.json.write_text(json.dumps(payload_out, indent=2) + "\n")
    failed = [r for r in results if r.errors]
    if failed:
        print(f"bench_http_clients: {len(failed)} case(s) had errors", file=sys.stderr)
        return 1
    return 0


def summarise(server: Server, connections: int, runs: list[Run], base: list[Run]) -> Result:
    ratios = [r.rps / b.rps for r, b in zip(runs, base, strict=True)]
    capacity = [
        b.cpu_ms_per_request / r.cpu_ms_per_request if r.cpu_ms_per_request else 0.0
        for r, b in zip(runs, base, strict=True)
    ]
    return Result(
        server=server.key,
        label=server.label,
        group=server.group,
        connections=connections,
        requests_per_second=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        cpu_ms_per_request=statistics.median(r.cpu_ms_per_request for r in runs),
        standin_cpu_ms_per_request=statistics.median(r.standin_cpu_ms_per_request for r in runs),
        connections_opened_per_1000=statistics.median(
            1000 * r.connections_opened / max(r.requests, 1) for r in runs
        ),
        ratio_to_baseline=statistics.median(ratios),
        capacity_ratio=statistics.median(capacity),
        errors=sum(r.errors for r in runs),
        rounds=[asdict(r) for r in runs],
    )


def line(r: Result) -> str:
    return (
        f"{r.server:18} c={r.connections:<3} {r.requests_per_second:8.0f} req/s "
        f"{r.ratio_to_baseline:5.2f}x (cpu {r.capacity_ratio:4.2f}x)  "
        f"p50 {r.p50_ms:7.3f} ms  p99 {r.p99_ms:7.3f} ms  "
        f"cpu {r.cpu_ms_per_request:6.3f} ms/req  stand-in {r.standin_cpu_ms_per_request:5.3f}  "
        f"new conns/1000 req {r.connections_opened_per_1000:6.1f}"
        + (f"  errors {r.errors}" if r.errors else "")
    )


def summary_table(results: list[Result], connection_counts: list[int]) -> str:
    """Markdown: one row per server; per connection count: req/s (x baseline), the CPU-based
    ratio (baseline CPU/request / this CPU/request) and CPU ms per request."""
    head = "| server | " + " | ".join(
        f"c={c} req/s (x) | c={c} CPU x | c={c} CPU ms/req" for c in connection_counts
    )
    rows = [head + " |", "|---|" + "---:|---:|---:|" * len(connection_counts)]
    keys = list(dict.fromkeys(r.server for r in results))
    for key in keys:
        cells = []
        for c in connection_counts:
            r = next(x for x in results if x.server == key and x.connections == c)
            cells.append(f"{r.requests_per_second:,.0f} ({r.ratio_to_baseline:.2f}x)")
            cells.append(f"{r.capacity_ratio:.2f}x")
            cells.append(f"{r.cpu_ms_per_request:.3f}")
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

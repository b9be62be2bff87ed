#!/usr/bin/env python3
"""The gateway's hot path through a provider, side by side with its in-process `fake` path, in
one run: the API of this work tree (one uvicorn worker, uvloop + httptools, client-key lookup
replaced by a fixed key as in bench_gateway.py's `noauth`), with wrk on loopback.

    .venv/bin/python bench/bench_provider_path.py                     # 3 rounds x 5 s, c=1,16,64
    .venv/bin/python bench/bench_provider_path.py --json bench/provider_path_results.json

Servers (started once, pinned to CPU 0; the stand-in and wrk to CPU 1):
  fake      POST /v1/chat/completions for `fake/echo`: parsing, checks, metrics, no network
  provider  the same for `openai/gpt-4o-mini`, sent to bench/provider_standin_nginx.conf (nginx
            answering a fixed chat.completion as fast as it can) through llm/transport.py
Both are the same process, so a round measures them back to back on the same interpreter.
Reported per connection count: medians over rounds of req/s, p50, p99, and the server's CPU
per request (user+sys from /proc/<pid>/stat over the run / requests completed); the goal is
provider >= 0.5x fake req/s at 16 and 64 connections, with CPU per request flat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from bench_gateway import free_port, pinning
from bench_http_clients import (
    FAKE_SCRIPT,
    PROVIDER_SCRIPT,
    clean_env,
    cpu_seconds,
    standin,
    stop,
    wait_http,
    wrk,
)

BENCH = Path(__file__).resolve().parent
CHAT = "/v1/chat/completions"


@contextlib.contextmanager
def api(prefix: list[str], port: int, env: dict[str, str], workdir: Path) -> Iterator[int]:
    argv = [*prefix, sys.executable, "-m", "uvicorn", "gateway_fixed_key_app:app", "--host"]
    argv += ["127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log"]
    argv += ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    argv += ["--app-dir", str(BENCH)]
    log = workdir / "api.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        wait_http(process, f"http://127.0.0.1:{port}/health", log)
        yield process.pid
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per connection count (3)")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated (1,16,64)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the API to CPU 0, the rest to CPU 1 (default); --no-pin on a machine shared "
        "with other work, where a pinned process waits for its CPU",
    )
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.connections.split(",")]
    server_cpu, wrk_cpu = pinning() if args.pin else ([], [])
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        with standin(wrk_cpu, workdir) as (standin_url, _):
            port = free_port()
            env = {
                **clean_env(),
                "VERITTA_LLM_ALLOWED_PROVIDERS": "fake,openai",
                "LLM_PROVIDER": "fake",
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": f"{standin_url}/v1",
                "DB_HOST": "127.0.0.1",
                "DB_PORT": str(free_port()),  # nothing listens: the chat path never touches it
                "LOG_LEVEL": "warning",
                "KEY_DEFAULT_MAX_PARALLEL": "10000",
            }
            with api(server_cpu, port, env, workdir) as pid:
                url = f"http://127.0.0.1:{port}{CHAT}"
                scripts = {"fake": FAKE_SCRIPT, "provider": PROVIDER_SCRIPT}
                for script in scripts.values():  # warm-up, not recorded
                    wrk(wrk_cpu, url, 16, 2, script)
                for connections in counts:
                    runs: dict[str, list[tuple[float, float, float, float]]] = {
                        name: [] for name in scripts
                    }
                    for round_ in range(args.rounds):
                        order = list(scripts) if round_ % 2 == 0 else list(reversed(scripts))
                        for name in order:
                            before = cpu_seconds(pid)
                            rps, p50, p99, done, errors = wrk(
                                wrk_cpu, url, connections, args.duration, scripts[name]
                            )
                            if errors:
                                raise RuntimeError(f"{name} c={connections}: {errors} errors")
                            cpu_ms = (cpu_seconds(pid) - before) * 1000 / max(done, 1)
                            runs[name].append((rps, p50, p99, cpu_ms))
                    for name, measured in runs.items():
                        result = {
                            "path": name,
                            "connections": connections,
                            "requests_per_second": statistics.median(r[0] for r in measured),
                            "p50_ms": statistics.median(r[1] for r in measured),
                            "p99_ms": statistics.median(r[2] for r in measured),
                            "cpu_ms_per_request": statistics.median(r[3] for r in measured),
                            "rounds": [list(r) for r in measured],
                        }
                        results.append(result)
                    fake, provider = (r for r in results[-2:])
                    ratio = float(provider["requests_per_second"]) / float(  # type: ignore[arg-type]
                        fake["requests_per_second"]  # type: ignore[arg-type]
                    )
                    for r in (fake, provider):
                        print(
                            f"c={connections:<3} {r['path']:9} "
                            f"{r['requests_per_second']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                            f"p99 {r['p99_ms']:7.2f} ms  CPU {r['cpu_ms_per_request']:.3f} "
                            "ms/req",
                            flush=True,
                        )
                    print(f"c={connections:<3} provider/fake throughput: {ratio:.2f}x", flush=True)
                    provider["ratio_to_fake"] = round(ratio, 3)
    environment = {
        "python": platform.python_version(),
        "httptools": version("httptools"),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "cpus": os.cpu_count(),
        "pinned": bool(server_cpu),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "command": "python bench/bench_provider_path.py " + " ".join(argv or sys.argv[1:]),
    }
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "environment": environment}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Streams through the gateway against the same streams straight from the provider stand-in
(bench/stream_standin.py), in one run: the time to first token the gateway adds, its cost per
chunk, and its resident memory across 1,000 streams.

    .venv/bin/python bench/bench_streaming.py
    .venv/bin/python bench/bench_streaming.py --json bench/streaming_results.json

The API is this work tree's (bench/gateway_fixed_key_app.py: one uvicorn worker, uvloop +
httptools, a fixed client key so that no PostgreSQL is needed), its `openai` provider pointed
at the stand-in. The API is pinned to CPU 0, the stand-in and this client to CPU 1.

  first token  --ttft-streams sequential streams (20 chunks), alternately straight from the
               stand-in and through the gateway: from sending the request to the first content
               bytes. Reported: p50 and p90 of each, and the p50 the gateway adds (goal < 2 ms);
               and the gateway's own share: the mean through it less the mean it waited for
               the stand-in (its llm_time_to_first_token_seconds), which leaves out the
               stand-in's time and the second process hop (a shared machine's scheduling
               delays land on every hop).
  per chunk    --chunk-streams sequential streams of 1,000 and of 10 chunks through the
               gateway: its CPU per stream (from /proc/<pid>/stat) for each, the difference over
               990 chunks is its CPU per chunk; and the wall time per chunk, gateway minus
               direct.
  memory       --memory-streams streams (50 chunks 1 ms apart) through the gateway, 50 at a
               time, one in ten abandoned by the client after its first chunk: the API's VmRSS
               every 100 streams, after a warm-up of 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
from bench_gateway import free_port, pinning
from bench_http_clients import clean_env, cpu_seconds, stop, wait_http

BENCH = Path(__file__).resolve().parent
CHAT = "/v1/chat/completions"


def rss_kib(pid: int) -> int:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path, health: str) -> Iterator[int]:
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        wait_http(child, health, log)
        yield child.pid
    finally:
        stop(child)


def body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def first_token(http: aiohttp.ClientSession, url: str, model: str) -> tuple[float, int]:
    """Seconds from sending to the first content bytes, and the chunks read to the end."""
    started = time.perf_counter()
    ttft = 0.0
    chunks = 0
    async with http.post(url, json=body(model)) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if line.startswith(b"data: {") and b'"content"' in line:
                if not chunks:
                    ttft = time.perf_counter() - started
                chunks += 1
            elif line.startswith(b'data: {"error"'):
                raise RuntimeError(line.decode())
    return ttft, chunks


async def upstream_ttft(http: aiohttp.ClientSession, api: str) -> tuple[float, float]:
    """(sum, count) of the API's llm_time_to_first_token_seconds for openai."""
    async with http.get(api + "/metrics") as response:
        text = await response.text()
    found = {}
    for name in ("sum", "count"):
        match = re.search(
            rf'^llm_time_to_first_token_seconds_{name}{{provider="openai"}} (\S+)$', text, re.M
        )
        found[name] = float(match.group(1)) if match else 0.0
    return found["sum"], found["count"]


async def stream_once(http: aiohttp.ClientSession, url: str, model: str, abandon: bool) -> None:
    async with http.post(url, json=body(model)) as response:
        assert response.status == 200
        async for line in response.content:
            if abandon and line.startswith(b"data: {"):
                response.close()  # the client leaves mid-stream
                return


async def run(args: argparse.Namespace, api: str, direct: str, pid: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        gateway_url, direct_url = api + CHAT, direct + CHAT
        for _ in range(50):  # warm-up: connections, imports, caches
            await first_token(http, gateway_url, "openai/chunks-20")
            await first_token(http, direct_url, "chunks-20")

        upstream_before = await upstream_ttft(http, api)
        through, straight = [], []
        for _ in range(args.ttft_streams):
            straight.append((await first_token(http, direct_url, "chunks-20"))[0])
            through.append((await first_token(http, gateway_url, "openai/chunks-20"))[0])

        def q(values: list[float], n: int) -> float:
            return statistics.quantiles(values, n=100)[n - 1] * 1000

        ttft = {
            "direct_p50_ms": statistics.median(straight) * 1000,
            "direct_p90_ms": q(straight, 90),
            "gateway_p50_ms": statistics.median(through) * 1000,
            "gateway_p90_ms": q(through, 90),
        }
        ttft["added_p50_ms"] = ttft["gateway_p50_ms"] - ttft["direct_p50_ms"]
        # The gateway's own share, without the stand-in's: the client's mean time to first
        # token through the gateway less the mean the gateway itself waited for the stand-in's
        # first event (llm_time_to_first_token_seconds over the same streams).
        upstream_after = await upstream_ttft(http, api)
        waited = (upstream_after[0] - upstream_before[0]) / (upstream_after[1] - upstream_before[1])
        ttft["gateway_mean_ms"] = statistics.fmean(through) * 1000
        ttft["upstream_mean_ms_seen_by_gateway"] = waited * 1000
        ttft["gateway_share_mean_ms"] = ttft["gateway_mean_ms"] - waited * 1000

        per_stream: dict[int, dict[str, float]] = {}
        for count in (10, 1000):
            cpu_before = cpu_seconds(pid)
            started = time.perf_counter()
            for _ in range(args.chunk_streams):
                _, got = await first_token(http, gateway_url, f"openai/chunks-{count}")
                assert got == count, (got, count)
            gateway_wall = time.perf_counter() - started
            cpu = cpu_seconds(pid) - cpu_before
            started = time.perf_counter()
            for _ in range(args.chunk_streams):
                await first_token(http, direct_url, f"chunks-{count}")
            direct_wall = time.perf_counter() - started
            per_stream[count] = {
                "gateway_cpu_ms_per_stream": cpu * 1000 / args.chunk_streams,
                "gateway_wall_ms_per_stream": gateway_wall * 1000 / args.chunk_streams,
                "direct_wall_ms_per_stream": direct_wall * 1000 / args.chunk_streams,
            }
        small, large = per_stream[10], per_stream[1000]
        chunk = {
            "per_stream": {str(k): v for k, v in per_stream.items()},
            "gateway_cpu_us_per_chunk": (
                large["gateway_cpu_ms_per_stream"] - small["gateway_cpu_ms_per_stream"]
            )
            * 1000
            / 990,
            "added_wall_us_per_chunk": (
                (large["gateway_wall_ms_per_stream"] - large["direct_wall_ms_per_stream"])
                - (small["gateway_wall_ms_per_stream"] - small["direct_wall_ms_per_stream"])
            )
            * 1000
            / 990,
        }

        async def streams(n: int, start: int) -> None:
            semaphore = asyncio.Semaphore(50)

            async def one(i: int) -> None:
                async with semaphore:
                    await stream_once(http, gateway_url, "openai/chunks-50-gap-1", i % 10 == 0)

            await asyncio.gather(*(one(start + i) for i in range(n)))

        await streams(200, 0)  # warm-up
        await asyncio.sleep(0.5)
        samples = [(0, rss_kib(pid))]
        done = 0
        while done < args.memory_streams:
            await streams(100, done)
            done += 100
            await asyncio.sleep(0.2)  # let abandoned streams finish closing
            samples.append((done, rss_kib(pid)))
        memory = {
            "rss_mib": [(n, round(kib / 1024, 1)) for n, kib in samples],
            "growth_mib": round((samples[-1][1] - samples[0][1]) / 1024, 1),
            "peak_minus_start_mib": round((max(k for _, k in samples) - samples[0][1]) / 1024, 1),
        }
    return {"first_token": ttft, "per_chunk": chunk, "memory": memory}


def in_process(standin_url: str, streams: int) -> dict[str, float]:
    """The gateway's own time to first token, without a server or a second process hop: the
    app driven through ASGI in this process (uvloop), each stream from the call to its first
    body chunk, less the time the gateway itself waited for the stand-in's first event."""
    os.environ.update(
        {
            "VERITTA_LLM_ALLOWED_PROVIDERS": "fake,openai",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": standin_url,
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(free_port()),
            "LOG_LEVEL": "error",
            "KEY_DEFAULT_MAX_PARALLEL": "10000",
        }
    )
    sys.path.insert(0, str(BENCH))
    from gateway_fixed_key_app import app

    raw = json.dumps(body("openai/chunks-20")).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    metrics = app.state.services.metrics.time_to_first_token.labels(provider="openai")

    async def one() -> float:
        delivered = asyncio.Event()
        first: list[float] = []

        async def receive() -> dict[str, Any]:
            if not first and not delivered.is_set():
                delivered.set()
                return {"type": "http.request", "body": raw, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not first:
                first.append(time.perf_counter() - started)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished.set()

        finished = asyncio.Event()
        started = time.perf_counter()
        await app(scope, receive, send)
        return first[0]

    async def run() -> dict[str, float]:
        async with app.router.lifespan_context(app):
            for _ in range(50):
                await one()
            before = metrics._sum.get(), sum(b.get() for b in metrics._buckets)
            times = [await one() for _ in range(streams)]
            after = metrics._sum.get(), sum(b.get() for b in metrics._buckets)
        waited = (after[0] - before[0]) / (after[1] - before[1])
        return {
            "in_process_p50_ms": statistics.median(times) * 1000,
            "in_process_mean_ms": statistics.fmean(times) * 1000,
            "upstream_mean_ms": waited * 1000,
            "gateway_share_mean_ms": (statistics.fmean(times) - waited) * 1000,
        }

    try:
        import uvloop

        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttft-streams", type=int, default=500)
    parser.add_argument("--chunk-streams", type=int, default=30)
    parser.add_argument("--memory-streams", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the API to CPU 0, the rest to CPU 1 (default); --no-pin on a machine shared "
        "with other work, where a pinned process waits for its CPU",
    )
    parser.add_argument("--in-process-child", metavar="STANDIN_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process_child:
        print(json.dumps(in_process(args.in_process_child, args.ttft_streams)))
        return 0
    server_cpu, client_cpu = pinning() if args.pin else ([], [])
    if client_cpu:
        os.sched_setaffinity(0, {int(client_cpu[-1])})
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        standin_port, api_port = free_port(), free_port()
        direct = f"http://127.0.0.1:{standin_port}"
        api = f"http://127.0.0.1:{api_port}"
        standin_argv = [*client_cpu, sys.executable, str(BENCH / "stream_standin.py")]
        standin_argv += ["--port", str(standin_port)]
        env = {
            **clean_env(),
            "VERITTA_LLM_ALLOWED_PROVIDERS": "fake,openai",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": direct,
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(free_port()),  # nothing listens: the chat path never touches it
            "LOG_LEVEL": "warning",
            "KEY_DEFAULT_MAX_PARALLEL": "10000",
        }
        api_argv = [*server_cpu, sys.executable, "-m", "uvicorn", "gateway_fixed_key_app:app"]
        api_argv += ["--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"]
        api_argv += ["--no-access-log", "--log-level", "warning", "--loop", "uvloop"]
        api_argv += ["--http", "httptools", "--app-dir", str(BENCH)]
        with (
            process(standin_argv, clean_env(), workdir / "standin.log", direct + "/x"),
            process(api_argv, env, workdir / "api.log", api + "/health") as pid,
        ):
            results = asyncio.run(run(args, api, direct, pid))
            child = subprocess.run(
                [*server_cpu, sys.executable, __file__, "--in-process-child", direct,
                 "--ttft-streams", str(args.ttft_streams)],
                env=clean_env(), capture_output=True, text=True, check=True, timeout=600,
            )  # fmt: skip
            results["first_token_in_process"] = json.loads(child.stdout.splitlines()[-1])
    ttft, chunk, memory = results["first_token"], results["per_chunk"], results["memory"]
    print(
        f"time to first token: direct p50 {ttft['direct_p50_ms']:.3f} ms, through the gateway "
        f"p50 {ttft['gateway_p50_ms']:.3f} ms (p90 {ttft['gateway_p90_ms']:.3f}): the gateway "
        f"adds {ttft['added_p50_ms']:.3f} ms at p50 (goal < 2); its own share (mean through it "
        f"{ttft['gateway_mean_ms']:.3f} ms less the {ttft['upstream_mean_ms_seen_by_gateway']:.3f}"
        f" ms it waited for the stand-in): {ttft['gateway_share_mean_ms']:.3f} ms"
    )
    own = results["first_token_in_process"]
    print(
        f"time to first token in process (ASGI, no server, no second hop): p50 "
        f"{own['in_process_p50_ms']:.3f} ms, of which the stand-in {own['upstream_mean_ms']:.3f}"
        f" ms (mean): the gateway's own share {own['gateway_share_mean_ms']:.3f} ms (mean)"
    )
    print(
        f"per chunk: gateway CPU {chunk['gateway_cpu_us_per_chunk']:.1f} us, added wall time "
        f"{chunk['added_wall_us_per_chunk']:.1f} us"
    )
    for count, figures in chunk["per_stream"].items():
        print(f"  {count:>5} chunks: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    print(
        f"memory across {args.memory_streams} streams: VmRSS {memory['rss_mib']} MiB; "
        f"growth {memory['growth_mib']} MiB"
    )
    environment = {
        "python": platform.python_version(),
        "httptools": version("httptools"),
        "uvicorn": version("uvicorn"),
        "cpus": os.cpu_count(),
        "pinned": bool(server_cpu),
        "command": "python bench/bench_streaming.py " + " ".join(argv or sys.argv[1:]),
    }
    if args.json:
        payload = {**results, "environment": environment}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

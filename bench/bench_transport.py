#!/usr/bin/env python3
"""The provider transport's own cost: the gateway's `llm.transport.Transport` (its HTTP/1.1
client, `llm.http`) against aiohttp's ClientSession doing the same exchange, in one process,
against the nginx stand-in (bench/provider_standin_nginx.conf), alternating rounds.

    .venv/bin/python bench/bench_transport.py               # needs aiohttp importable
    .venv/bin/python bench/bench_transport.py --json bench/transport_results.json

Each request: the JSON body of a small chat completion POSTed, the answer read whole (bounded
by the size limit for the Transport) and decoded. Reported per concurrency: requests per
second and this process's CPU per request (time.process_time), medians over --rounds. aiohttp
is configured as the gateway used it (no cookie jar, no decompression, keep-alive pool).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench_gateway import pinning
from bench_http_clients import standin
from techno_os_api.llm.transport import Redactor, Transport

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello from the bench"}]}
HEADERS = {"Authorization": "Bearer sk-bench"}


async def measure(
    call: Callable[[], Awaitable[object]], concurrency: int, requests: int
) -> tuple[float, float]:
    async def worker(n: int) -> None:
        for _ in range(n):
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    done = requests // concurrency * concurrency
    return done / (time.perf_counter() - wall), (time.process_time() - cpu) * 1000 / done


async def run(url: str, args: argparse.Namespace) -> list[dict[str, object]]:
    import aiohttp

    transport = Transport(16 * 1024 * 1024, Redactor([]))
    headers = Transport.headers(HEADERS)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
    chat = url + "/v1/chat/completions"

    async def ours() -> object:
        return await transport.post_json("openai", chat, BODY, headers)

    async def theirs() -> object:
        data = json.dumps(BODY, separators=(",", ":")).encode()
        async with session.post(chat, data=data, headers=headers) as response:
            return json.loads(await response.read())

    clients = {"llm.http (Transport)": ours, "aiohttp": theirs}
    results = []
    try:
        for call in clients.values():  # warm-up
            await measure(call, 16, 2000)
        for concurrency in args.concurrency:
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
            for round_ in range(args.rounds):
                names = list(clients) if round_ % 2 == 0 else list(reversed(clients))
                for name in names:
                    runs[name].append(await measure(clients[name], concurrency, args.requests))
            for name, measured in runs.items():
                result = {
                    "client": name,
                    "concurrency": concurrency,
                    "requests_per_second": statistics.median(r[0] for r in measured),
                    "cpu_ms_per_request": statistics.median(r[1] for r in measured),
                }
                results.append(result)
                print(
                    f"c={concurrency:<3} {name:22} {result['requests_per_second']:8.0f} req/s  "
                    f"CPU {result['cpu_ms_per_request']:.3f} ms/request",
                    flush=True,
                )
    finally:
        await session.close()
        await transport.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="per run (5000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    server_cpu, standin_cpu = pinning()
    if server_cpu:  # this process plays the gateway: CPU 0, the stand-in CPU 1
        os.sched_setaffinity(0, {0})
    with (
        tempfile.TemporaryDirectory() as scratch,
        standin(standin_cpu, Path(scratch)) as (
            url,
            _,
        ),
    ):
        try:
            import uvloop

            results = uvloop.run(run(url, args))
        except ImportError:
            results = asyncio.run(run(url, args))
    if args.json:
        command = "python bench/bench_transport.py " + " ".join(argv or sys.argv[1:])
        args.json.write_text(json.dumps({"results": results, "command": command}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

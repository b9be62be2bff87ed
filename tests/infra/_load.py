"""A steady load of client requests through the public proxy, for the drills that must drop
none: a small stdlib script run on the edge host (the route clients take: TLS to Caddy, then
the API hosts), sending chat completions and preference reads and writes at a fixed rate and
recording every answer. Nothing here asserts; the drills count what it recorded."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ._support import Target, wait_until

LOCAL_CA_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"

# Runs on the edge host with its python3: one keep-alive connection per worker thread, a fixed
# request rate, one JSON line per request.
SCRIPT = r"""
import http.client, json, os, socket, ssl, sys, threading, time
host, key, rate, out, stop, ca = sys.argv[1:7]
rate = float(rate)
context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
lock = threading.Lock()
log = open(out, "a", buffering=1)
deadline = time.time() + 900  # never outlives a broken drill by much


class Proxy(http.client.HTTPSConnection):
    # TLS to this host's proxy, with the public name (SNI, Host, certificate check).
    def connect(self):
        raw = socket.create_connection(("127.0.0.1", 443), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def worker(n):
    c = Proxy(host, 443, context=context, timeout=20)
    i = 0
    while not os.path.exists(stop) and time.time() < deadline:
        i += 1
        kind = ("chat", "put", "get")[i % 3]
        user = f"load-{n}-{i % 50}"
        if kind == "chat":
            method, path = "POST", "/v1/chat/completions"
            body = json.dumps({"model": "fake/echo",
                               "messages": [{"role": "user", "content": f"load {n} {i}"}]})
        elif kind == "put":
            method, path, body = "PUT", f"/preferences/{user}", json.dumps({"n": n, "i": i})
        else:
            method, path, body = "GET", f"/preferences/{user}", None
        started = time.time()
        try:
            c.request(method, path, body=body, headers={
                "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            r = c.getresponse()
            answer = r.read()
            status, error = r.status, ""
            if status >= 400 and not (kind == "get" and status == 404):
                error = f"HTTP {status}: {answer[:160].decode(errors='replace')}"
            if (r.getheader("connection") or "").lower() == "close":
                c.close()
        except Exception as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"
            c.close()
        ok = status == 200 or (kind == "get" and status == 404)
        with lock:
            log.write(json.dumps({"t": started, "kind": kind, "status": status,
                                  "ok": ok, "error": error}) + "\n")
        time.sleep(max(0.0, started + threads / rate - time.time()))


threads = max(1, int(rate // 5))
for n in range(threads):
    threading.Thread(target=worker, args=(n,), daemon=True).start()
while not os.path.exists(stop) and time.time() < deadline:
    time.sleep(0.2)
time.sleep(1)
"""


@dataclass
class LoadResult:
    rows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if not r["ok"]]

    def between(self, start: float, end: float) -> list[dict]:
        return [r for r in self.rows if start <= r["t"] <= end]

    def summary(self) -> str:
        errors = {}
        for r in self.failed:
            reason = (r["error"] or f"HTTP {r['status']}")[:200]
            errors[reason] = errors.get(reason, 0) + 1
        return f"{len(self.rows)} requests, {len(self.failed)} failed {errors or ''}"


@contextmanager
def steady_load(edge: Target, key: str, rate: float = 20.0) -> Iterator[LoadResult]:
    """Requests at `rate` per second through https://api.<domain> on the edge, for the block's
    duration; the result is filled when the block ends."""
    run = f"/tmp/techno-os-load-{secrets.token_hex(3)}"
    domain = edge.data.get("public_domain", "verittadigital.com")
    ca = LOCAL_CA_ROOT if edge.data.get("tls_mode") == "internal" else ""
    encoded = base64.b64encode(SCRIPT.encode()).decode()
    edge.check("echo %s | base64 -d > %s.py", encoded, run)
    edge.check("umask 077; printf %%s %s > %s.key", key, run)
    edge.check(
        f'setsid nohup python3 {run}.py api.{domain} "$(cat {run}.key)" {rate} {run}.jsonl '
        f"{run}.stop '{ca}' > {run}.log 2>&1 < /dev/null & echo $! > {run}.pid"
    )
    wait_until(
        lambda: edge.run(f"test -s {run}.jsonl").rc == 0,
        timeout=20,
        what=f"the steady load started (see {run}.log on {edge.name})",
    )
    result = LoadResult()
    try:
        yield result
    finally:
        edge.run(f"touch {run}.stop")
        wait_until(
            lambda: edge.run(f"kill -0 $(cat {run}.pid)").rc != 0,
            timeout=40,
            what="the steady load stopped",
        )
        lines = edge.check(f"cat {run}.jsonl").splitlines()
        result.rows.extend(json.loads(line) for line in lines if line.strip())
        edge.run(f"rm -f {run}.py {run}.key {run}.jsonl {run}.stop {run}.log {run}.pid")


# Runs on the edge host: the given requests in order, on one keep-alive connection to the
# proxy, and one JSON line each (status, Retry-After, the error's type and code).
CALLS_SCRIPT = r"""
import http.client, json, socket, ssl, sys
host, key_file, ca = sys.argv[1:4]
calls = json.load(sys.stdin)
key = open(key_file).read()
context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()


class Proxy(http.client.HTTPSConnection):
    def connect(self):
        raw = socket.create_connection(("127.0.0.1", 443), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


c = Proxy(host, 443, context=context, timeout=30)
for call in calls:
    body = json.dumps(call["body"]) if call.get("body") is not None else None
    c.request(call["method"], call["path"], body=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    try:
        error = json.loads(raw).get("error") or {}
    except ValueError:
        error = {"type": "not-json", "message": raw[:200].decode(errors="replace")}
    print(json.dumps({"status": r.status, "retry_after": r.getheader("retry-after"),
                      "type": error.get("type"), "code": error.get("code"),
                      "message": error.get("message")}), flush=True)
"""


def public_calls(edge: Target, key: str, calls: list[dict]) -> list[dict]:
    """Send `calls` ({method, path, body}) in order through https://api.<domain> on the edge
    with `key` (kept in a 0600 file, never on a command line); one answer summary each."""
    run = f"/tmp/techno-os-calls-{secrets.token_hex(3)}"
    domain = edge.data.get("public_domain", "verittadigital.com")
    ca = LOCAL_CA_ROOT if edge.data.get("tls_mode") == "internal" else ""
    encoded = base64.b64encode(CALLS_SCRIPT.encode()).decode()
    try:
        edge.check("echo %s | base64 -d > %s.py", encoded, run)
        edge.check("umask 077; printf %%s %s > %s.key", key, run)
        plan = base64.b64encode(json.dumps(calls).encode()).decode()
        out = edge.check(
            f"echo %s | base64 -d | python3 {run}.py api.{domain} {run}.key %s", plan, ca
        )
    finally:
        edge.run(f"rm -f {run}.py {run}.key")
    return [json.loads(line) for line in out.splitlines() if line.strip()]

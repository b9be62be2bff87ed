#!/usr/bin/python3
"""Sandbox-only Alertmanager webhook receiver (group data `alert_webhook_sink`, disposable hosts).

Appends the body of every POST (Alertmanager's webhook JSON) as one line to the output file, so
the drills can see which notifications arrived and when: the body's keys, plus `_path` (the URL
path it was posted to: /alerts for the receivers, /deadmans-switch for the watchdog) and
`_received` (Unix time, the sink's clock). GET answers "ok" (a liveness probe).
Standard library only; run by techno-os-webhook.service on a loopback address.

    webhook_sink.py --listen 127.0.0.1:9095 --output /var/lib/techno-os-webhook/notifications.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

MAX_BODY = 1 << 20


class Sink(BaseHTTPRequestHandler):
    output: Path

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self.send_error(413 if length else 411)
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "the body is not JSON")
            return
        if not isinstance(body, dict):
            self.send_error(400, "the body is not a JSON object")
            return
        body.update(_path=self.path, _received=round(time.time(), 3))
        with self.output.open("a", encoding="utf-8") as out:
            out.write(json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n")
        self._answer(200, b"ok\n")

    def do_GET(self) -> None:  # noqa: N802
        self._answer(200, b"ok\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the output file is the log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9095", help="address:port")
    parser.add_argument("--output", type=Path, required=True, help="JSON lines file")
    args = parser.parse_args()
    address, _, port = args.listen.rpartition(":")
    Sink.output = args.output
    # One request at a time: each notification is one whole line, never interleaved.
    HTTPServer((address, int(port)), Sink).serve_forever()


if __name__ == "__main__":
    main()

"""The official `openai` SDK as a client of the public proxy, from the control machine.

The edge host has python3 but not the SDK (nor is it in the release's wheelhouse), so the SDK
runs here, from the tooling venv, and reaches the edge's port 443 through an SSH tunnel: a Unix
socket here forwarded to 127.0.0.1:443 on the edge. Requests go to https://api.<domain> with the
public name as SNI, Host and certificate name, checked against the sandbox's CA (Caddy's local
root, read from the edge) or the system's trust store: TLS to Caddy, then HAProxy, each API
host's front and the live release, exactly the path of a client on the internet. The tunnel
adds SSH's own forwarding and nothing else: it relays bytes as they come.

The transport records every piece of the answer's body as it arrives (`Wire`), so a drill sees
both what the SDK made of a stream (typed chunks, their arrival times, the exception it raised)
and what was on the wire (`data: [DONE]`, the final error event).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai

from ._load import LOCAL_CA_ROOT
from ._support import InventoryHost, Target, ssh_argv, wait_until


@dataclass
class Wire:
    """One answer's body as it arrived: (time.monotonic(), bytes) per piece read."""

    pieces: list[tuple[float, bytes]] = field(default_factory=list)
    closed_at: float | None = None

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.pieces)

    def events(self) -> list[str]:
        """The `data:` payloads of the SSE events received, in order."""
        text = self.body.decode(errors="replace").replace("\r\n", "\n")
        return [
            line.removeprefix("data:").strip()
            for block in text.split("\n\n")
            for line in block.split("\n")
            if line.startswith("data:")
        ]


class _RecordedStream(httpx2.SyncByteStream):
    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    def __iter__(self) -> Iterator[bytes]:
        for data in self._inner:
            self._wire.pieces.append((time.monotonic(), data))
            yield data

    def close(self) -> None:
        self._wire.closed_at = time.monotonic()
        self._inner.close()


class _RecordingTransport(httpx2.HTTPTransport):
    """httpx2's own transport over the tunnel's socket; keeps the last answer's `Wire`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.last = Wire()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        self.last = Wire()
        response.stream = _RecordedStream(response.stream, self.last)
        return response


@dataclass
class PublicClient:
    sdk: openai.OpenAI
    transport: _RecordingTransport

    @property
    def wire(self) -> Wire:
        """The body of the last answer, as it arrived."""
        return self.transport.last


class PublicProxy:
    """An SSH tunnel to the edge's 443 and SDK clients of https://api.<domain> through it."""

    def __init__(self, edge: Target) -> None:
        self.edge = edge
        self.domain = str(edge.data.get("public_domain", "verittadigital.com"))
        self._dir = Path(tempfile.mkdtemp(prefix="tos-proxy-"))
        self.socket = self._dir / "edge-443.sock"
        self._tunnel: subprocess.Popen[bytes] | None = None
        if edge.data.get("tls_mode") == "internal":
            # Caddy's local CA root is public material; only the tests trust it.
            ca = self._dir / "root.crt"
            ca.write_text(edge.check("cat %s", LOCAL_CA_ROOT))
            self.tls = ssl.create_default_context(cafile=str(ca))
        else:
            self.tls = ssl.create_default_context()

    @property
    def base_url(self) -> str:
        return f"https://api.{self.domain}/v1"

    def __enter__(self) -> PublicProxy:
        host = InventoryHost(self.edge.name, tuple(self.edge.groups), dict(self.edge.data))
        argv = ssh_argv(host)
        self._tunnel = subprocess.Popen(
            [
                *argv[:-1],
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "StreamLocalBindUnlink=yes",
                "-L",
                f"{self.socket}:127.0.0.1:443",
                argv[-1],
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def ready() -> bool:
            if self._tunnel is not None and self._tunnel.poll() is not None:
                stderr = self._tunnel.stderr.read().decode() if self._tunnel.stderr else ""
                raise AssertionError(f"the SSH tunnel to {self.edge.name} ended: {stderr}")
            return self.socket.exists()

        wait_until(ready, timeout=20, what=f"SSH tunnel to {self.edge.name}:443", interval=0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tunnel is not None:
            self._tunnel.terminate()
            try:
                self._tunnel.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._tunnel.kill()
                self._tunnel.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def client(self, key: str, timeout: float = 60) -> PublicClient:
        """The SDK as an application would make it (no retries, so each call is one request),
        over a transport of its own: one connection at a time, recorded."""
        transport = _RecordingTransport(uds=str(self.socket), verify=self.tls)
        sdk = openai.OpenAI(
            base_url=self.base_url,
            api_key=key,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=transport, timeout=timeout),
        )
        return PublicClient(sdk, transport)

# ruff: noqa: E501  (raw HTTP answers read best on one line)
"""The provider transport's HTTP/1.1 client (llm/http.py) on the edges the stand-in does not
reach: keep-alive reuse, a connection the provider closed while it was idle, bodies that end
with the connection, interim answers, and an answer that is not HTTP. Against a raw loopback
socket server that answers exactly the bytes each test gives it."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from techno_os_api.llm.transport import (
    ProviderConnectionError,
    ProviderResponseError,
    Redactor,
    Transport,
)


class RawServer:
    """Answers each request on a connection with `answer(n)` (n: requests so far on it);
    counts connections; closes the connection after an answer when `close_after` says so."""

    def __init__(self, answer: Callable[[int], bytes], close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            served = 0
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.requests += 1
                conn.sendall(self.answer(served))
                served += 1
                if self.close_after:
                    return

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(answer: Callable[[int], bytes], **kwargs: bool) -> RawServer:
        servers.append(RawServer(answer, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def post(transport: Transport, server: RawServer) -> object:
    return transport.post_json("p", server.url + "/chat", {"x": 1}, Transport.headers({}))


async def test_calls_reuse_one_kept_alive_connection(raw):
    server = raw(lambda n: b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 1}')
    transport = Transport(1 << 20, Redactor([]))
    try:
        for _ in range(5):
            assert await post(transport, server) == {"n": 1}
    finally:
        await transport.close()
    assert (server.connections, server.requests) == (1, 5)


async def test_a_connection_the_provider_closed_while_idle_is_not_reused(raw):
    server = raw(
        lambda n: b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 2}', close_after=True
    )
    transport = Transport(1 << 20, Redactor([]))
    try:
        for _ in range(3):
            assert await post(transport, server) == {"n": 2}
            await asyncio.sleep(0.05)  # the provider's FIN arrives while the connection idles
    finally:
        await transport.close()
    assert (server.connections, server.requests) == (3, 3)


async def test_connection_close_answers_are_not_reused(raw):
    server = raw(
        lambda n: b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 8\r\n\r\n{"n": 3}',
        close_after=True,
    )
    transport = Transport(1 << 20, Redactor([]))
    try:
        for _ in range(2):
            assert await post(transport, server) == {"n": 3}
    finally:
        await transport.close()
    assert server.connections == 2


async def test_a_body_without_length_ends_with_the_connection(raw):
    server = raw(
        lambda n: b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"until": "close"}',
        close_after=True,
    )
    transport = Transport(1 << 20, Redactor([]))
    try:
        assert await post(transport, server) == {"until": "close"}
    finally:
        await transport.close()


async def test_an_interim_answer_is_skipped(raw):
    server = raw(
        lambda n: (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            + b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 4}'
        )
    )
    transport = Transport(1 << 20, Redactor([]))
    try:
        assert await post(transport, server) == {"n": 4}
    finally:
        await transport.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SMTP ready\r\n\r\n", ProviderResponseError),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cut', ProviderConnectionError),
    ],
    ids=["not-http", "cut-short"],
)
async def test_an_answer_that_is_not_http_or_is_cut_is_a_provider_error(raw, answer, error):
    server = raw(lambda n: answer, close_after=True)
    transport = Transport(1 << 20, Redactor([]))
    try:
        with pytest.raises(error):
            await post(transport, server)
    finally:
        await transport.close()


def test_a_header_that_could_split_the_request_is_refused():
    with pytest.raises(ValueError, match="line break"):
        Transport.headers({"Authorization": "Bearer key\r\nX-Injected: 1"})


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost (Debian's openssl), as (cert, key)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_https_is_verified_and_kept_alive(tls_files):
    cert, key = tls_files
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://localhost:{server.server_address[1]}/v1/chat"
    try:
        # The system's CA store does not know this certificate: refused.
        untrusting = Transport(1 << 20, Redactor([]))
        with pytest.raises(ProviderConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.post_json("p", url, {"a": 1}, Transport.headers({}))
        await untrusting.close()
        # A client that trusts it: verified (host name included), and the connection reused.
        trusting = Transport(1 << 20, Redactor([]), tls=ssl.create_default_context(cafile=cert))
        answers = [
            await trusting.post_json("p", url, {"a": 1}, Transport.headers({})) for _ in range(3)
        ]
        await trusting.close()
        # Each answer counts the requests served on its connection: one connection, kept.
        assert answers == [{"echo": {"a": 1}, "served_on_connection": n} for n in (1, 2, 3)]
    finally:
        server.shutdown()
        server.server_close()


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.served = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.served += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        out = json.dumps({"echo": json.loads(body), "served_on_connection": self.served})
        out = out.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        pass

"""The provider adapters' one way to the network: a JSON POST whose answer is read as it comes,
only up to a size limit, and the provider errors that come back from it.

The HTTP client is `llm.http` (keep-alive connections, httptools), chosen by measurement:
bench/bench_http_clients.py for httpx against aiohttp, bench/bench_transport.py for aiohttp
against it.

- An answer is counted as it is decompressed, so neither a huge body nor a small gzip that
  inflates to gigabytes can fill the memory: the body is inflated here a bounded piece at a
  time. Past LLM_MAX_RESPONSE_BYTES (a stream counts every
  byte it delivered) the call fails as a provider error.
- Leaving a response early (a client gone, a timeout, a failure) closes its connection, so the
  provider sees the request end at once and no half-read connection is reused.
- Nothing a provider sends reaches a client verbatim: a failed call keeps only the provider's
  error message field, bounded and with every configured secret redacted (a provider or a proxy
  in between may echo the request's headers, the provider key among them); the whole body goes
  to the log, redacted too.
- The client's exceptions stay here: a connection that fails is a `ProviderConnectionError`,
  an answer that is not HTTP a `ProviderResponseError`, a connect timeout a `TimeoutError`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from techno_os_api.llm.http import Connection, HTTPProtocolError, Pool, target
from techno_os_api.llm.sse import SSEError, SSEEvent, SSEParser

log = logging.getLogger("techno_os_api.llm.provider")

MESSAGE_LIMIT: Final = 500
LOG_BODY_LIMIT: Final = 4000
REDACTED: Final = "[redacted]"
# The most one decompression step hands over: what the size limit cannot stop from being
# allocated before it is counted.
_PIECE: Final = 64 * 1024
_JSON_HEADERS: Final = {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate"}
_UNSAFE: Final = re.compile(r"[\r\n\x00]")


class ProviderError(Exception):
    """The provider answered, but not with a usable completion."""


class ProviderHTTPError(ProviderError):
    """A non-2xx answer (or an error the provider sent inside a stream, with the status it
    stands for). `message` is the provider's own error message, redacted and bounded;
    `retry_after` the seconds its Retry-After (or Gemini's RetryInfo) asked for, if any;
    `auth` that the provider refused the gateway's key or account: 401, 403, 402 (billing:
    DeepSeek's balance, Anthropic's billing_error), or xAI's 400 for a wrong key."""

    def __init__(
        self,
        provider: str,
        status_code: int,
        message: str,
        retry_after: float | None = None,
        *,
        auth: bool = False,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.auth = auth or status_code in (401, 402, 403)
        super().__init__(f"{provider} answered HTTP {status_code}: {message}")


class ProviderStreamError(ProviderHTTPError):
    """An error event inside a stream that had started with 200."""


class ProviderResponseError(ProviderError):
    """A body the gateway cannot use: too large, not JSON, or not the provider's shape."""

    def __init__(self, provider: str, detail: str) -> None:
        self.provider = provider
        super().__init__(f"{provider} returned an answer the gateway cannot read: {detail}")


class ProviderConnectionError(ProviderError):
    """The connection to the provider failed (refused, reset, closed mid-answer)."""

    def __init__(self, provider: str, detail: str) -> None:
        self.provider = provider
        super().__init__(f"{provider} connection failed: {detail}")


class Redactor:
    """Removes every configured secret from text a provider sent."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or `retry-after-ms`."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def body_retry_after(body: Any) -> float | None:
    """Gemini's retry hint: `error.details[]` of type google.rpc.RetryInfo, `retryDelay` a
    protobuf Duration such as "38s" or "1.5s"."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        if (
            isinstance(detail, dict)
            and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo")
            and isinstance(detail.get("retryDelay"), str)
        ):
            match = _DURATION.match(detail["retryDelay"])
            if match:
                return float(match.group(1))
    return None


def error_message(body: Any) -> str:
    """The provider's error message field (OpenAI, Anthropic and Gemini all nest it under
    `error.message`; xAI sends `error` as a string), or a fixed phrase: never the raw body."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return "the provider's error body has no message"


def _is_key_error(body: Any) -> bool:
    """A 400 that means the gateway's key is wrong: xAI's string `error` ("Incorrect API key
    ..."), Gemini's `google.rpc.ErrorInfo` detail with reason API_KEY_INVALID."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return "api key" in error.lower()
    details = error.get("details") if isinstance(error, dict) else None
    return isinstance(details, list) and any(
        isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details
    )


class _Inflater:
    """A Content-Encoding undone a bounded piece at a time."""

    def __init__(self, provider: str, encoding: str) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise ProviderResponseError(provider, f"unsupported Content-Encoding {encoding!r}")
        self._provider = provider

    def pieces(self, data: bytes) -> list[bytes]:
        if self._z is None:
            return [data]
        out = []
        try:
            while data:
                piece = self._z.decompress(data, _PIECE)
                if piece:
                    out.append(piece)
                data = self._z.unconsumed_tail
        except zlib.error as exc:
            raise ProviderResponseError(self._provider, f"corrupt compressed body: {exc}") from None
        return out


class Upstream:
    """One provider response being read: status, headers (lower-case names), and the decoded
    body in pieces, each counted against the limit. `Transport.finish` ends the exchange."""

    def __init__(self, provider: str, connection: Connection, limit: int) -> None:
        self.provider = provider
        self.status = connection.status
        self.headers = connection.headers
        self.connection = connection
        self._limit = limit
        self._read = 0
        self._inflater = _Inflater(provider, connection.headers.get("content-encoding", ""))

    async def pieces(self) -> AsyncIterator[bytes]:
        connection = self.connection
        while True:
            try:
                data = await connection.piece()
            except HTTPProtocolError as exc:
                raise ProviderResponseError(self.provider, str(exc)) from None
            except OSError as exc:
                raise ProviderConnectionError(self.provider, f"the answer was cut: {exc}") from None
            if not data:
                return
            for piece in self._inflater.pieces(data):
                self._read += len(piece)
                if self._read > self._limit:
                    raise ProviderResponseError(
                        self.provider,
                        f"the answer is larger than {self._limit} bytes (LLM_MAX_RESPONSE_BYTES)",
                    )
                yield piece

    async def read(self) -> bytes:
        chunks = [piece async for piece in self.pieces()]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def json(self) -> Any:
        body = await self.read()
        try:
            return json.loads(body)
        except ValueError:
            raise ProviderResponseError(self.provider, "the answer is not JSON") from None

    async def events(self, max_event_bytes: int) -> AsyncIterator[SSEEvent]:
        """The body as server-sent events, as they arrive."""
        parser = SSEParser(max_event_bytes)
        async for piece in self.pieces():
            try:
                events = parser.feed(piece)
            except SSEError as exc:
                raise ProviderResponseError(self.provider, str(exc)) from None
            for event in events:
                yield event


class Transport:
    """Provider calls over one pool of keep-alive connections. How many run at once per
    provider is the gateway's to bound (its slots and LLM_POOL_TIMEOUT_SECONDS)."""

    def __init__(
        self,
        max_response_bytes: int,
        redact: Redactor,
        *,
        connect_timeout: float = 30.0,
        user_agent: str = "techno-os-api",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = max_response_bytes
        self.redact = redact
        self._pool = Pool(connect_timeout=connect_timeout, tls=tls)
        self._user_agent = f"User-Agent: {user_agent}\r\n"

    @property
    def max_response_bytes(self) -> int:
        return self._limit

    async def close(self) -> None:
        self._pool.close()

    @staticmethod
    def headers(own: Mapping[str, str]) -> dict[str, str]:
        """A provider's request headers: its own (authentication, version) and the JSON ones.
        Built once per adapter, not per call; a value that could split a header is refused."""
        headers = {**_JSON_HEADERS, **own}
        for name, value in headers.items():
            if _UNSAFE.search(name) or _UNSAFE.search(value):
                raise ValueError(f"header {name!r} holds a line break or NUL")
        return headers

    async def open(
        self,
        provider: str,
        url: str,
        payload: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Upstream:
        """Send the request (`headers` are all of them: see `headers()`); the response once
        its headers are in. The caller must `finish()` it."""
        where = target(url)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        head = "".join(
            [
                f"POST {where.path} HTTP/1.1\r\nHost: {where.host_header}\r\n",
                self._user_agent,
                f"Content-Length: {len(body)}\r\n",
                *(f"{name}: {value}\r\n" for name, value in headers.items()),
                "\r\n",
            ]
        ).encode("latin-1")
        connection: Connection | None = None
        try:
            connection = await self._pool.connection(where)
            connection.send(head, body)
            await connection.response_headers()
        except BaseException as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, HTTPProtocolError):
                raise ProviderResponseError(provider, str(exc)) from None
            if isinstance(exc, OSError):
                raise ProviderConnectionError(provider, str(exc) or type(exc).__name__) from None
            raise
        return Upstream(provider, connection, self._limit)

    def finish(self, upstream: Upstream, *, complete: bool) -> None:
        """End an exchange: a body read to its end returns the connection to the pool; any
        other end closes it, so the provider sees the request stop at once."""
        if complete:
            self._pool.release(upstream.connection)
        else:
            upstream.connection.close()

    async def post_json(
        self, provider: str, url: str, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """POST `payload`; the decoded JSON object of a 2xx answer, else `ProviderHTTPError`
        (or `ProviderResponseError` for an unusable body)."""
        upstream = await self.open(provider, url, payload, headers)
        complete = False
        try:
            if upstream.status >= 400:
                raise await self.http_error(upstream)
            body = await upstream.json()
            complete = True
        finally:
            self.finish(upstream, complete=complete)
        if not isinstance(body, dict):
            raise ProviderResponseError(provider, "the answer is not a JSON object")
        return body

    async def http_error(self, upstream: Upstream) -> ProviderHTTPError:
        """The error of a non-2xx answer, its body read (bounded)."""
        try:
            raw = await upstream.read()
        except (ProviderResponseError, ProviderConnectionError) as exc:
            raw = str(exc).encode()
        text = raw.decode("utf-8", errors="replace")
        log.warning(
            "%s answered HTTP %d: %s",
            upstream.provider,
            upstream.status,
            self.redact(text[:LOG_BODY_LIMIT]),
        )
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        message = (
            error_message(body) if body is not None else "the provider's error body is not JSON"
        )
        retry_after = retry_after_seconds(upstream.headers)
        if retry_after is None:
            retry_after = body_retry_after(body)
        return ProviderHTTPError(
            upstream.provider,
            upstream.status,
            self.redact(message)[:MESSAGE_LIMIT] or f"HTTP {upstream.status}",
            retry_after,
            auth=upstream.status == 400 and _is_key_error(body),
        )

    def stream_error(self, provider: str, status: int, body: Any) -> ProviderStreamError:
        """An error event a provider sent inside a stream, redacted and bounded."""
        log.warning(
            "%s sent an error in its stream: %s",
            provider,
            self.redact(json.dumps(body)[:LOG_BODY_LIMIT]),
        )
        return ProviderStreamError(
            provider,
            status,
            self.redact(error_message(body))[:MESSAGE_LIMIT],
            body_retry_after(body),
        )

"""Who is calling: the client key of an `Authorization: Bearer <key>` header, checked against
PostgreSQL through a small in-memory cache.

- A key checked in the last AUTH_CACHE_TTL_SECONDS is trusted without asking the database; so a
  revoked key stops working within that TTL, and the hot path costs a hash and a dict lookup.
- While PostgreSQL is unreachable, a key that was valid at its last check keeps working for up
  to AUTH_STALE_MAX_SECONDS after that check; a key not in the cache gets 503, never a pass.
- Unknown and revoked keys get the same answer, so an answer never tells whether a key exists.
  They are remembered for the TTL too, so the same wrong key does not query the database on
  every call.
- An address with AUTH_FAILURES_PER_MINUTE failed authentications in a clock minute gets 429
  for the rest of that minute, before its key is even looked at. Counted per API instance.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from techno_os_api.auth import keys
from techno_os_api.auth.keys import ClientKey
from techno_os_api.core.config import Settings
from techno_os_api.core.errors import AUTH_UNAVAILABLE, INVALID_API_KEY, RATE_LIMITED, APIError
from techno_os_api.db.api_keys import find_by_hash
from techno_os_api.db.calls import CallDatabase
from techno_os_api.db.engine import DatabaseUnavailable
from techno_os_api.llm.breaker import Clock
from techno_os_api.llm.metrics import Metrics

log = logging.getLogger(__name__)

_MAX_CACHED_KEYS = 10_000
_MAX_CACHED_MISSES = 10_000
_MAX_TRACKED_ADDRESSES = 100_000


class Failure(enum.Enum):
    """`api_auth_failures_total{reason}` and the message each reason gets."""

    MISSING = "missing"
    MALFORMED = "malformed"
    INVALID = "invalid"
    EXPIRED = "expired"


_MESSAGES = {
    Failure.MISSING: "missing API key: send `Authorization: Bearer <key>` (the SDK's api_key)",
    Failure.MALFORMED: "malformed API key: a client key is `tos_` followed by 43 characters",
    Failure.INVALID: "invalid API key",
    Failure.EXPIRED: "expired API key: ask the operators for a new one",
}


@dataclass
class _Entry:
    key: ClientKey | None  # None: unknown or revoked
    checked_at: float


class Authenticator:
    def __init__(
        self,
        calls: CallDatabase,
        settings: Settings,
        metrics: Metrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self._calls = calls
        self._metrics = metrics
        self._clock = clock
        self._ttl = settings.auth_cache_ttl_seconds
        self._stale_max = settings.auth_stale_max_seconds
        self._failures_allowed = settings.auth_failures_per_minute
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._misses: OrderedDict[bytes, _Entry] = OrderedDict()
        self._failures: dict[str, tuple[int, int]] = {}  # address -> (minute, failures)

    async def authenticate(self, authorization: str | None, address: str) -> ClientKey:
        """The key of a request, or `APIError` 401 / 429 / 503."""
        minute = int(self._clock() // 60)
        seen_minute, failures = self._failures.get(address, (minute, 0))
        if seen_minute == minute and failures >= self._failures_allowed:
            self._metrics.count_auth_failure("blocked")
            raise APIError(
                RATE_LIMITED,
                "too many failed authentications from this address; retry after the minute",
                retry_after=60 - self._clock() % 60,
            )
        secret = _bearer(authorization)
        if secret is None:
            self._fail(address, minute, Failure.MISSING)
        if not keys.is_well_formed(secret):
            self._fail(address, minute, Failure.MALFORMED)
        key = await self._lookup(keys.digest(secret))
        if key is None:
            self._fail(address, minute, Failure.INVALID)
        if key.expired(datetime.now(UTC)):
            self._fail(address, minute, Failure.EXPIRED)
        return key

    def forget(self) -> None:
        """Drop every cached verdict (tests, and after an operator revokes in bulk)."""
        self._cache.clear()
        self._misses.clear()

    async def _lookup(self, digest: bytes) -> ClientKey | None:
        now = self._clock()
        entry = self._cache.get(digest) or self._misses.get(digest)
        if entry is not None and now - entry.checked_at < self._ttl:
            return entry.key
        try:
            key = await find_by_hash(self._calls, digest)
        except DatabaseUnavailable as exc:
            if (
                entry is not None
                and entry.key is not None
                and now - entry.checked_at < self._stale_max
            ):
                log.warning("database unavailable; key %s served from cache: %s", entry.key.id, exc)
                return entry.key
            raise APIError(
                AUTH_UNAVAILABLE,
                "the key cannot be checked right now (database unavailable); retry shortly",
                retry_after=5,
            ) from None
        if key is not None and key.revoked_at is not None:
            key = None
        self._remember(digest, _Entry(key, now))
        return key

    def _remember(self, digest: bytes, entry: _Entry) -> None:
        self._cache.pop(digest, None)
        self._misses.pop(digest, None)
        table, limit = (
            (self._cache, _MAX_CACHED_KEYS) if entry.key else (self._misses, _MAX_CACHED_MISSES)
        )
        table[digest] = entry
        while len(table) > limit:
            table.popitem(last=False)

    def _fail(self, address: str, minute: int, failure: Failure) -> NoReturn:
        seen_minute, failures = self._failures.get(address, (minute, 0))
        failures = failures + 1 if seen_minute == minute else 1
        if len(self._failures) >= _MAX_TRACKED_ADDRESSES:
            self._failures = {a: v for a, v in self._failures.items() if v[0] == minute}
        self._failures[address] = (minute, failures)
        self._metrics.count_auth_failure(failure.value)
        raise APIError(INVALID_API_KEY, _MESSAGES[failure], extra={"reason": failure.value})


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return ""  # present but not a bearer token: malformed
    return credentials.strip()

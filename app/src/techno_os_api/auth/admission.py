"""Admission of a client's call under its key's limits, and settlement of what it really cost.

- Concurrent calls (`max_parallel`, default KEY_DEFAULT_MAX_PARALLEL) are counted per API
  instance, in memory: the limit protects this instance's circuit breakers and connection pools,
  which are per instance too, and costs nothing on the hot path.
- Requests and tokens per minute and the spend budget are shared by every instance: one call of
  `techno_os_admit()` in PostgreSQL checks them and reserves the call's maximum cost and tokens,
  atomically per key. Keys without such limits never touch the database on the way in.
- What a call really used is settled afterwards, in batches written every
  USAGE_FLUSH_INTERVAL_SECONDS by one background task (`techno_os_settle()`): the reservation is
  replaced by the real cost, and usage and spend accumulate per key and budget period.
- While PostgreSQL is unreachable, each instance admits from what it knows: per-minute limits
  and the budget headroom it last saw, each divided by LIMITS_OUTAGE_INSTANCES so the instances
  together stay within them. Settlements wait in memory and are written when the database is
  back: nothing is lost unless the process itself dies during the outage.

No web framework here; refusals are `APIError`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import NoReturn

from techno_os_api.auth.keys import ClientKey
from techno_os_api.core.config import Settings
from techno_os_api.core.errors import INSUFFICIENT_QUOTA, RATE_LIMITED, APIError, ErrorKind
from techno_os_api.db.calls import CallDatabase
from techno_os_api.db.engine import DatabaseUnavailable
from techno_os_api.llm.breaker import Clock
from techno_os_api.llm.metrics import Metrics

log = logging.getLogger(__name__)

_ADMIT = (
    "SELECT verdict, retry_after, headroom FROM techno_os_admit($1::text, $2::uuid, "
    "$3::int, $4::int, $5::int, $6::numeric, $7::text, $8::numeric, $9::float8)"
)
_SETTLE = (
    "SELECT techno_os_settle($1::text, $2::uuid, $3::timestamptz, $4::text, $5::int, "
    "$6::bigint, $7::bigint, $8::numeric, $9::numeric, $10::int)"
)
_PRUNE_WINDOWS = "DELETE FROM api_key_windows WHERE window_start < now() - interval '5 minutes'"


@dataclass
class Ticket:
    """One admitted call. Hand it back exactly once to `Admitter.settle`."""

    key: ClientKey
    tokens: int  # tokens reserved against the key's tokens per minute
    cost: Decimal  # USD reserved against the budget
    reservation: uuid.UUID | None  # the database reservation, when one was made
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    settled: bool = False


@dataclass
class _Pending:
    """Usage waiting to be written: one per reserved call, one aggregate per unreserved key."""

    key_id: str
    period: str
    reservation: uuid.UUID | None
    at: datetime
    reserved_cost: Decimal = Decimal(0)
    reserved_tokens: int = 0
    requests: int = 0
    prompt: int = 0
    completion: int = 0
    cost: Decimal = Decimal(0)


@dataclass
class _OutageWindow:
    """A key's per-minute counts on this instance while the database is unreachable."""

    minute: int
    requests: int = 0
    tokens: int = 0


class Admitter:
    def __init__(
        self,
        calls: CallDatabase,
        settings: Settings,
        metrics: Metrics,
        clock: Clock = time.time,
    ) -> None:
        self._calls = calls
        self._metrics = metrics
        self._clock = clock
        self._default_parallel = settings.key_default_max_parallel
        self._outage_share = settings.limits_outage_instances
        self._hold = settings.budget_reservation_hold_seconds
        self._flush_interval = settings.usage_flush_interval_seconds
        self._in_flight: dict[str, int] = {}
        self._reserved: list[_Pending] = []
        self._aggregate: dict[tuple[str, str], _Pending] = {}
        # Budget headroom each key had after its last admission that reached the database.
        self._headroom: dict[str, Decimal] = {}
        self._outage_spent: dict[str, Decimal] = {}
        self._outage_windows: dict[str, _OutageWindow] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    # --- admission -------------------------------------------------------------------------
    async def admit(self, key: ClientKey, tokens: int, cost: Decimal) -> Ticket:
        """Admit a call that may use up to `tokens` tokens and cost up to `cost` USD, or raise
        a 429. Nothing here reaches a provider."""
        self._check_size(key, tokens, cost)
        limit = key.max_parallel or self._default_parallel
        if self._in_flight.get(key.id, 0) >= limit:
            self._refuse(
                "parallel",
                f"this key already has {limit} call(s) in progress on this instance "
                "(max_parallel); wait for one to finish",
                retry_after=1,
            )
        self._in_flight[key.id] = self._in_flight.get(key.id, 0) + 1
        try:
            ticket = await self._admit_shared(key, tokens, cost)
        except BaseException:
            self._release(key.id)
            raise
        return ticket

    def _check_size(self, key: ClientKey, tokens: int, cost: Decimal) -> None:
        """A call larger than a whole limit could never pass: say so instead of 'retry later'."""
        if key.tpm is not None and tokens > key.tpm:
            self._metrics.count_refusal("tpm")
            raise APIError(
                RATE_LIMITED,
                f"this call may use up to {tokens} tokens (prompt estimate plus max_tokens), "
                f"more than the key's {key.tpm} tokens per minute: lower max_tokens",
                param="max_tokens",
                headers={"x-should-retry": "false"},
            )
        if key.budget_usd is not None and cost > key.budget_usd:
            self._refuse(
                "budget",
                f"this call may cost up to ${cost:.6f}, more than the key's whole "
                f"{key.budget_period.value} budget of ${key.budget_usd}: lower max_tokens",
                kind=INSUFFICIENT_QUOTA,
            )

    async def _admit_shared(self, key: ClientKey, tokens: int, cost: Decimal) -> Ticket:
        if not key.needs_shared_admission:
            return Ticket(key, tokens, cost, None)
        reserve = key.tpm is not None or key.budget_usd is not None
        reservation = uuid.uuid4() if reserve else None
        try:
            row = await self._calls.fetchrow(
                _ADMIT,
                key.id,
                reservation,
                key.rpm,
                key.tpm,
                tokens,
                key.budget_usd,
                key.budget_period.value,
                cost,
                self._hold,
            )
        except DatabaseUnavailable as exc:
            log.warning("limits checked on this instance only, database unavailable: %s", exc)
            return self._admit_during_outage(key, tokens, cost)
        assert row is not None
        verdict, retry_after, headroom = row["verdict"], row["retry_after"], row["headroom"]
        if headroom is not None:
            self._headroom[key.id] = headroom
        if verdict == "ok":
            self._outage_spent.pop(key.id, None)
            return Ticket(key, tokens, cost, reservation)
        self._refuse_verdict(key, verdict, retry_after)

    def _admit_during_outage(self, key: ClientKey, tokens: int, cost: Decimal) -> Ticket:
        minute = int(self._clock() // 60)
        window = self._outage_windows.get(key.id)
        if window is None or window.minute != minute:
            window = self._outage_windows[key.id] = _OutageWindow(minute)
        retry_after = 60 - self._clock() % 60
        if key.rpm is not None and window.requests >= math.ceil(key.rpm / self._outage_share):
            self._refuse_verdict(key, "rpm", retry_after)
        if key.tpm is not None and window.tokens + tokens > math.ceil(key.tpm / self._outage_share):
            self._refuse_verdict(key, "tpm", retry_after)
        if key.budget_usd is not None:
            known = self._headroom.get(key.id)
            if known is None:
                self._refuse(
                    "budget",
                    "the key's budget cannot be checked while the database is unavailable "
                    "and this instance has not seen it yet; retry shortly",
                    retry_after=5,
                )
            spent = self._outage_spent.get(key.id, Decimal(0))
            if spent + cost > known / self._outage_share:
                self._refuse_verdict(key, "budget", None)
            self._outage_spent[key.id] = spent + cost
        window.requests += 1
        window.tokens += tokens
        return Ticket(key, tokens, cost, None)

    def _refuse_verdict(self, key: ClientKey, verdict: str, retry_after: float | None) -> NoReturn:
        if verdict == "rpm":
            self._refuse("rpm", f"rate limit reached: {key.rpm} requests per minute", retry_after)
        if verdict == "tpm":
            self._refuse("tpm", f"rate limit reached: {key.tpm} tokens per minute", retry_after)
        if verdict == "budget_reserved":
            self._refuse(
                "budget",
                f"the rest of the key's {key.budget_period.value} budget is reserved by its "
                "calls in progress; retry when they finish",
                retry_after or 1,
            )
        self._refuse(
            "budget",
            f"the key's {key.budget_period.value} budget of ${key.budget_usd} is spent",
            kind=INSUFFICIENT_QUOTA,
        )

    def _refuse(
        self,
        reason: str,
        message: str,
        retry_after: float | None = None,
        kind: ErrorKind = RATE_LIMITED,
    ) -> NoReturn:
        self._metrics.count_refusal(reason)
        raise APIError(
            kind,
            message,
            retry_after=retry_after,
            extra={"limit": reason},
        )

    # --- settlement ------------------------------------------------------------------------
    def settle(
        self, ticket: Ticket, prompt: int, completion: int, cost: Decimal, *, sent: bool
    ) -> None:
        """Record what the call used (nothing when `sent` is False: it never reached a
        provider) and free its slot. Written to the database by the next flush."""
        if ticket.settled:
            return
        ticket.settled = True
        self._release(ticket.key.id)
        period = ticket.key.budget_period.value
        if ticket.reservation is not None:
            self._reserved.append(
                _Pending(
                    ticket.key.id,
                    period,
                    ticket.reservation,
                    ticket.at,
                    reserved_cost=ticket.cost,
                    reserved_tokens=ticket.tokens,
                    requests=int(sent),
                    prompt=prompt,
                    completion=completion,
                    cost=cost,
                )
            )
            return
        if not sent:
            return
        pending = self._aggregate.get((ticket.key.id, period))
        if pending is None:
            pending = self._aggregate[(ticket.key.id, period)] = _Pending(
                ticket.key.id, period, None, ticket.at
            )
        pending.requests += 1
        pending.prompt += prompt
        pending.completion += completion
        pending.cost += cost
        pending.at = max(pending.at, ticket.at)
        if ticket.key.budget_usd is not None:  # admitted during an outage
            spent = self._outage_spent.get(ticket.key.id)
            if spent is not None:
                self._outage_spent[ticket.key.id] = spent - ticket.cost + cost

    async def settle_now(
        self, ticket: Ticket, prompt: int, completion: int, cost: Decimal, *, sent: bool
    ) -> None:
        """`settle`, and a reservation written at once: the key's next call sees the budget
        and tokens it frees, not the reservation still held until the next flush."""
        self.settle(ticket, prompt, completion, cost, sent=sent)
        if ticket.reservation is None or not self._reserved:
            return
        batch, self._reserved = self._reserved, []
        try:
            await self._write(batch)
        except Exception as exc:  # kept; the periodic flush retries and reports
            log.debug("settlement deferred: %s", exc)

    def _release(self, key_id: str) -> None:
        left = self._in_flight.get(key_id, 0) - 1
        if left > 0:
            self._in_flight[key_id] = left
        else:
            self._in_flight.pop(key_id, None)

    @property
    def pending(self) -> int:
        return len(self._reserved) + len(self._aggregate)

    async def flush(self) -> bool:
        """Write the pending settlements in one transaction; keep them on failure."""
        if not self._reserved and not self._aggregate:
            return True
        batch = self._reserved + list(self._aggregate.values())
        self._reserved, self._aggregate = [], {}
        await self._write(batch)
        return True

    async def _write(self, batch: list[_Pending]) -> None:
        """One transaction for the batch; on any failure it is queued again, whole."""
        rows = [
            (
                p.key_id,
                p.reservation,
                p.at,
                p.period,
                p.requests,
                p.prompt,
                p.completion,
                p.cost,
                p.reserved_cost,
                p.reserved_tokens,
            )
            for p in batch
        ]
        try:
            await self._calls.executemany(_SETTLE, rows)  # one transaction
            if self._clock() - self._last_prune > 60:
                await self._calls.fetchrow(_PRUNE_WINDOWS)
                self._last_prune = self._clock()
        except BaseException:
            self._requeue(batch)
            raise

    def _requeue(self, batch: list[_Pending]) -> None:
        for pending in batch:
            if pending.reservation is not None:
                self._reserved.append(pending)
                continue
            current = self._aggregate.get((pending.key_id, pending.period))
            if current is None:
                self._aggregate[(pending.key_id, pending.period)] = pending
                continue
            current.requests += pending.requests
            current.prompt += pending.prompt
            current.completion += pending.completion
            current.cost += pending.cost
            current.at = max(current.at, pending.at)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="usage-flush")

    async def stop(self, timeout: float = 5.0) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(timeout):
                await self.flush()
        if self.pending:
            log.error("%d usage record(s) could not be written at shutdown", self.pending)

    async def _flush_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
            except DatabaseUnavailable as exc:
                if not failing:
                    log.warning("usage kept in memory until the database is back: %s", exc)
                failing = True
                continue
            except Exception:
                log.exception("writing usage failed; kept in memory, retried")
                failing = True
                continue
            if failing:
                log.info("usage written again; the database is back")
                failing = False

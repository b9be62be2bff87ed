"""Client keys on the running stack (drills, disposable inventories): keys made with the
operators' tool (`make api-key`, tools/api_key.py) and used as a client uses them, through
https://api.<domain> on the edge. A key's per-minute limit holds across every API host, its
budget is never overspent, and a revoked key stops working everywhere within the cache TTL.
Each drill prints what a client felt (answers by status, seconds to revocation)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from ._load import public_calls
from ._support import Target, api_key_tool, wait_until

pytestmark = pytest.mark.drill

CHAT = {
    "method": "POST",
    "path": "/v1/chat/completions",
    "body": {"model": "fake/echo", "messages": [{"role": "user", "content": "hello"}]},
}
# The provider stand-in (tasks/standin.py) answers as OpenAI does, usage included; the shipped
# price table prices gpt-4o-mini, so each call costs a real, small amount.
PRICED_CHAT = {
    "method": "POST",
    "path": "/v1/chat/completions",
    "body": {
        "model": "openai/gpt-4o-mini",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "count the budget down"}],
    },
}


@pytest.fixture(scope="module")
def edge(sandbox) -> Target:
    for t in sandbox.hosts:
        if not t.disposable:
            pytest.fail(f"refusing to run a drill against {t.name}: not disposable")
    for api in sandbox.by_role("api"):
        api.wait_api_ready()
    return sandbox.the("edge")


@pytest.fixture
def new_key() -> Iterator[Any]:
    """Make keys with the operators' tool; every one made is revoked afterwards."""
    made: list[str] = []

    def make(*options: str) -> dict[str, Any]:
        created = api_key_tool("create", "--user", "drill-keys", *options)
        made.append(created["id"])
        return created

    yield make
    for key_id in made:
        api_key_tool("revoke", key_id)


def db_seconds(sandbox) -> int:
    """The second of the minute on the database's clock (the limits' windows are its minutes)."""
    db = sandbox.the("db")
    return int(db.check("date -u +%S").strip())


def test_a_keys_requests_per_minute_hold_across_every_api_host(
    sandbox, edge: Target, new_key, capsys: Any
) -> None:
    created = new_key("--name", "drill rpm", "--rpm", "6")
    # The burst stays inside one minute of the database's clock: the window is that minute.
    wait_until(lambda: db_seconds(sandbox) < 40, timeout=30, what="the start of a minute")
    answers = public_calls(edge, created["key"], [CHAT] * 10)
    statuses = Counter(a["status"] for a in answers)
    with capsys.disabled():
        hosts = len(sandbox.by_role("api"))
        print(f"\n    rpm 6, 10 calls through {hosts} API host(s): {statuses}")
    assert statuses == {200: 6, 429: 4}, answers
    for refused in (a for a in answers if a["status"] == 429):
        assert refused["type"] == "rate_limit_exceeded", refused
        assert refused["retry_after"] and 0 < int(refused["retry_after"]) <= 60, refused
    # The refusals are the key's, counted as such on the API hosts.
    refused_total = sum(
        api.metrics().value("api_requests_refused_total", reason="rpm")
        for api in sandbox.by_role("api")
    )
    assert refused_total >= 4


def test_a_budget_is_never_overspent(sandbox, edge: Target, new_key, capsys: Any) -> None:
    # A call reserves its most (a prompt of ~75 tokens by the byte-count bound, 16 completion
    # tokens: ~21 µUSD) and costs what the stand-in reports (~2 µUSD): a few calls pass, then
    # the reservation no longer fits beside what was spent.
    budget = Decimal("0.00003")
    created = new_key("--name", "drill budget", "--budget-usd", str(budget))
    answers = public_calls(edge, created["key"], [PRICED_CHAT] * 12)
    statuses = [a["status"] for a in answers]
    with capsys.disabled():
        print(f"\n    budget {budget} USD, 12 priced calls: {Counter(statuses)}")
    assert statuses[:2] == [200, 200], answers[:2]
    assert 429 in statuses, f"a budget of {budget} USD was never reached: {answers}"
    first_refusal = statuses.index(429)
    # Once refused, refused: nothing is spent any more.
    assert set(statuses[first_refusal:]) == {429}, statuses
    assert {a["type"] for a in answers[first_refusal:]} == {"insufficient_quota"}, answers
    usage = api_key_tool("show", created["id"])["usage"]
    assert Decimal(usage["spent_usd"]) > 0, usage
    assert Decimal(usage["spent_usd"]) + Decimal(usage["reserved_usd"]) <= budget, usage
    assert usage["requests"] == first_refusal, usage


def test_a_revoked_key_stops_working_on_every_api_host_within_the_cache_ttl(
    sandbox, edge: Target, new_key, capsys: Any
) -> None:
    created = new_key("--name", "drill revocation")
    assert public_calls(edge, created["key"], [CHAT])[0]["status"] == 200
    ttl = float(edge.data.get("auth_cache_ttl_seconds") or 30)
    api_key_tool("revoke", created["id"])
    revoked_at = time.monotonic()
    # Every API host's cache must have let go: several answers in a row, all 401.
    calls = [CHAT] * (4 * len(sandbox.by_role("api")))

    probe_began = [revoked_at]

    def refused_everywhere() -> bool:
        # A probe is several calls over SSH and TLS: when it began bounds the refusal better
        # than when the loop noticed, on a loaded machine.
        probe_began[0] = time.monotonic()
        return {a["status"] for a in public_calls(edge, created["key"], calls)} == {401}

    wait_until(refused_everywhere, timeout=ttl + 15, what="the revoked key refused", interval=1)
    noticed = time.monotonic() - revoked_at
    began = probe_began[0] - revoked_at
    with capsys.disabled():
        print(
            f"\n    revoked key refused everywhere by the probe begun {began:.1f} s after the "
            f"revocation (seen at {noticed:.1f} s; cache TTL {ttl:g} s)"
        )
    answer = public_calls(edge, created["key"], [CHAT])[0]
    assert answer["type"] == "invalid_api_key", answer

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
    ttl = float(edge.data.get("auth_cache_ttl_seconds") or 30)
    # Every API host learns the key (and caches it) before the revocation.
    calls = [CHAT] * (2 * len(sandbox.by_role("api")))
    assert {a["status"] for a in public_calls(edge, created["key"], calls)} == {200}
    cached_by = time.monotonic()  # every cache entry of this key was made before this
    api_key_tool("revoke", created["id"])
    revoked_at = time.monotonic()
    # One probe once every cache has had its TTL, not a poll: each refused call counts
    # towards the per-address limit on failed authentications (20 a minute, then 429), which
    # a dense poll would reach before the caches let go.
    time.sleep(max(0.0, cached_by + ttl + 1 - time.monotonic()))
    answers = public_calls(edge, created["key"], calls)
    probed = time.monotonic() - revoked_at
    with capsys.disabled():
        print(
            f"\n    revoked key: {sorted(a['status'] for a in answers)} from every API host "
            f"{probed:.1f} s after the revocation, {ttl + 1:g} s after it was cached "
            f"(cache TTL {ttl:g} s)"
        )
    assert {a["status"] for a in answers} == {401}, answers
    answer = public_calls(edge, created["key"], [CHAT])[0]
    assert answer["type"] == "invalid_api_key", answer

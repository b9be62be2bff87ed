"""Runbook § MÉTRICAS LLM, streaming e fallbacks: drills through the public proxy, as a client
feels them. The official `openai` SDK (on the control machine, tests/infra/_public_client.py)
calls https://api.<domain> on the edge: TLS to Caddy, HAProxy, each API host's front, the live
release, and the provider stand-in on each API host (files/standin/llm_standin.py), which serves
`openai` and `anthropic` in their own wire formats.

- A stream's events reach the client as the provider sends them (nothing buffers on the way),
  it ends with `data: [DONE]`, and `stream_options.include_usage` gives the usage chunk.
- A provider that fails mid-stream: the client gets the final SSE error event
  (`stream_interrupted`, the SDK raises it) and `llm_errors_total{error_type="stream_interrupted"}`
  counts it.
- A client that leaves mid-stream: the stand-in sees its connection closed within 1 s.
- A fallback while the primary's circuit is open (group data `llm_fallbacks`; the sandbox's
  chain is anthropic -> openai): the alternative answers, `model` and `x-techno-os-provider`
  name it, `llm_fallbacks_total{from_provider,to_provider}` counts it, and a key that may not use
  the alternative is refused instead.

Each drill also shows its check failing on the broken case (a stream delivered all at once, a
stream that ends well, a client that leaves late, a key without the alternative), prints its
figures, and leaves the stand-ins and the circuits as it found them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from ._public_client import PublicClient, PublicProxy, Wire
from ._support import Target, api_key_tool, wait_until

pytestmark = pytest.mark.drill

STREAMED = "openai/gpt-4o-mini"  # served by the stand-in in OpenAI's wire format
MESSAGES = [{"role": "user", "content": "streaming drill"}]
# The stand-in's defaults, put back after every drill.
STANDIN_DEFAULTS: dict[str, Any] = {
    "mode": "ok",
    "hang_seconds": 60,
    "stream_fail_after": None,
    "stream_fail_mode": "drop",
    "chunk_delay": 0,
    "first_chunk_delay": 0,
    "format_modes": {},
    "reset": True,
}
CLOSED, OPEN = 0.0, 1.0
# The whole way from the stand-in to the client (the API, two HAProxy, Caddy, TLS, the tunnel)
# adds ~0.1 s to the first event here; HAProxy holding small pieces back added 0.2 s per hop.
FIRST_EVENT_MARGIN = 0.3


class Stack:
    """The API hosts and their stand-ins, seen from each API host's loopback."""

    def __init__(self, apis: list[Target]) -> None:
        self.apis = apis
        env = apis[0].env_file()
        self.threshold = int(env.get("LLM_CIRCUIT_FAILURE_THRESHOLD", 3))
        chains = [c for c in env.get("LLM_FALLBACKS", "").split(";") if "=" in c]
        assert chains, (
            "LLM_FALLBACKS is empty on the sandbox: deploy it with group data llm_fallbacks "
            "(group_data/local.py)"
        )
        primary, _, targets = chains[0].partition("=")
        self.primary = primary.strip()
        self.alternative = targets.split(",")[0].strip()  # provider/model
        for api in apis:
            assert api.host.service("techno-os-llm-standin").is_running, (
                f"{api.name}: the provider stand-in is not running (group data llm_standin)"
            )

    def standins(self, **body: Any) -> list[dict[str, Any]]:
        """POST (or GET, without a body) every API host's stand-in control endpoint."""
        states = []
        for api in self.apis:
            url = f"http://127.0.0.1:{api.cfg('standin_port')}/_control?all=1"
            response = api.http("POST" if body else "GET", url, body or None)
            assert response.status == 200, f"{api.name} stand-in: {response.status} {response.body}"
            states.append(response.json())
        return states

    def standin_total(self, name: str, key: str | None = None) -> int:
        states = self.standins()
        return sum(int(s[name] if key is None else s[name].get(key, 0)) for s in states)

    def metric(self, name: str, **labels: str) -> float:
        return sum(api.metrics().value(name, **labels) for api in self.apis)

    def circuits(self, provider: str) -> list[float]:
        return [api.metrics().value("llm_circuit_state", provider=provider) for api in self.apis]

    def consecutive_failures(self, provider: str) -> list[int]:
        counts = []
        for api in self.apis:
            response = api.api("GET", "/llm/providers")
            assert response.status == 200, f"{api.name} /llm/providers: {response.status}"
            (state,) = [p for p in response.json()["providers"] if p["name"] == provider]
            counts.append(int(state["consecutive_failures"]))
        return counts

    def restart_apis(self) -> None:
        """The runbook's `docker restart techno-os-api` on every API host: CLOSED circuits."""
        for api in self.apis:
            api.check("docker restart %s", api.cfg("api_container"))
        for api in self.apis:
            api.wait_api_healthy()


@pytest.fixture(scope="module")
def stack(sandbox) -> Stack:
    for t in sandbox.hosts:
        if not t.disposable:
            pytest.fail(f"refusing to run a drill against {t.name}: not disposable")
    apis = sandbox.by_role("api")
    for api in apis:
        api.wait_api_ready()
    return Stack(apis)


@pytest.fixture(scope="module")
def proxy(sandbox, stack: Stack) -> Iterator[PublicProxy]:
    with PublicProxy(sandbox.the("edge")) as tunnel:
        yield tunnel


@pytest.fixture(scope="module")
def client(proxy: PublicProxy, stack: Stack) -> PublicClient:
    key = stack.apis[0].api_key
    assert key, "the drills' client key is unknown (secrets file: SANDBOX_API_KEY)"
    return proxy.client(key)


@pytest.fixture(autouse=True)
def standins_at_rest(stack: Stack) -> Iterator[None]:
    stack.standins(**STANDIN_DEFAULTS)
    yield
    stack.standins(**STANDIN_DEFAULTS)


# --- a streamed call, as the client saw it ------------------------------------------------------
@dataclass
class Streamed:
    started: float
    headers: dict[str, str]
    chunks: list[tuple[float, ChatCompletionChunk]] = field(default_factory=list)
    error: openai.APIError | None = None
    left_at: float | None = None  # time.time() when the client closed the stream early
    wire: Wire = field(default_factory=Wire)

    @property
    def offsets(self) -> list[float]:
        """Seconds from the request to each chunk the SDK yielded."""
        return [round(at - self.started, 3) for at, _ in self.chunks]

    @property
    def text(self) -> str:
        return "".join(c.choices[0].delta.content or "" for _, c in self.chunks if c.choices)


def stream_chat(
    client: PublicClient,
    model: str = STREAMED,
    *,
    leave_after_first: float | None = None,
) -> Streamed:
    """One `stream=True` call with include_usage, read to its end (or, with
    `leave_after_first`, closed that many seconds after the first chunk)."""
    started = time.monotonic()
    stream = client.sdk.chat.completions.create(
        model=model,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    seen = Streamed(started, dict(stream.response.headers))
    try:
        for chunk in stream:
            seen.chunks.append((time.monotonic(), chunk))
            if leave_after_first is not None:
                time.sleep(leave_after_first)
                break
    except openai.APIError as exc:
        seen.error = exc
    finally:
        stream.close()
        if leave_after_first is not None:
            seen.left_at = time.time()
        seen.wire = client.wire
    return seen


# --- the checks (each shown failing on its broken case) -----------------------------------------
def check_events_arrive_as_sent(seen: Streamed, chunk_delay: float) -> float:
    """Each event is passed on when it comes: the first content event (sent by the stand-in
    `chunk_delay` after the request) reaches the client within FIRST_EVENT_MARGIN of that, and
    the first chunk arrives at least two chunk delays before the last. Returns that spread."""
    assert len(seen.chunks) >= 3, f"only {len(seen.chunks)} chunk(s): {seen.offsets}"
    late = seen.offsets[0] - chunk_delay
    assert late <= FIRST_EVENT_MARGIN, (
        f"the first event came {late:.3f} s after the provider sent it (offsets "
        f"{seen.offsets}): something between the API and the client held it back"
    )
    spread = seen.chunks[-1][0] - seen.chunks[0][0]
    assert spread >= 2 * chunk_delay, (
        f"the chunks arrived together (first to last {spread:.3f} s, offsets {seen.offsets}): "
        "something between the API and the client buffered the stream"
    )
    return spread


def check_stream_ends_well(seen: Streamed) -> None:
    """No error, `data: [DONE]` last on the wire, and a usage chunk that adds up."""
    assert seen.error is None, f"the SDK raised {seen.error!r}"
    events = seen.wire.events()
    assert events and events[-1] == "[DONE]", f"the stream did not end with [DONE]: {events[-2:]}"
    usage_chunk = seen.chunks[-1][1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None, usage_chunk
    usage = usage_chunk.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage


def check_stream_interrupted(seen: Streamed) -> None:
    """The SDK raised the final error event; the wire ends with it, never with [DONE]."""
    assert isinstance(seen.error, openai.APIError), f"the SDK raised nothing ({seen.offsets})"
    body = seen.error.body
    assert isinstance(body, dict) and body.get("code") == "stream_interrupted", body
    events = seen.wire.events()
    assert "[DONE]" not in events, f"an interrupted stream ended with [DONE]: {events[-2:]}"
    assert '"stream_interrupted"' in events[-1], f"the last event is not the error: {events[-1]}"


# --- the drills --------------------------------------------------------------------------------
def test_the_sdk_streams_through_the_proxy_as_the_provider_sends(
    stack: Stack, client: PublicClient, capsys: Any
) -> None:
    delay = 0.4
    stack.standins(chunk_delay=delay)
    seen = stream_chat(client)
    spread = check_events_arrive_as_sent(seen, delay)
    check_stream_ends_well(seen)
    assert seen.text == "stand-in reply", seen.text
    assert seen.headers.get("content-type", "").startswith("text/event-stream"), seen.headers
    assert seen.headers.get("x-techno-os-provider") == "openai", seen.headers

    # The same stream delivered all at once at the same moment (what a buffering proxy hands
    # its client): the check refuses it.
    stack.standins(chunk_delay=0, first_chunk_delay=5 * delay)
    bunched = stream_chat(client)
    check_stream_ends_well(bunched)
    with pytest.raises(AssertionError, match="held it back"):
        check_events_arrive_as_sent(bunched, delay)
    # The same arrivals timed from `delay` before the first: on time, yet all together.
    on_time = Streamed(bunched.chunks[0][0] - delay, bunched.headers, bunched.chunks)
    with pytest.raises(AssertionError, match="buffered"):
        check_events_arrive_as_sent(on_time, delay)
    with capsys.disabled():
        print(
            f"\n    chunk_delay {delay} s: chunks at {seen.offsets} s (first to last "
            f"{spread:.2f} s); sent at once: {bunched.offsets} s"
        )


def test_a_provider_failing_mid_stream_ends_with_the_error_event_and_is_counted(
    stack: Stack, client: PublicClient, capsys: Any
) -> None:
    labels = {"provider": "openai", "error_type": "stream_interrupted"}
    before = stack.metric("llm_errors_total", **labels)
    whole = stream_chat(client)  # the same call, the provider well: no error, nothing counted
    check_stream_ends_well(whole)
    with pytest.raises(AssertionError, match="raised nothing"):
        check_stream_interrupted(whole)
    assert stack.metric("llm_errors_total", **labels) == before

    # Role and two words sent, then the provider drops the connection.
    stack.standins(chunk_delay=0.2, stream_fail_after=3, stream_fail_mode="drop")
    cut = stream_chat(client)
    check_stream_interrupted(cut)
    assert cut.text == "stand-in reply", f"the chunks before the failure were lost: {cut.text!r}"
    counted = stack.metric("llm_errors_total", **labels) - before
    assert counted == 1, f"llm_errors_total{{error_type=stream_interrupted}} moved by {counted}"
    with capsys.disabled():
        print(
            f"\n    cut after 3 provider events: {len(cut.chunks)} chunk(s) at {cut.offsets} s, "
            f"then {cut.error.__class__.__name__}: {cut.error}; stream_interrupted +{counted:g}"
        )

    # A breaker failure: one successful call on each host clears it again.
    stack.standins(**STANDIN_DEFAULTS)
    for api in stack.apis:
        body = {"model": STREAMED, "messages": MESSAGES}
        assert api.api("POST", "/v1/chat/completions", body).status == 200
    assert stack.consecutive_failures("openai") == [0] * len(stack.apis)


def test_a_client_that_leaves_is_seen_gone_by_the_provider_within_a_second(
    stack: Stack, client: PublicClient, capsys: Any
) -> None:
    delay = 3.0  # between provider events: the client leaves long before the next one

    def leave(after: float) -> tuple[Streamed, dict[str, Any]]:
        before = [s["disconnects"] for s in stack.standins()]
        seen = stream_chat(client, leave_after_first=after)

        def gone() -> list[dict[str, Any]]:
            states = stack.standins()
            return [s for s, n in zip(states, before, strict=True) if s["disconnects"] > n]

        moved = wait_until(
            gone,
            timeout=2 * delay + 5,
            what="the stand-in sees the client's connection closed",
            interval=0.1,
        )
        assert len(moved) == 1, f"disconnects on several hosts for one stream: {moved}"
        return seen, moved[0]["last_disconnect"]

    stack.standins(chunk_delay=delay)
    seen, last = leave(after=0)
    # From the last event the provider sent (the first the client got) to the stand-in seeing
    # the connection closed: the event's way to the client, the client's close and the close's
    # way back through Caddy, HAProxy and the API, with no clock shared between hosts.
    assert last["chunks_sent"] < 4, f"the stream went on after the client left: {last}"
    assert last["seconds_after_last_chunk"] <= 1.0, f"seen gone after {last}"
    clock = round(last["at"] - (seen.left_at or 0), 3)

    # A client that stays 2 s after its first chunk: the same measure shows it, over the bound.
    late, late_last = leave(after=2.0)
    assert late_last["seconds_after_last_chunk"] >= 1.5, late_last
    assert stack.consecutive_failures("openai") == [0] * len(stack.apis), "a breaker verdict"
    with capsys.disabled():
        print(
            f"\n    client left at its first chunk ({seen.offsets[0]} s): stand-in saw it "
            f"{last['seconds_after_last_chunk']} s after its last event ({clock} s after the "
            f"close by the shared clock); leaving 2 s later: "
            f"{late_last['seconds_after_last_chunk']} s"
        )


def test_a_fallback_answers_while_the_primarys_circuit_is_open(
    stack: Stack, proxy: PublicProxy, client: PublicClient, capsys: Any
) -> None:
    primary, alternative = stack.primary, stack.alternative
    to_provider = alternative.split("/")[0]
    fmt = {"openai": "openai", "anthropic": "anthropic", "google": "gemini"}
    model = f"{primary}/drill-model"
    fallbacks = {"from_provider": primary, "to_provider": to_provider}
    restricted = api_key_tool(
        "create", "--user", "drill-fallback", "--name", "primary only", "--providers", primary
    )
    try:
        # The primary's API fails at the stand-in, the alternative's answers.
        stack.standins(format_modes={fmt[primary]: "fail500"})
        opened_with = 0
        while OPEN not in stack.circuits(primary) or set(stack.circuits(primary)) != {OPEN}:
            assert opened_with < 4 * stack.threshold * len(stack.apis), stack.circuits(primary)
            raw = client.sdk.chat.completions.with_raw_response.create(
                model=model,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
            assert raw.parse().model == alternative, raw.parse().model  # a failure fell back
            opened_with += 1

        before = {
            "fallbacks": stack.metric("llm_fallbacks_total", **fallbacks),
            "circuit_open": stack.metric(
                "llm_errors_total", provider=primary, error_type="circuit_open"
            ),
            "primary": stack.standin_total("requests_by_format", fmt[primary]),
            "alternative": stack.standin_total("requests_by_format", fmt[to_provider]),
        }
        answers = []
        for _ in range(3):
            raw = client.sdk.chat.completions.with_raw_response.create(
                model=model,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
            answers.append((raw.headers.get("x-techno-os-provider"), raw.parse().model))
        streamed = stream_chat(client, model)
        check_stream_ends_well(streamed)
        answers.append((streamed.headers.get("x-techno-os-provider"), streamed.chunks[0][1].model))
        assert answers == [(to_provider, alternative)] * 4, answers

        after = {
            "fallbacks": stack.metric("llm_fallbacks_total", **fallbacks),
            "circuit_open": stack.metric(
                "llm_errors_total", provider=primary, error_type="circuit_open"
            ),
            "primary": stack.standin_total("requests_by_format", fmt[primary]),
            "alternative": stack.standin_total("requests_by_format", fmt[to_provider]),
        }
        moved = {name: after[name] - before[name] for name in before}
        assert moved == {"fallbacks": 4, "circuit_open": 4, "primary": 0, "alternative": 4}, moved

        # A key that may use the primary only gets the open circuit, not the alternative.
        limited = proxy.client(restricted["key"])
        with pytest.raises(openai.APIStatusError) as refused:
            limited.sdk.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        assert refused.value.status_code == 503, refused.value
        assert refused.value.body["code"] == "circuit_open", refused.value.body  # type: ignore[index]
        assert stack.standin_total("requests_by_format", fmt[to_provider]) == after["alternative"]

        # Nothing went anywhere but the chain's providers.
        served = {f for s in stack.standins() for f in s["requests_by_format"]}
        assert served <= {fmt[primary], fmt[to_provider]}, served
        with capsys.disabled():
            print(
                f"\n    {primary} failing: circuit OPEN on {len(stack.apis)} host(s) after "
                f"{opened_with} call(s), each answered by {alternative}; then 4 calls: {moved}; "
                f"a key for {primary} only: {refused.value.status_code} circuit_open"
            )
    finally:
        api_key_tool("revoke", restricted["id"])
        stack.standins(**STANDIN_DEFAULTS)
        stack.restart_apis()
    assert stack.circuits(primary) == [CLOSED] * len(stack.apis)

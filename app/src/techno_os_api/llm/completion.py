"""The neutral answer every provider adapter translates to: a whole completion, or the events of
a stream. Finish reasons are already OpenAI's; usage is `llm.usage.Usage` (OpenAI's inclusive
counting, with the cache and reasoning details the provider gave).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from techno_os_api.llm.usage import Usage

# OpenAI's `finish_reason` values the gateway answers with; every provider's native reasons are
# mapped onto these by meaning (each adapter holds its table).
STOP: Final = "stop"
LENGTH: Final = "length"
TOOL_CALLS: Final = "tool_calls"
CONTENT_FILTER: Final = "content_filter"
FINISH_REASONS: Final = (STOP, LENGTH, TOOL_CALLS, CONTENT_FILTER)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI carries it


@dataclass(frozen=True, slots=True)
class Completion:
    content: str | None
    finish_reason: str  # one of FINISH_REASONS
    usage: Usage
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    native_finish_reason: str | None = None  # the provider's own, for the log


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """A piece of a streamed tool call, as OpenAI streams them: the first piece of each call
    has its `id` and `name`; the following ones only more `arguments` text."""

    index: int  # the call's position among the answer's calls
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """One event of a stream. Content (text, refusal text, tool call pieces) comes first; the
    last event has the finish reason and, when the provider sent it, the usage. An event with
    nothing set is the model's hidden reasoning (thinking, `reasoning_content`): tokens that
    keep the stream's timers alive but that the client is not shown."""

    content: str | None = None
    refusal: str | None = None
    tool_calls: tuple[ToolCallFragment, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None


THINKING: Final = Delta()

"""Token usage: what a provider reported for a call, and the conservative estimate a call is
admitted with before anyone knows.

The estimate is an upper bound, so a budget reserved with it is never too small: a call may use
at most its `max_tokens` of completion, and its prompt at most one token per UTF-8 byte of the
request's JSON (the tokenizers of every provider here map at least one byte to a token; the JSON
punctuation around the text more than covers each message's few framing tokens), plus
IMAGE_TOKENS per image, the most any provider bills for one image at its largest accepted size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

IMAGE_TOKENS: Final = 6_000


@dataclass(frozen=True)
class Usage:
    """Usage in OpenAI's terms: prompt_tokens holds every billed input token (cache writes and
    reads included), completion_tokens every output token (reasoning / thinking included)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # of prompt_tokens, read from the provider's cache
    cache_write_tokens: int | None = None  # of prompt_tokens, written to the provider's cache
    reasoning_tokens: int | None = None  # of completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens is not None or self.cache_write_tokens is not None:
            details: dict[str, int] = {"cached_tokens": self.cached_tokens or 0}
            if self.cache_write_tokens is not None:
                details["cache_write_tokens"] = self.cache_write_tokens
            usage["prompt_tokens_details"] = details
        if self.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage


def estimate_prompt_tokens(messages: Iterable[Mapping[str, Any]], *extra: Any) -> int:
    """An upper bound of the prompt's tokens (see the module's docstring)."""
    images = 0
    size = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            kept = []
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "image_url":
                    images += 1
                else:
                    kept.append(part)
            message = {**message, "content": kept}
        size += len(json.dumps(message, ensure_ascii=False).encode())
    for value in extra:
        if value is not None:
            size += len(json.dumps(value, ensure_ascii=False, default=str).encode())
    return size + images * IMAGE_TOKENS + 16

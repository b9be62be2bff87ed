"""What a call costs: USD per million prompt and completion tokens, per provider and model.

The table below ships with the app: the providers' public list prices when this release was
made (standard tier, no batch or cache discounts, which only ever makes a cost higher than the
bill). Each provider has a `default` for models it does not list, set high on purpose: an unknown
model must not let a budget overspend. `LLM_PRICES_FILE` names a JSON file of the same shape
whose entries replace the shipped ones (an operator's contract prices, a new model):

    {"openai": {"default": {"prompt": 5, "completion": 15},
                "models": {"gpt-4o-mini": {"prompt": 0.15, "completion": 0.6}}}}

A model matches its own name, or the longest listed name it extends with `-...` (a dated
snapshot like `gpt-4o-mini-2024-07-18` costs what `gpt-4o-mini` costs). The cost metric's
`model` label is that listed name, or `other`: label values never come from client input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from techno_os_api.core.config import KNOWN_PROVIDERS

OTHER_MODEL: Final = "other"
_MILLION: Final = Decimal(1_000_000)

# USD per million tokens: (prompt, completion).
SHIPPED: Final[dict[str, dict[str, Any]]] = {
    # The in-process echo: a small price so budgets can be exercised without a real provider.
    "fake": {"default": (1.0, 2.0), "models": {"echo": (1.0, 2.0)}},
    "openai": {
        "default": (15.0, 60.0),
        "models": {
            "gpt-4o": (2.5, 10.0),
            "gpt-4o-mini": (0.15, 0.6),
            "gpt-4.1": (2.0, 8.0),
            "gpt-4.1-mini": (0.4, 1.6),
            "gpt-4.1-nano": (0.1, 0.4),
            "o1": (15.0, 60.0),
            "o3": (2.0, 8.0),
            "o3-mini": (1.1, 4.4),
            "o4-mini": (1.1, 4.4),
        },
    },
    "anthropic": {
        "default": (15.0, 75.0),
        "models": {
            "claude-3-5-haiku": (0.8, 4.0),
            "claude-3-5-sonnet": (3.0, 15.0),
            "claude-3-7-sonnet": (3.0, 15.0),
            "claude-3-haiku": (0.25, 1.25),
            "claude-sonnet-4": (3.0, 15.0),
            "claude-opus-4": (15.0, 75.0),
        },
    },
    "google": {
        "default": (2.5, 15.0),
        "models": {
            "gemini-2.0-flash": (0.1, 0.4),
            "gemini-2.0-flash-lite": (0.075, 0.3),
            "gemini-2.5-flash": (0.3, 2.5),
            "gemini-2.5-pro": (2.5, 15.0),
            "gemini-1.5-flash": (0.075, 0.3),
            "gemini-1.5-pro": (2.5, 10.0),
        },
    },
    "xai": {
        "default": (5.0, 25.0),
        "models": {
            "grok-2": (2.0, 10.0),
            "grok-3": (3.0, 15.0),
            "grok-3-mini": (0.3, 0.5),
            "grok-4": (3.0, 15.0),
        },
    },
    "deepseek": {
        "default": (1.0, 4.0),
        "models": {"deepseek-chat": (0.27, 1.1), "deepseek-reasoner": (0.55, 2.19)},
    },
}


class PriceTableError(ValueError):
    """The price table (shipped or overriding) is malformed; the message says where."""


@dataclass(frozen=True)
class Price:
    prompt: Decimal  # USD per million tokens
    completion: Decimal

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / _MILLION


@dataclass(frozen=True)
class PricedModel:
    label: str  # the table's name for the model, or OTHER_MODEL
    price: Price


def _price(where: str, value: Any) -> Price:
    if isinstance(value, Mapping):
        if set(value) != {"prompt", "completion"}:
            raise PriceTableError(f"{where}: needs exactly `prompt` and `completion`")
        value = (value["prompt"], value["completion"])
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise PriceTableError(f"{where}: expected {{'prompt': X, 'completion': Y}}")
    numbers = []
    for part, number in zip(("prompt", "completion"), value, strict=True):
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not math.isfinite(number)
            or number < 0
            or number > 100_000
        ):
            raise PriceTableError(
                f"{where}.{part}: {number!r} is not a price in USD per million tokens (0-100000)"
            )
        numbers.append(Decimal(str(number)))
    return Price(numbers[0], numbers[1])


class PriceTable:
    def __init__(self, table: Mapping[str, Any]) -> None:
        self._defaults: dict[str, Price] = {}
        self._models: dict[str, dict[str, Price]] = {}
        for provider, entry in table.items():
            if provider not in KNOWN_PROVIDERS:
                raise PriceTableError(
                    f"unknown provider {provider!r}; known: {', '.join(KNOWN_PROVIDERS)}"
                )
            if not isinstance(entry, Mapping) or not set(entry) <= {"default", "models"}:
                raise PriceTableError(f"{provider}: expected {{'default': ..., 'models': {{}}}}")
            if "default" in entry:
                self._defaults[provider] = _price(f"{provider}.default", entry["default"])
            models = entry.get("models", {})
            if not isinstance(models, Mapping):
                raise PriceTableError(f"{provider}.models: expected an object of model -> price")
            for model, price in models.items():
                if not isinstance(model, str) or not model or len(model) > 100:
                    raise PriceTableError(f"{provider}.models: bad model name {model!r}")
                self._models.setdefault(provider, {})[model] = _price(
                    f"{provider}.models.{model}", price
                )
        missing = [p for p in KNOWN_PROVIDERS if p not in self._defaults]
        if missing:
            raise PriceTableError(f"no default price for {', '.join(missing)}")

    @classmethod
    def load(cls, override_file: str | None = None) -> PriceTable:
        """The shipped table, with the entries of `override_file` (JSON) replacing its own."""
        table: dict[str, dict[str, Any]] = {
            provider: {"default": entry["default"], "models": dict(entry["models"])}
            for provider, entry in SHIPPED.items()
        }
        if override_file:
            try:
                override = json.loads(Path(override_file).read_text())
            except (OSError, ValueError) as exc:
                raise PriceTableError(
                    f"{override_file}: cannot read a JSON object: {exc}"
                ) from None
            if not isinstance(override, Mapping):
                raise PriceTableError(f"{override_file}: expected a JSON object of providers")
            for provider, entry in override.items():
                if provider not in table or not isinstance(entry, Mapping):
                    cls({provider: entry})  # raises the precise error
                if "default" in entry:
                    table[provider]["default"] = entry["default"]
                if isinstance(entry.get("models"), Mapping):
                    table[provider]["models"].update(entry["models"])
                elif "models" in entry:
                    cls({provider: entry})
        return cls(table)

    def lookup(self, provider: str, model: str) -> PricedModel:
        models = self._models.get(provider, {})
        if model in models:
            return PricedModel(model, models[model])
        best = ""
        for name in models:
            if model.startswith(name + "-") and len(name) > len(best):
                best = name
        if best:
            return PricedModel(best, models[best])
        return PricedModel(OTHER_MODEL, self._defaults[provider])

    def labels(self, provider: str) -> tuple[str, ...]:
        """Every `model` label the cost metric can carry for this provider."""
        return (*sorted(self._models.get(provider, {})), OTHER_MODEL)

"""What a client key is: its secret's format, its stored hash, and the policy it carries.

A key is `tos_` followed by 43 URL-safe base64 characters: 32 random bytes, 256 bits. Only the
SHA-256 of the whole key is stored. A slow password hash would add nothing: the secret is random
and as long as the hash, so it cannot be guessed from its digest, and checking it must stay cheap
because every call carries it.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

KEY_PREFIX: Final = "tos_"
_SECRET_BYTES: Final = 32
_KEY_RE: Final = re.compile(r"tos_[A-Za-z0-9_-]{43}")
ID_PREFIX: Final = "key_"


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


class BudgetPeriod(enum.StrEnum):
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_key_id() -> str:
    return ID_PREFIX + secrets.token_hex(8)


def is_well_formed(secret: str) -> bool:
    return _KEY_RE.fullmatch(secret) is not None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def display_prefix(secret: str) -> str:
    """What `list` shows of a key so an operator can recognise it: never enough to use it."""
    return secret[: len(KEY_PREFIX) + 6] + "…"


@dataclass(frozen=True)
class ClientKey:
    """A stored key (never its secret). None in a limit means: no limit of that kind (or, for
    `providers`, `models`, `max_tokens` and `max_parallel`, the service's default)."""

    id: str
    name: str
    user_id: str
    role: Role
    prefix: str
    providers: tuple[str, ...] | None
    models: tuple[str, ...] | None
    max_tokens: int | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    budget_usd: Decimal | None
    budget_period: BudgetPeriod
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def needs_shared_admission(self) -> bool:
        """Limits that every API instance must count together, in the database."""
        return self.rpm is not None or self.tpm is not None or self.budget_usd is not None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def may_use_provider(self, provider: str) -> bool:
        return self.providers is None or provider in self.providers


def model_allowed(allowed: tuple[str, ...], provider: str, model: str) -> bool:
    """`allowed` names `provider/model` or a bare `model` (any provider); empty allows all."""
    if not allowed:
        return True
    return f"{provider}/{model}" in allowed or model in allowed

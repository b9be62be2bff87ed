"""Every table of the service in one `MetaData` (what Alembic compares against). The schema
itself is made by the migrations in `techno_os_api/migrations/versions/`."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

user_preferences = Table(
    "user_preferences",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("preferences", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

MONEY = Numeric(20, 9)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("key_prefix", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("user_id", String(255), nullable=False, index=True),
    Column("role", Text, nullable=False),
    Column("providers", ARRAY(Text)),
    Column("models", ARRAY(Text)),
    Column("max_tokens", Integer),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("max_parallel", Integer),
    Column("budget_usd", MONEY),
    Column("budget_period", Text, nullable=False, server_default="month"),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

# Spend and usage per key and budget period (`period_start`: the day, the month, or the epoch
# for a `total` budget), shared by every API instance.
api_key_usage = Table(
    "api_key_usage",
    metadata,
    Column("key_id", Text, ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("requests", BigInteger, nullable=False, server_default="0"),
    Column("prompt_tokens", BigInteger, nullable=False, server_default="0"),
    Column("completion_tokens", BigInteger, nullable=False, server_default="0"),
    Column("spent_usd", MONEY, nullable=False, server_default="0"),
)

# A call's maximum cost and tokens, held from admission until its real usage is settled.
api_key_reservations = Table(
    "api_key_reservations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "key_id", Text, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("amount_usd", MONEY, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Requests and tokens per key and clock minute (rpm / tpm), pruned after a few minutes.
api_key_windows = Table(
    "api_key_windows",
    metadata,
    Column("key_id", Text, ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    Column("window_start", DateTime(timezone=True), primary_key=True),
    Column("requests", Integer, nullable=False, server_default="0"),
    Column("tokens", BigInteger, nullable=False, server_default="0"),
)

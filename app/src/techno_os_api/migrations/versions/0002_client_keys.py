"""Client keys, their usage and spend, budget reservations and per-minute windows.

Additive only (expand/contract): release 1.0.0, which knows nothing of these tables, runs
unchanged against this schema, so rolling back the app needs no down-migration.

The two functions are the only writers of the shared counters. Each is one round trip and
serialises callers of the same key on that key's rows (`FOR UPDATE`), so concurrent calls on
several API instances can neither pass a limit nor overspend a budget.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 9)

# The budget period that contains a moment: its day or month (UTC), or the epoch for `total`.
PERIOD_START = """
CREATE FUNCTION techno_os_period_start(p_period text, p_at timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE p_period
        WHEN 'day' THEN date_trunc('day', p_at, 'UTC')
        WHEN 'month' THEN date_trunc('month', p_at, 'UTC')
        ELSE 'epoch'::timestamptz
    END
$$
"""

# verdict: ok | rpm | tpm | budget (spent) | budget_reserved (held by calls in progress).
# headroom: what the budget allows after this call (NULL without a budget), which an instance
# remembers for a database outage.
ADMIT = """
CREATE FUNCTION techno_os_admit(
    p_key text,
    p_reservation uuid,
    p_rpm integer,
    p_tpm integer,
    p_tokens integer,
    p_budget numeric,
    p_period text,
    p_cost numeric,
    p_hold_seconds double precision
) RETURNS TABLE (verdict text, retry_after double precision, headroom numeric)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_window timestamptz := date_trunc('minute', v_now);
    v_next_window double precision :=
        extract(epoch FROM date_trunc('minute', v_now) + interval '1 minute' - v_now);
    v_period timestamptz := techno_os_period_start(p_period, v_now);
    v_requests integer;
    v_tokens bigint;
    v_spent numeric;
    v_reserved numeric;
    v_headroom numeric;
BEGIN
    IF p_rpm IS NOT NULL OR p_tpm IS NOT NULL THEN
        INSERT INTO api_key_windows (key_id, window_start) VALUES (p_key, v_window)
            ON CONFLICT DO NOTHING;
        SELECT w.requests, w.tokens INTO v_requests, v_tokens FROM api_key_windows w
            WHERE w.key_id = p_key AND w.window_start = v_window FOR UPDATE;
        IF p_rpm IS NOT NULL AND v_requests >= p_rpm THEN
            RETURN QUERY SELECT 'rpm'::text, v_next_window, NULL::numeric;
            RETURN;
        END IF;
        IF p_tpm IS NOT NULL AND v_tokens + p_tokens > p_tpm THEN
            RETURN QUERY SELECT 'tpm'::text, v_next_window, NULL::numeric;
            RETURN;
        END IF;
    END IF;
    IF p_budget IS NOT NULL THEN
        -- Reservations of an instance that died: charged in full once their hold has passed
        -- (the provider may have billed the call).
        WITH expired AS (
            DELETE FROM api_key_reservations r
            WHERE r.key_id = p_key AND r.expires_at <= v_now
            RETURNING r.period_start, r.amount_usd
        )
        INSERT INTO api_key_usage AS u (key_id, period_start, spent_usd)
            SELECT p_key, e.period_start, sum(e.amount_usd) FROM expired e
            GROUP BY e.period_start
        ON CONFLICT (key_id, period_start)
            DO UPDATE SET spent_usd = u.spent_usd + excluded.spent_usd;
        INSERT INTO api_key_usage (key_id, period_start) VALUES (p_key, v_period)
            ON CONFLICT DO NOTHING;
        SELECT u.spent_usd INTO v_spent FROM api_key_usage u
            WHERE u.key_id = p_key AND u.period_start = v_period FOR UPDATE;
        SELECT coalesce(sum(r.amount_usd), 0) INTO v_reserved FROM api_key_reservations r
            WHERE r.key_id = p_key AND r.period_start = v_period;
        v_headroom := p_budget - v_spent - v_reserved;
        IF v_spent + p_cost > p_budget THEN
            RETURN QUERY SELECT 'budget'::text, NULL::double precision, v_headroom;
            RETURN;
        END IF;
        IF p_cost > v_headroom THEN
            RETURN QUERY SELECT 'budget_reserved'::text, 1::double precision, v_headroom;
            RETURN;
        END IF;
    END IF;
    IF p_rpm IS NOT NULL OR p_tpm IS NOT NULL THEN
        UPDATE api_key_windows w SET requests = w.requests + 1, tokens = w.tokens + p_tokens
            WHERE w.key_id = p_key AND w.window_start = v_window;
    END IF;
    IF p_reservation IS NOT NULL THEN
        INSERT INTO api_key_reservations
            (id, key_id, period_start, window_start, amount_usd, tokens, expires_at)
            VALUES (p_reservation, p_key, v_period, v_window, p_cost, p_tokens,
                    v_now + make_interval(secs => p_hold_seconds));
    END IF;
    RETURN QUERY SELECT 'ok'::text, 0::double precision, v_headroom - p_cost;
END
$$
"""

# Records a call's real usage and cost, and releases its reservation (if it had one). A
# reservation already reaped by `techno_os_admit` was charged in full: only the difference is
# added then.
SETTLE = """
CREATE FUNCTION techno_os_settle(
    p_key text,
    p_reservation uuid,
    p_at timestamptz,
    p_period text,
    p_requests integer,
    p_prompt bigint,
    p_completion bigint,
    p_cost numeric,
    p_reserved_cost numeric,
    p_reserved_tokens integer
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_period timestamptz := techno_os_period_start(p_period, p_at);
    v_reserved_period timestamptz;
    v_window timestamptz;
    v_charged numeric := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = p_key) THEN
        RETURN;
    END IF;
    IF p_reservation IS NOT NULL THEN
        DELETE FROM api_key_reservations r WHERE r.id = p_reservation
            RETURNING r.period_start, r.window_start INTO v_reserved_period, v_window;
        IF FOUND THEN
            v_period := v_reserved_period;
            IF p_reserved_tokens > 0 THEN
                UPDATE api_key_windows w
                    SET tokens = w.tokens + (p_prompt + p_completion - p_reserved_tokens)
                    WHERE w.key_id = p_key AND w.window_start = v_window;
            END IF;
        ELSE
            v_charged := p_reserved_cost;
        END IF;
    END IF;
    INSERT INTO api_key_usage AS u
        (key_id, period_start, requests, prompt_tokens, completion_tokens, spent_usd)
        VALUES (p_key, v_period, p_requests, p_prompt, p_completion, p_cost - v_charged)
    ON CONFLICT (key_id, period_start) DO UPDATE SET
        requests = u.requests + excluded.requests,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        spent_usd = u.spent_usd + excluded.spent_usd;
    UPDATE api_keys k SET last_used_at = greatest(coalesce(k.last_used_at, p_at), p_at)
        WHERE k.id = p_key;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False, unique=True),
        sa.Column("key_prefix", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("providers", postgresql.ARRAY(sa.Text())),
        sa.Column("models", postgresql.ARRAY(sa.Text())),
        sa.Column("max_tokens", sa.Integer()),
        sa.Column("rpm", sa.Integer()),
        sa.Column("tpm", sa.Integer()),
        sa.Column("max_parallel", sa.Integer()),
        sa.Column("budget_usd", MONEY),
        sa.Column("budget_period", sa.Text(), nullable=False, server_default="month"),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("role IN ('user', 'admin')", name="api_keys_role"),
        sa.CheckConstraint("budget_period IN ('day', 'month', 'total')", name="api_keys_period"),
        sa.CheckConstraint("length(key_hash) = 32", name="api_keys_hash_is_sha256"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "api_key_usage",
        sa.Column(
            "key_id", sa.Text(), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("spent_usd", MONEY, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("key_id", "period_start"),
    )
    op.create_table(
        "api_key_reservations",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "key_id", sa.Text(), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_usd", MONEY, nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_api_key_reservations_key_id", "api_key_reservations", ["key_id"])
    op.create_table(
        "api_key_windows",
        sa.Column(
            "key_id", sa.Text(), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("key_id", "window_start"),
    )
    op.execute(PERIOD_START)
    op.execute(ADMIT)
    op.execute(SETTLE)


def downgrade() -> None:
    op.execute("DROP FUNCTION techno_os_settle")
    op.execute("DROP FUNCTION techno_os_admit")
    op.execute("DROP FUNCTION techno_os_period_start")
    op.drop_table("api_key_windows")
    op.drop_table("api_key_reservations")
    op.drop_table("api_key_usage")
    op.drop_table("api_keys")

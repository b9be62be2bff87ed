"""The operators' tool for client keys, with the app's own database settings.

    python -m techno_os_api.keys create --user alice [--name TEXT] [--admin]
        [--providers fake,openai] [--models m1,m2] [--max-tokens N] [--rpm N] [--tpm N]
        [--max-parallel N] [--budget-usd X] [--budget-period day|month|total]
        [--expires-in-days N]
    python -m techno_os_api.keys list
    python -m techno_os_api.keys show KEY_ID
    python -m techno_os_api.keys revoke KEY_ID

Every command prints one JSON document on stdout. `create` prints the key's secret (`key`) once:
only its hash is stored, so it cannot be shown again. Bad arguments exit 2 with a message and
write nothing; a database problem exits 1. On a deployed host: `make api-key ARGS="..."`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from techno_os_api.auth import keys
from techno_os_api.auth.keys import BudgetPeriod, ClientKey, Role
from techno_os_api.core.config import KNOWN_PROVIDERS, Settings, SettingsError, load_settings
from techno_os_api.db.api_keys import KeyRepository, NewKey
from techno_os_api.db.engine import DatabaseUnavailable, create_engine


class UsageError(Exception):
    """A bad argument: exit 2, nothing written."""


def _positive(name: str, upper: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number") from None
        if not 1 <= value <= upper:
            raise argparse.ArgumentTypeError(f"{name} must be between 1 and {upper}")
        return value

    return parse


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError("--budget-usd must be a number of dollars") from None
    if not value.is_finite() or value <= 0 or value > 1_000_000_000:
        raise argparse.ArgumentTypeError("--budget-usd must be above 0 and at most 1e9")
    if value.as_tuple().exponent < -6:  # type: ignore[operator]
        raise argparse.ArgumentTypeError("--budget-usd has at most 6 decimal places")
    return value


def _list(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m techno_os_api.keys",
        description="Create, list, show and revoke client keys.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key; prints its secret once")
    create.add_argument("--user", required=True, help="the user the key acts for")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--admin", action="store_true", help="role admin (any user's data)")
    create.add_argument(
        "--providers", type=_list, help="providers it may call (default: every allowed one)"
    )
    create.add_argument(
        "--models", type=_list, help="models it may call: provider/model or model (default: any)"
    )
    create.add_argument("--max-tokens", type=_positive("--max-tokens", 10_000_000))
    create.add_argument("--rpm", type=_positive("--rpm", 10_000_000), help="requests a minute")
    create.add_argument("--tpm", type=_positive("--tpm", 2_000_000_000), help="tokens a minute")
    create.add_argument(
        "--max-parallel", type=_positive("--max-parallel", 10_000), help="concurrent calls"
    )
    create.add_argument("--budget-usd", type=_usd, help="spend allowed per budget period")
    create.add_argument(
        "--budget-period",
        choices=[p.value for p in BudgetPeriod],
        default=BudgetPeriod.MONTH.value,
        help="day, month (default) or total; calendar periods in UTC",
    )
    create.add_argument("--expires-in-days", type=_positive("--expires-in-days", 3650))
    for name, text in (("show", "limits, budget and this period's usage"), ("revoke", "")):
        command = commands.add_parser(name, help=text or "revoke a key (idempotent)")
        command.add_argument("key_id")
    commands.add_parser("list", help="every key, without secrets")
    return root


def _check_create(args: argparse.Namespace, settings: Settings) -> None:
    user = args.user.strip()
    if not 1 <= len(user) <= 255:
        raise UsageError("--user must be 1 to 255 characters")
    if len(args.name) > 200:
        raise UsageError("--name must be at most 200 characters")
    if args.providers:
        unknown = [p for p in args.providers if p not in KNOWN_PROVIDERS]
        if unknown:
            raise UsageError(
                f"--providers: unknown provider(s) {', '.join(unknown)}; "
                f"known: {', '.join(KNOWN_PROVIDERS)}"
            )
        outside = [p for p in args.providers if p not in settings.allowed_providers]
        if outside:
            raise UsageError(
                f"--providers: {', '.join(outside)} not in VERITTA_LLM_ALLOWED_PROVIDERS "
                f"({', '.join(settings.veritta_llm_allowed_providers) or 'empty'})"
            )
    for model in args.models or ():
        provider, slash, name = model.partition("/")
        if len(model) > 200 or (slash and (provider not in KNOWN_PROVIDERS or not name)):
            raise UsageError(
                f"--models: {model!r} is not `provider/model` with a known provider, nor a "
                "bare model name"
            )


def describe(key: ClientKey, now: datetime) -> dict[str, Any]:
    status = "revoked" if key.revoked_at else "expired" if key.expired(now) else "active"
    return {
        "id": key.id,
        "name": key.name,
        "user_id": key.user_id,
        "role": key.role.value,
        "prefix": key.prefix,
        "status": status,
        "providers": list(key.providers) if key.providers is not None else None,
        "models": list(key.models) if key.models is not None else None,
        "max_tokens": key.max_tokens,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_parallel": key.max_parallel,
        "budget_usd": str(key.budget_usd) if key.budget_usd is not None else None,
        "budget_period": key.budget_period.value,
        "expires_at": _when(key.expires_at),
        "created_at": _when(key.created_at),
        "last_used_at": _when(key.last_used_at),
        "revoked_at": _when(key.revoked_at),
    }


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | list[Any]:
    engine = create_engine(settings, pooled=False)
    repository = KeyRepository(engine)
    now = datetime.now(UTC)
    try:
        if args.command == "create":
            secret = keys.new_secret()
            key = await repository.create(
                NewKey(
                    id=keys.new_key_id(),
                    key_hash=keys.digest(secret),
                    key_prefix=keys.display_prefix(secret),
                    name=args.name,
                    user_id=args.user.strip(),
                    role=Role.ADMIN if args.admin else Role.USER,
                    providers=args.providers,
                    models=args.models,
                    max_tokens=args.max_tokens,
                    rpm=args.rpm,
                    tpm=args.tpm,
                    max_parallel=args.max_parallel,
                    budget_usd=args.budget_usd,
                    budget_period=BudgetPeriod(args.budget_period),
                    expires_at=(
                        now + timedelta(days=args.expires_in_days) if args.expires_in_days else None
                    ),
                )
            )
            return {**describe(key, now), "key": secret}
        if args.command == "list":
            return [describe(key, now) for key in await repository.list()]
        found = await (
            repository.revoke(args.key_id)
            if args.command == "revoke"
            else repository.get(args.key_id)
        )
        if found is None:
            raise LookupError(f"no key with id {args.key_id!r}")
        result = describe(found, now)
        if args.command == "show":
            usage = await repository.usage(found)
            result["usage"] = {
                "period_start": usage.period_start.isoformat(),
                "requests": usage.requests,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "spent_usd": str(usage.spent_usd),
                "reserved_usd": str(usage.reserved_usd),
                "budget_left_usd": (
                    str(found.budget_usd - usage.spent_usd - usage.reserved_usd)
                    if found.budget_usd is not None
                    else None
                ),
            }
        return result
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a bad argument
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "create":
            _check_create(args, settings)
        result = asyncio.run(run(args, settings))
    except UsageError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"keys: the database is unavailable: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m techno_os_api.keys`, the operators' tool, run as a process against the real
PostgreSQL exactly as `make api-key` runs it in the API container."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import asyncpg
import pytest
from app_helpers import bearer, chat_body, subprocess_env
from techno_os_api import keys as keys_tool

URL = "/v1/chat/completions"


def keys(database, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "techno_os_api.keys", *args],
        env=subprocess_env(
            **{"VERITTA_LLM_ALLOWED_PROVIDERS": "fake,openai", **database.env, **env}
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def created(database, *args: str) -> dict[str, Any]:
    result = keys(database, "create", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def table_dump(database) -> str:
    conn = await asyncpg.connect(**database.connect_kwargs)
    try:
        rows = await conn.fetch("SELECT * FROM api_keys")
    finally:
        await conn.close()
    return repr([dict(r) for r in rows])


def test_create_prints_the_key_once_with_its_settings(database):
    out = created(
        database,
        "--user", "alice", "--name", "alice's laptop", "--providers", "fake",
        "--models", "fake/echo", "--max-tokens", "100", "--rpm", "60", "--tpm", "5000",
        "--max-parallel", "2", "--budget-usd", "1.50", "--budget-period", "day",
        "--expires-in-days", "30",
    )  # fmt: skip
    assert out["id"].startswith("key_")
    assert out["key"].startswith("tos_") and len(out["key"]) == 47
    assert out["user_id"] == "alice" and out["role"] == "user" and out["status"] == "active"
    assert out["providers"] == ["fake"] and out["models"] == ["fake/echo"]
    assert (out["max_tokens"], out["rpm"], out["tpm"], out["max_parallel"]) == (100, 60, 5000, 2)
    assert out["budget_usd"] == "1.500000000" and out["budget_period"] == "day"
    assert out["expires_at"] is not None
    assert out["prefix"] == out["key"][:10] + "…"


async def test_the_stored_row_never_contains_the_secret(database):
    out = created(database, "--user", "bob")
    dump = await table_dump(database)
    secret = out["key"]
    assert out["id"] in dump
    assert secret not in dump
    assert secret[4:] not in dump  # not even without its prefix
    assert secret[4:20] not in dump


def test_list_and_show_never_print_secrets(database):
    out = created(database, "--user", "carol", "--budget-usd", "2")
    listed = keys(database, "list")
    assert listed.returncode == 0, listed.stderr
    assert out["key"] not in listed.stdout
    assert out["id"] in [k["id"] for k in json.loads(listed.stdout)]
    shown = keys(database, "show", out["id"])
    assert shown.returncode == 0, shown.stderr
    assert out["key"] not in shown.stdout
    details = json.loads(shown.stdout)
    assert details["usage"]["requests"] == 0
    assert details["usage"]["spent_usd"] == "0"
    assert details["usage"]["budget_left_usd"] == "2.000000000"


def test_revoke_is_idempotent_and_shows_revoked(database):
    out = created(database, "--user", "dave")
    first = json.loads(keys(database, "revoke", out["id"]).stdout)
    second = json.loads(keys(database, "revoke", out["id"]).stdout)
    assert first["status"] == second["status"] == "revoked"
    assert first["revoked_at"] == second["revoked_at"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create"], "the following arguments are required: --user"),
        (["create", "--user", "x", "--rpm", "0"], "--rpm must be between 1 and"),
        (["create", "--user", "x", "--rpm", "ten"], "--rpm must be a whole number"),
        (["create", "--user", "x", "--budget-usd", "-1"], "--budget-usd must be above 0"),
        (["create", "--user", "x", "--budget-usd", "nan"], "--budget-usd must be above 0"),
        (["create", "--user", "x", "--budget-period", "week"], "invalid choice: 'week'"),
        (["create", "--user", "x", "--providers", "opneai"], "unknown provider(s) opneai"),
        (["create", "--user", "x", "--providers", "anthropic"], "not in VERITTA_LLM_ALLOWED"),
        (["create", "--user", "x", "--models", "nope/m"], "is not `provider/model`"),
        (["create", "--user", "x" * 256], "--user must be 1 to 255 characters"),
        (["show", "key_doesnotexist"], "no key with id 'key_doesnotexist'"),
        (["revoke", "key_doesnotexist"], "no key with id 'key_doesnotexist'"),
        (["rotate"], "invalid choice: 'rotate'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message_and_write_nothing(
    database, monkeypatch, capsys, args, message
):
    # In-process (the same `main` the module runs), so the table checks stay quick.
    for name, value in {"VERITTA_LLM_ALLOWED_PROVIDERS": "fake,openai", **database.env}.items():
        monkeypatch.setenv(name, value)
    before = asyncio.run(table_dump(database))
    try:
        code = keys_tool.main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert message in err
    assert out == ""
    assert asyncio.run(table_dump(database)) == before


def test_database_down_exits_1(database):
    result = keys(database, "list", DB_PORT="1", DB_CONNECT_TIMEOUT_SECONDS="1")
    assert result.returncode == 1
    assert "the database is unavailable" in result.stderr


async def test_a_created_key_works_and_a_revoked_one_stops(make_app, database):
    out = created(database, "--user", "erin", "--providers", "fake")
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        ok = await client.http.post(URL, json=chat_body(), headers=bearer(out["key"]))
        assert ok.status_code == 200
        assert keys(database, "revoke", out["id"]).returncode == 0
        client.services.authenticator.forget()  # the TTL, without waiting for it
        refused = await client.http.post(URL, json=chat_body(), headers=bearer(out["key"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "invalid API key"

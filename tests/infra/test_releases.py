"""Releases without downtime (drills, disposable inventories): under a steady load of client
requests through the proxy, a release, a rollback, a release that never gets ready, a database
password rotation and (several API hosts) the loss of an API host drop no request that had not
reached a host being lost. Each prints its figures (requests sent, failed)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.database import scram_matches  # (tasks/ is on sys.path through conftest, _support)

from ._load import LoadResult, steady_load
from ._support import REPO, Target, inventory_path, wait_until

pytestmark = pytest.mark.drill

SETTLE_SECONDS = 3  # load before and after each action, so it is measured in steady state


def deploy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    pyinfra = Path(sys.executable).parent / "pyinfra"
    return subprocess.run(
        [str(pyinfra), "-y", inventory_path(), "deploy.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, **(env or {})}, check=False,
    )  # fmt: skip


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "tools/release.py", inventory_path(), *args],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def output(run: subprocess.CompletedProcess[str]) -> str:
    """What went wrong in a deploy's output: its error lines (pyinfra's results table hides
    them far above the end), then the end."""
    text = run.stdout + run.stderr
    errors = [line for line in text.splitlines() if "rror" in line and "Grand total" not in line]
    return "\n".join(errors[-40:]) + "\n...\n" + text[-1500:]


def live(api: Target) -> dict[str, Any]:
    info = api.inspect(api.cfg("api_container"))
    assert info, f"{api.name}: no live API container"
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    return {"id": info["Id"], "image": info["Image"], "env": env}


def report(capsys: Any, record_property: Any, name: str, load: LoadResult) -> None:
    record_property(f"{name}_requests", len(load.rows))
    record_property(f"{name}_failed", len(load.failed))
    with capsys.disabled():
        print(f"\n    release drill {name}: {load.summary()}")


@pytest.fixture(scope="module")
def edge(sandbox) -> Target:
    for t in sandbox.hosts:
        if not t.disposable:
            pytest.fail(f"refusing to run a drill against {t.name}: not disposable")
    t = sandbox.the("edge")
    assert t.api_key, "the drills' client key is unknown (secrets file: SANDBOX_API_KEY)"
    return t


@pytest.fixture
def apis(sandbox) -> list[Target]:
    hosts = sandbox.by_role("api")
    for api in hosts:
        api.wait_api_ready()
    return hosts


def test_a_release_on_every_api_host_drops_no_request(
    edge: Target, apis: list[Target], capsys: Any, record_property: Any
) -> None:
    before = {api.name: live(api) for api in apis}
    try:
        with steady_load(edge, edge.api_key) as load:
            time.sleep(SETTLE_SECONDS)
            released = deploy("--data", "llm_timeout_seconds=29")  # a new .env: a release
            time.sleep(SETTLE_SECONDS)
        assert released.returncode == 0, output(released)
        for api in apis:
            now = live(api)
            assert now["id"] != before[api.name]["id"], f"{api.name} was not released"
            assert now["env"]["LLM_TIMEOUT_SECONDS"] == "29"
        report(capsys, record_property, "release", load)
        assert load.rows and not load.failed, load.summary()
    finally:
        with steady_load(edge, edge.api_key) as back:
            time.sleep(SETTLE_SECONDS)
            restored = deploy()
            time.sleep(SETTLE_SECONDS)
        assert restored.returncode == 0, output(restored)
        report(capsys, record_property, "release_back", back)
        assert not back.failed, back.summary()


def test_a_rollback_puts_the_previous_release_back_and_drops_no_request(
    edge: Target, apis: list[Target], capsys: Any, record_property: Any
) -> None:
    current = {api.name: live(api)["image"] for api in apis}
    newer = f"techno-os/api:drill-{secrets.token_hex(3)}"
    for api in apis:  # another image (same code, one more label): the "new release"
        base = api.inspect(api.cfg("api_container"))["Config"]["Image"]
        api.check(
            "printf 'FROM %s\\nLABEL techno-os.drill=release\\n' | docker build -q -t %s -",
            base,
            newer,
        )
    with steady_load(edge, edge.api_key) as load:
        time.sleep(SETTLE_SECONDS)
        for api in apis:  # one host at a time, as the deploy does
            api.check("/usr/local/bin/techno-os-release release %s", newer)
        time.sleep(SETTLE_SECONDS)
        released_at = time.time()
        rolled = tool("rollback")
        time.sleep(SETTLE_SECONDS)
    assert rolled.returncode == 0, output(rolled)
    for api in apis:
        assert live(api)["image"] == current[api.name], f"{api.name} was not rolled back"
        history = json.loads(api.check("/usr/local/bin/techno-os-release status"))["history"]
        assert len(history) <= int(api.cfg("keep_releases")), history
    report(capsys, record_property, "release_then_rollback", load)
    assert load.rows and not load.failed, load.summary()
    assert load.between(released_at, time.time()), "no request measured during the rollback"


def test_a_release_that_never_gets_ready_is_not_switched_to(
    edge: Target, apis: list[Target], capsys: Any, record_property: Any
) -> None:
    before = {api.name: live(api)["id"] for api in apis}
    with steady_load(edge, edge.api_key) as load:
        time.sleep(SETTLE_SECONDS)
        # A new .env, and a readiness deadline no new container can meet.
        failed = deploy("--data", "llm_timeout_seconds=28", "--data", "api_ready_timeout_seconds=1")
        time.sleep(SETTLE_SECONDS)
    assert failed.returncode != 0, "the deploy reported success for a release that never got ready"
    said = failed.stdout + failed.stderr
    assert "was not ready" in said and "keeps serving" in said, output(failed)
    first = apis[0]
    assert live(first)["id"] == before[first.name], "the release was switched to anyway"
    assert live(first)["env"]["LLM_TIMEOUT_SECONDS"] == "30"
    leftovers = first.run("docker inspect %s-next", first.cfg("api_container"))
    assert leftovers.rc != 0, "the failed release's container was left behind"
    report(capsys, record_property, "release_never_ready", load)
    assert load.rows and not load.failed, load.summary()
    restored = deploy()  # the tree as it is: the .env back, nothing to release
    assert restored.returncode == 0, output(restored)


def role_password_is(db: Target, password: str) -> bool:
    """Whether the role's stored SCRAM verifier was made from `password`: the check an old
    password no longer works, without a failed login (which the database logs as FATAL, and the
    nightly verification rightly flags)."""
    verifier = db.check(
        "docker exec %s psql -qtAX -U %s -d postgres -c %s",
        db.cfg("db_container"),
        db.cfg("db_user"),
        f"SELECT rolpassword FROM pg_authid WHERE rolname = '{db.cfg('db_user')}'",
    )
    return scram_matches(verifier, password)


def login_succeeds(db: Target, password: str) -> bool:
    result = db.run(
        "docker exec -e PGPASSWORD=%s %s psql -h 127.0.0.1 -U %s -d %s -tAc 'SELECT 1'",
        password,
        db.cfg("db_container"),
        db.cfg("db_user"),
        db.cfg("db_name"),
    )
    return result.rc == 0


def test_a_database_password_rotation_drops_no_request(
    sandbox, edge: Target, apis: list[Target], capsys: Any, record_property: Any
) -> None:
    db = sandbox.the("db")
    old = live(apis[0])["env"]["DB_PASSWORD"]
    new = secrets.token_urlsafe(24)
    try:
        with steady_load(edge, edge.api_key) as load:
            time.sleep(SETTLE_SECONDS)
            rotated = deploy(env={"DB_PASSWORD": new})  # the environment wins over the file
            time.sleep(SETTLE_SECONDS)
        assert rotated.returncode == 0, output(rotated)
        assert login_succeeds(db, new), "the role does not accept the new password"
        assert not role_password_is(db, old), "the role still accepts the old password"
        for api in apis:
            assert live(api)["env"]["DB_PASSWORD"] == new, f"{api.name} runs the old password"
        report(capsys, record_property, "password_rotation", load)
        assert load.rows and not load.failed, load.summary()
    finally:
        with steady_load(edge, edge.api_key) as back:
            time.sleep(SETTLE_SECONDS)
            restored = deploy()  # back to the secrets file's password
            time.sleep(SETTLE_SECONDS)
        assert restored.returncode == 0, output(restored)
        assert login_succeeds(db, old)
        report(capsys, record_property, "password_rotation_back", back)
        assert not back.failed, back.summary()


@pytest.mark.multi_api
def test_losing_an_api_host_loses_only_requests_in_flight_on_it_and_alerts(
    edge: Target, apis: list[Target], capsys: Any, record_property: Any
) -> None:
    lost = apis[-1]
    sandbox_tool = [sys.executable, "tools/sandbox.py", "--inventory", inventory_path()]
    alert = f'ALERTS{{alertname="APIDown", alertstate="firing", instance="{lost.name}"}}'
    try:
        with steady_load(edge, edge.api_key) as load:
            time.sleep(SETTLE_SECONDS)
            stopped = time.time()
            subprocess.run([*sandbox_tool, "stop", lost.name], cwd=REPO, check=True)
            wait_until(
                lambda: edge.prom_query(alert),
                timeout=180,
                interval=2,
                what=f"APIDown firing for {lost.name}",
            )
            fired = time.time() - stopped
        failed_after = [r for r in load.failed if r["t"] >= stopped - 1]
        report(capsys, record_property, "api_host_lost", load)
        record_property("api_host_lost_to_alert_seconds", round(fired, 1))
        # Only requests already sent to the host as it went away may fail: a handful at most
        # at this rate; anything that had not reached it went to another host.
        assert len(failed_after) <= 3, load.summary()
        assert not [r for r in load.failed if r["t"] < stopped - 1], load.summary()
    finally:
        subprocess.run([*sandbox_tool, "start", lost.name], cwd=REPO, check=True)
        wait_until(lambda: lost.run("true").rc == 0, timeout=120, what=f"{lost.name} back on SSH")
        lost.wait_api_ready(timeout=180)
        wait_until(
            lambda: not edge.prom_query(alert),
            timeout=180,
            what=f"APIDown resolved for {lost.name}",
        )

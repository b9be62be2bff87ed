"""The read-only checks fail when their thing is broken (drill, sandbox only).

For each breakage: every check it concerns passes first, fails once the thing is broken, and
passes again after the repair. Repairs happen in `finally`, so a failing assertion never leaves the
sandbox broken. The repair is the undo of the breakage, and one test repairs the issue's four
breakages (cron line removed, Prometheus stopped, .env chmod 0644, API stopped) by redeploying
with pyinfra, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from ._support import REPO, Target, inventory_path, wait_until
from .test_cron_and_env import (
    backup_script,
    check_backup_cron_line,
    check_backup_dir_private,
    check_cron_running,
    check_env_file_mode,
    check_script_executable_by_root,
)
from .test_health import (
    check_container_running_and_healthy,
    check_health_endpoint,
    check_pg_isready,
)
from .test_prometheus import (
    check_every_target_up,
    check_listens_on_loopback_only,
    check_prometheus_healthy,
    check_promtool_config,
    check_service_enabled_and_running,
    prometheus_port,
)

pytestmark = pytest.mark.drill

Check = Callable[[Target], None]
SAVED = "/root/.techno-os-drill"  # where a breakage keeps what it changes


@dataclass(frozen=True)
class Breakage:
    """A breakage of a host of `role`; each check runs on a host of its own role."""

    name: str
    role: str
    break_it: Callable[[Target], str]  # the shell command that breaks it
    undo: Callable[[Target], str]  # the shell command that undoes it
    checks: tuple[tuple[str, str, Check], ...]  # (label, role, check)
    settle: Callable[[Target], None] = lambda t: None  # wait after the undo
    fail_within: float = 10  # seconds for every check to notice

    def __str__(self) -> str:
        return self.name


def _api(t: Target) -> str:
    return t.cfg("api_container")


def _db(t: Target) -> str:
    return t.cfg("db_container")


def _env(t: Target) -> str:
    return f"{t.cfg('backend_dir')}/.env"


def _settle_api(t: Target) -> None:
    t.wait_container_healthy(_api(t))


def _settle_db(t: Target) -> None:
    t.wait_container_healthy(_db(t))


def _every_target_up(t: Target) -> None:
    check_every_target_up(t)


BREAKAGES = [
    Breakage(
        "cron_line_removed",
        "db",
        lambda t: (
            f"crontab -l > {SAVED}-crontab && crontab -l | grep -vF {backup_script(t)} | crontab -"
        ),
        lambda t: f"crontab {SAVED}-crontab && rm -f {SAVED}-crontab",
        (("backup line in root's crontab", "db", check_backup_cron_line),),
    ),
    Breakage(
        "cron_stopped",
        "db",
        lambda t: "systemctl stop cron",
        lambda t: "systemctl start cron",
        (("cron running", "db", check_cron_running),),
    ),
    Breakage(
        "backup_script_not_executable",
        "db",
        lambda t: f"chmod a-x {backup_script(t)}",
        lambda t: f"chmod 0755 {backup_script(t)}",
        (
            (
                "backup script executable",
                "db",
                lambda t: check_script_executable_by_root(t, backup_script(t)),
            ),
        ),
    ),
    Breakage(
        "backup_dir_opened",
        "db",
        lambda t: f"chmod 0755 {t.cfg('backup_dir')}",
        lambda t: f"chmod 0700 {t.cfg('backup_dir')}",
        (("backup dir private", "db", check_backup_dir_private),),
    ),
    Breakage(
        "env_chmod_0644",
        "api",
        lambda t: f"chmod 0644 {_env(t)}",
        lambda t: f"chmod 0600 {_env(t)}",
        ((".env mode 0600", "api", check_env_file_mode),),
    ),
    Breakage(
        "prometheus_stopped",
        "edge",
        lambda t: "systemctl stop prometheus",
        lambda t: "systemctl start prometheus",
        (
            ("/-/healthy", "edge", check_prometheus_healthy),
            ("service running", "edge", check_service_enabled_and_running),
            (
                "listens on loopback",
                "edge",
                lambda t: check_listens_on_loopback_only(t, prometheus_port(t), "Prometheus"),
            ),
        ),
        settle=lambda t: t.wait_prometheus_healthy(),
    ),
    Breakage(
        "prometheus_config_invalid",
        "edge",
        lambda t: (
            f"cp -p {t.cfg('prometheus_config')} {SAVED}-prometheus.yml && "
            f"printf 'scrape_configs: [unclosed\\n' >> {t.cfg('prometheus_config')}"
        ),
        lambda t: (
            f"cp -p {SAVED}-prometheus.yml {t.cfg('prometheus_config')} && "
            f"rm -f {SAVED}-prometheus.yml"
        ),
        (("promtool check config", "edge", check_promtool_config),),
    ),
    Breakage(
        "api_stopped",
        "api",
        lambda t: f"docker stop {_api(t)}",
        lambda t: f"docker start {_api(t)}",
        (
            ("/health", "api", check_health_endpoint),
            (
                "API container healthy",
                "api",
                lambda t: check_container_running_and_healthy(t, _api(t)),
            ),
            ("every target up", "edge", _every_target_up),
        ),
        settle=_settle_api,
        fail_within=45,  # the API target goes down at Prometheus' next scrape (15 s)
    ),
    Breakage(
        "db_stopped",
        "db",
        lambda t: f"docker stop {_db(t)}",
        lambda t: f"docker start {_db(t)}",
        (
            ("pg_isready", "db", check_pg_isready),
            (
                "DB container healthy",
                "db",
                lambda t: check_container_running_and_healthy(t, _db(t)),
            ),
        ),
        settle=_settle_db,
    ),
]


def fails(check: Check, t: Target) -> bool:
    try:
        check(t)
    except AssertionError:
        return True
    return False


def passes(check: Check, t: Target) -> bool:
    return not fails(check, t)


class Hosts:
    """The first host of each role (a disposable inventory only)."""

    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox
        for t in sandbox.hosts:
            if not t.disposable:
                pytest.fail(f"refusing to run a drill against {t.name}: not disposable")

    def __call__(self, role: str) -> Target:
        return self.sandbox.by_role(role)[0]


@pytest.fixture
def hosts(sandbox) -> Hosts:
    return Hosts(sandbox)


def wait_all_pass(hosts: Hosts, checks: tuple[tuple[str, str, Check], ...], what: str) -> None:
    for label, role, check in checks:
        t = hosts(role)
        wait_until(partial(passes, check, t), timeout=60, what=f"`{label}` passes {what}")
        check(t)  # once more, for its own message should it fail now


@pytest.mark.parametrize("breakage", BREAKAGES, ids=str)
def test_each_check_fails_when_its_thing_is_broken_and_passes_once_undone(
    hosts: Hosts, breakage: Breakage
) -> None:
    t = hosts(breakage.role)
    wait_all_pass(hosts, breakage.checks, "before the breakage")
    try:
        t.check(breakage.break_it(t))
        for label, role, check in breakage.checks:
            wait_until(
                partial(fails, check, hosts(role)),
                timeout=breakage.fail_within,
                what=f"`{label}` fails once {breakage.name}",
            )
    finally:
        t.run(breakage.undo(t))
        breakage.settle(t)
    wait_all_pass(hosts, breakage.checks, f"after undoing {breakage.name}")


ISSUE_BREAKAGES = ["cron_line_removed", "prometheus_stopped", "env_chmod_0644", "api_stopped"]


def redeploy() -> subprocess.CompletedProcess:
    pyinfra = Path(sys.executable).parent / "pyinfra"
    return subprocess.run(
        [str(pyinfra), "-y", inventory_path(), "deploy.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ.copy(),
        check=False,
    )


def test_a_redeploy_repairs_the_cron_line_prometheus_the_env_mode_and_the_api(
    hosts: Hosts,
) -> None:
    chosen = [b for b in BREAKAGES if b.name in ISSUE_BREAKAGES]
    checks = tuple(c for b in chosen for c in b.checks)
    wait_all_pass(hosts, checks, "before the breakages")
    try:
        for b in chosen:
            hosts(b.role).check(b.break_it(hosts(b.role)))
        for b in chosen:
            for label, role, check in b.checks:
                wait_until(
                    partial(fails, check, hosts(role)),
                    timeout=b.fail_within,
                    what=f"`{label}` fails once {b.name}",
                )
        deployed = redeploy()
        assert deployed.returncode == 0, (
            f"pyinfra exited {deployed.returncode}:\n{deployed.stdout[-3000:]}\n"
            f"{deployed.stderr[-2000:]}"
        )
        hosts("api").wait_api_healthy(timeout=180)
        wait_all_pass(hosts, checks, "after the redeploy")
    finally:
        # Whatever the redeploy did not repair, undo; saved copies are removed by the undo.
        for b in chosen:
            t = hosts(b.role)
            if b.name == "cron_line_removed":
                t.run(f"test -e {SAVED}-crontab && {b.undo(t)}")
            else:
                t.run(b.undo(t))
        for b in chosen:
            b.settle(hosts(b.role))

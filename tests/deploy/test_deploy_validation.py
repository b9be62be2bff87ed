"""A bad input stops the deploy before it changes anything, with a message naming the value.

Runs the real deploy against the sandbox with one bad value each; the host must be untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
INVENTORY = os.environ.get("INVENTORY", "inventories/local.py")
SANDBOX = str(Path(sys.executable).parent / "python"), "tools/sandbox.py", "ssh", "--"


def host_state() -> str:
    """Checksums of what a deploy would change first: the .env, the compose file, the crontab."""
    return subprocess.run(
        [*SANDBOX, "sha256sum /opt/techno-os/app/backend/.env "
         "/opt/techno-os/app/backend/docker-compose.yml /etc/prometheus/prometheus.yml; "
         "crontab -l | sha256sum"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def deploy(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYINFRA, "-y", INVENTORY, "deploy.py", *extra],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip


def group_data_dir(tmp_path: Path, body: str) -> str:
    (tmp_path / "local.py").write_text(textwrap.dedent(body))
    return str(tmp_path)


def assert_refused(run: subprocess.CompletedProcess[str], *names: str) -> None:
    output = run.stdout + run.stderr
    assert run.returncode != 0, f"the deploy went through:\n{output[-2000:]}"
    for name in names:
        assert name in output, f"the error does not name {name!r}:\n{output[-2000:]}"
    assert "Starting operation" not in output, "an operation ran before the inputs were checked"


@pytest.fixture
def untouched_host():
    before = host_state()
    yield
    assert host_state() == before, "the refused deploy changed the host"


@pytest.mark.usefixtures("untouched_host")
def test_unknown_provider_in_allowlist_stops_the_deploy(tmp_path: Path) -> None:
    extra = group_data_dir(tmp_path, 'llm_allowed_providers = ["fake", "openia"]\n')
    assert_refused(deploy("--group-data", extra), "llm_allowed_providers", "openia")


@pytest.mark.usefixtures("untouched_host")
def test_default_provider_outside_allowlist_stops_the_deploy() -> None:
    assert_refused(deploy("--data", "llm_provider=anthropic"), "llm_provider", "anthropic")


@pytest.mark.usefixtures("untouched_host")
def test_wrong_type_in_group_data_stops_the_deploy(tmp_path: Path) -> None:
    extra = group_data_dir(tmp_path, 'api_port = "8000"\n')
    assert_refused(deploy("--group-data", extra), "api_port", "'8000'")


@pytest.mark.usefixtures("untouched_host")
def test_allowed_real_provider_without_key_stops_the_deploy(tmp_path: Path) -> None:
    extra = group_data_dir(tmp_path, 'llm_allowed_providers = ["fake", "openai", "anthropic"]\n')
    env = {"ANTHROPIC_API_KEY": ""}
    assert_refused(deploy("--group-data", extra, env=env), "ANTHROPIC_API_KEY")


@pytest.mark.usefixtures("untouched_host")
def test_missing_database_password_stops_the_deploy() -> None:
    run = deploy("--data", "secrets_file=secrets/does-not-exist.env", env={"DB_PASSWORD": ""})
    assert_refused(run, "DB_PASSWORD")


@pytest.mark.usefixtures("untouched_host")
def test_invalid_prometheus_config_stops_the_deploy(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus.yml"
    broken.write_text((REPO / "files" / "prometheus.yml").read_text() + "\nscrape_interval: [\n")
    assert_refused(deploy("--data", f"prometheus_config_file={broken}"), "promtool", str(broken))


@pytest.mark.usefixtures("untouched_host")
def test_diff_flag_is_refused_because_it_would_print_secrets() -> None:
    assert_refused(deploy("--diff"), "--diff")

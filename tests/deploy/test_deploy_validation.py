"""A bad input stops the deploy before it changes anything, with a message naming the value.

Runs the real deploy against the sandbox with one bad value each (or an inventory with wrong
roles); the host must be untouched.
"""

from __future__ import annotations

import os
import shutil
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


def deploy(
    *extra: str, env: dict[str, str] | None = None, inventory: str = INVENTORY
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYINFRA, "-y", inventory, "deploy.py", *extra],
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
    # deepseek: a known provider outside every sandbox's allowlist (fake, openai, anthropic).
    assert_refused(deploy("--data", "llm_provider=deepseek"), "llm_provider", "deepseek")


@pytest.mark.usefixtures("untouched_host")
def test_wrong_type_in_group_data_stops_the_deploy(tmp_path: Path) -> None:
    extra = group_data_dir(tmp_path, 'api_port = "8000"\n')
    assert_refused(deploy("--group-data", extra), "api_port", "'8000'")


@pytest.mark.usefixtures("untouched_host")
def test_allowed_real_provider_without_key_stops_the_deploy(tmp_path: Path) -> None:
    # google: a provider the sandbox's stand-in does not play, so no dummy key is generated.
    extra = group_data_dir(
        tmp_path, 'llm_allowed_providers = ["fake", "openai", "anthropic", "google"]\n'
    )
    env = {"GOOGLE_API_KEY": ""}
    assert_refused(deploy("--group-data", extra, env=env), "GOOGLE_API_KEY")


@pytest.mark.usefixtures("untouched_host")
def test_a_fallback_outside_the_allowlist_stops_the_deploy(tmp_path: Path) -> None:
    extra = group_data_dir(
        tmp_path,
        'llm_fallbacks = {"anthropic": ["openai/gpt-4o-mini", "google/gemini-2.0-flash"]}\n',
    )
    run = deploy("--group-data", extra)
    assert_refused(
        run, "LLM_FALLBACKS", "google", "not in VERITTA_LLM_ALLOWED_PROVIDERS", "`llm_fallbacks`"
    )


@pytest.mark.usefixtures("untouched_host")
def test_a_fallback_without_its_providers_key_stops_the_deploy(tmp_path: Path) -> None:
    extra = group_data_dir(
        tmp_path,
        'llm_allowed_providers = ["fake", "openai", "anthropic", "google"]\n'
        'llm_fallbacks = {"anthropic": ["google/gemini-2.0-flash"]}\n',
    )
    assert_refused(deploy("--group-data", extra, env={"GOOGLE_API_KEY": ""}), "GOOGLE_API_KEY")


@pytest.mark.usefixtures("untouched_host")
@pytest.mark.parametrize(
    ("chains", "named"),
    [
        ('{"anthropic": ["openai"]}', "`provider/model`"),
        ('{"anthropic": ["anthropic/claude-3-5-haiku-latest"]}', "same provider"),
        ('{"anthropic": "openai/gpt-4o-mini"}', "group data `llm_fallbacks`"),
        ('{"anthropic": ["openai/gpt 4o"]}', "group data `llm_fallbacks`"),
    ],
    ids=["no-model", "to-itself", "not-a-list", "separator-in-a-name"],
)
def test_a_malformed_fallback_chain_stops_the_deploy(tmp_path: Path, chains, named) -> None:
    extra = group_data_dir(tmp_path, f"llm_fallbacks = {chains}\n")
    assert_refused(deploy("--group-data", extra), named)


@pytest.mark.usefixtures("untouched_host")
def test_a_stream_idle_timeout_beyond_haproxys_stops_the_deploy(tmp_path: Path) -> None:
    extra = group_data_dir(tmp_path, "llm_stream_idle_timeout_seconds = 120\n")
    run = deploy("--group-data", extra, "--data", "balancer_idle_timeout=2m")
    assert_refused(run, "llm_stream_idle_timeout_seconds", "balancer_idle_timeout")


@pytest.mark.usefixtures("untouched_host")
def test_missing_database_password_stops_the_deploy() -> None:
    run = deploy("--data", "secrets_file=secrets/does-not-exist.env", env={"DB_PASSWORD": ""})
    assert_refused(run, "DB_PASSWORD")


@pytest.mark.usefixtures("untouched_host")
def test_invalid_alert_rules_stop_the_deploy(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "files" / "prometheus", rules)
    (rules / "broken.yml").write_text("groups:\n  - name: broken\n    rules: [\n")
    assert_refused(deploy("--data", f"prometheus_rules_dir={rules}"), "promtool")


@pytest.mark.usefixtures("untouched_host")
@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("backup_retention_full_days = 3\n", ("backup_retention_full_days", "3")),
        ("pgbackrest_restore_port = 8432\n", ("pgbackrest_restore_port",)),
        ('pg_archive_timeout_seconds = "60"\n', ("pg_archive_timeout_seconds", "'60'")),
        ("restore_test_tables = {'user prefs': 1}\n", ("restore_test_tables",)),
        ("backup_full_every_days = 40\n", ("backup_full_every_days",)),
    ],
    ids=["retention", "ports", "archive-timeout-type", "restore-test-table", "full-every"],
)
def test_bad_offsite_backup_settings_stop_the_deploy(
    tmp_path: Path, body: str, names: tuple[str, ...]
) -> None:
    assert_refused(deploy("--group-data", group_data_dir(tmp_path, body)), *names)


@pytest.mark.usefixtures("untouched_host")
def test_a_weak_repository_passphrase_stops_the_deploy() -> None:
    run = deploy(env={"PGBACKREST_CIPHER_PASS": "short"})
    assert_refused(run, "PGBACKREST_CIPHER_PASS")
    assert "short" not in run.stdout + run.stderr, "the passphrase reached the output"


def inventory_file(tmp_path: Path, roles: dict[str, list[str]], **data: dict) -> str:
    """An inventory of the local sandbox's two VMs with other roles (and host data)."""
    lines = [
        "import sys",
        f"sys.path.insert(0, {str(REPO / 'inventories')!r})",
        "import local as _local",
        "_hosts = {name: (name, {**d, **extra.get(name, {})}) for name, d in _local.local",
        f"          for extra in [{data!r}]}}",
        "local = list(_hosts.values())",
    ]
    for role, names in roles.items():
        lines.append(f"{role} = [_hosts[n] for n in {names!r}]")
    path = tmp_path / "inventory.py"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


VM, BACKUP = "techno-os-vm", "techno-os-backup"


@pytest.mark.usefixtures("untouched_host")
@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"edge": [VM], "api": [VM], "backup": [BACKUP]}, "0 `db` host(s)"),
        ({"edge": [VM], "db": [VM, BACKUP], "api": [VM], "backup": [BACKUP]}, "2 `db` host(s)"),
        ({"edge": [VM], "db": [VM], "backup": [BACKUP]}, "no `api` host"),
        ({"edge": [VM], "db": [VM], "api": [VM], "backup": [VM]}, "backups must live"),
    ],
    ids=["no-db", "two-db", "no-api", "backup-on-db"],
)
def test_an_inventory_with_wrong_roles_stops_the_deploy(tmp_path, roles, message) -> None:
    assert_refused(deploy(inventory=inventory_file(tmp_path, roles)), message)


@pytest.mark.usefixtures("untouched_host")
def test_an_api_host_that_cannot_reach_the_db_host_stops_the_deploy(tmp_path) -> None:
    # The backup VM as an API host of a database host at an address nothing answers.
    roles = {"edge": [VM], "db": [VM], "api": [VM, BACKUP], "backup": [BACKUP]}
    path = inventory_file(tmp_path, roles, **{VM: {"private_address": "10.213.0.254"}})
    assert_refused(deploy(inventory=path), "cannot reach the db host", "10.213.0.254")


@pytest.mark.usefixtures("untouched_host")
def test_diff_flag_is_refused_because_it_would_print_secrets() -> None:
    assert_refused(deploy("--diff"), "--diff")


@pytest.mark.usefixtures("untouched_host")
def test_no_deadmans_switch_receiver_stops_the_deploy() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DEADMANS_SWITCH_URL"}
    run = subprocess.run(
        [PYINFRA, "-y", INVENTORY, "deploy.py", "--data", "deadmans_switch_url="],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert_refused(run, "dead man's switch", "DEADMANS_SWITCH_URL")


@pytest.mark.usefixtures("untouched_host")
def test_monitoring_role_equal_to_the_application_role_stops_the_deploy() -> None:
    assert_refused(deploy("--data", "postgres_exporter_role=techno_user"), "postgres_exporter_role")

"""Runbook § Configurar Cron (Automático) and § VARIÁVEIS ENV OBRIGATÓRIAS: the backup line in
root's crontab, cron running, the scripts and the backup directory, fresh archives; the `.env` file
and its provider allowlist, keys that never leak.

Secret values read from `.env` never appear in an assertion message: only variable names do.
"""

from __future__ import annotations

import json

import pytest

from ._support import Target

pytestmark = pytest.mark.readonly

RUNBOOK_CRON_SCHEDULE = "0 2 * * *"
FRESH_ARCHIVE_HOURS = 26
# The runbook's circuit-breaker and timeout figures ("3 falhas", "60 segundos", "30s").
RUNBOOK_LLM_SETTINGS = {
    "LLM_CIRCUIT_FAILURE_THRESHOLD": 3.0,
    "LLM_CIRCUIT_COOLDOWN_SECONDS": 60.0,
    "LLM_TIMEOUT_SECONDS": 30.0,
}


def backup_script(t: Target) -> str:
    return f"{t.cfg('scripts_dir')}/backup_observability.sh"


def expected_cron_line(t: Target) -> str:
    return f"{t.cfg('backup_cron_schedule')} {backup_script(t)} >> {t.cfg('backup_log')} 2>&1"


def installed_cron_lines(t: Target) -> list[str]:
    out = t.run("crontab -l -u root")
    lines = out.stdout.splitlines() if out.rc == 0 else []
    return [line.strip() for line in lines if "backup_observability" in line]


def archives(t: Target) -> list[tuple[float, str, str, int]]:
    """(mtime, name, owner, mode) of every postgres_<ts>.tar.gz in the backup directory."""
    out = t.check(
        "find %s -maxdepth 1 -type f -name 'postgres_*.tar.gz' -printf '%%T@ %%f %%u %%m\\n'",
        t.cfg("backup_dir"),
    )
    rows = []
    for line in out.splitlines():
        mtime, name, owner, mode = line.split()
        rows.append((float(mtime), name, owner, int(mode, 8)))
    return sorted(rows)


# --- checks ----------------------------------------------------------------------------------
def check_backup_cron_line(t: Target) -> None:
    lines = installed_cron_lines(t)
    assert expected_cron_line(t) in lines, (
        f"root's crontab lacks `{expected_cron_line(t)}`; backup lines found: {lines}"
    )


def check_cron_running(t: Target) -> None:
    service = t.host.service("cron")
    assert service.is_running, "cron is not running"
    assert service.is_enabled, "cron is not enabled"


def check_script_executable_by_root(t: Target, path: str) -> None:
    f = t.host.file(path)
    assert f.exists and f.is_file, f"{path} does not exist"
    assert f.user == "root", f"{path} is owned by {f.user}"
    assert f.mode & 0o100, f"{path} is not executable (mode {f.mode:o})"
    assert not f.mode & 0o022, f"{path} is writable by group/others (mode {f.mode:o})"


def check_backup_dir_private(t: Target) -> None:
    d = t.host.file(t.cfg("backup_dir"))
    assert d.exists and d.is_directory, f"{t.cfg('backup_dir')} does not exist"
    assert d.user == "root", f"{t.cfg('backup_dir')} is owned by {d.user}"
    assert not d.mode & 0o077, f"{t.cfg('backup_dir')} is mode {d.mode:o}, expected 0700"


def check_env_file_mode(t: Target) -> None:
    f = t.host.file(f"{t.cfg('backend_dir')}/.env")
    assert f.exists, ".env does not exist"
    assert (f.user, f.group) == ("root", "root"), f".env is owned by {f.user}:{f.group}"
    assert f.mode == 0o600, f".env is mode {f.mode:o}, expected 600"


# --- cron ----------------------------------------------------------------------------------
@pytest.mark.role("db")
def test_backup_cron_line_is_in_roots_crontab_exactly(target: Target) -> None:
    check_backup_cron_line(target)


@pytest.mark.role("db")
def test_backup_line_runs_daily_at_two(target: Target) -> None:
    lines = installed_cron_lines(target)
    assert lines, "no backup line in root's crontab"
    assert all(" ".join(line.split()[:5]) == RUNBOOK_CRON_SCHEDULE for line in lines), lines


@pytest.mark.role("any")
def test_cron_service_is_running(target: Target) -> None:
    check_cron_running(target)


@pytest.mark.role("db")
def test_backup_script_exists_is_executable_and_owned_by_root(target: Target) -> None:
    check_script_executable_by_root(target, backup_script(target))


@pytest.mark.role("db")
def test_restore_script_exists_is_executable_and_owned_by_root(target: Target) -> None:
    check_script_executable_by_root(target, f"{target.cfg('scripts_dir')}/restore_observability.sh")


@pytest.mark.role("db")
def test_backup_directory_exists_and_is_private_to_root(target: Target) -> None:
    check_backup_dir_private(target)


@pytest.mark.role("db")
def test_newest_archive_is_younger_than_26_hours(target: Target) -> None:
    found = archives(target)
    if not found:
        # A run into the standard directory leaves lines in the log (cron's `>>`) and its run
        # metric, even failing; a manual copy elsewhere (BACKUP_DIR=/mnt/backups) leaves neither.
        metrics = f"{target.cfg('textfile_collector_dir')}/techno_os_backup.prom"
        ran = (
            target.run(
                "test -s %s || grep -q '^techno_os_backup_last_run_timestamp_seconds ' %s",
                target.cfg("backup_log"),
                metrics,
            ).rc
            == 0
        )
        assert not ran, "a backup has run into the standard directory but there is no archive"
        pytest.skip("no backup has run yet (empty log, no backup metrics, no archive)")
    now = float(target.check("date +%s"))
    newest_mtime, newest, _, _ = found[-1]
    age_hours = (now - newest_mtime) / 3600
    assert age_hours < FRESH_ARCHIVE_HOURS, f"newest archive {newest} is {age_hours:.1f} h old"


@pytest.mark.role("db")
def test_backup_archives_are_readable_by_root_only(target: Target) -> None:
    loose = [(n, o, f"{m:o}") for _, n, o, m in archives(target) if o != "root" or m & 0o077]
    assert not loose, f"archive(s) readable beyond root: {loose}"


# --- environment ----------------------------------------------------------------------------
@pytest.mark.role("db", "api")
def test_env_file_is_mode_0600_owned_by_root(target: Target) -> None:
    check_env_file_mode(target)


@pytest.mark.role("api")
def test_allowed_providers_is_set_and_lists_only_known_providers(target: Target) -> None:
    env = target.env_file()
    raw = env.get("VERITTA_LLM_ALLOWED_PROVIDERS", "")
    allowed = [p.strip() for p in raw.split(",") if p.strip()]
    assert allowed, "VERITTA_LLM_ALLOWED_PROVIDERS is unset or empty"
    unknown = set(allowed) - set(target.known_providers)
    assert not unknown, f"VERITTA_LLM_ALLOWED_PROVIDERS names unknown provider(s) {unknown}"
    intended = target.data.get("llm_allowed_providers")
    if intended is not None:
        assert sorted(allowed) == sorted(intended), (
            f"deployed allowlist {allowed} differs from group data {intended}"
        )


@pytest.mark.role("api")
def test_default_llm_provider_is_in_the_allowlist(target: Target) -> None:
    env = target.env_file()
    allowed = {p.strip() for p in env.get("VERITTA_LLM_ALLOWED_PROVIDERS", "").split(",")}
    provider = env.get("LLM_PROVIDER", "fake")
    assert provider in allowed, f"LLM_PROVIDER={provider} is not in the allowlist {allowed}"


@pytest.mark.role("api")
def test_every_allowed_real_provider_has_an_api_key(target: Target) -> None:
    env = target.env_file()
    allowed = [p.strip() for p in env.get("VERITTA_LLM_ALLOWED_PROVIDERS", "").split(",")]
    missing = [
        f"{p.upper()}_API_KEY"
        for p in allowed
        if p and p != "fake" and not env.get(f"{p.upper()}_API_KEY")
    ]
    assert not missing, f"allowed provider(s) without a key: {missing}"


def fallback_chains(raw: str) -> dict[str, list[str]]:
    """LLM_FALLBACKS (`openai=anthropic/m,google/m;xai=...`) as provider -> alternatives."""
    chains = {}
    for entry in filter(None, (e.strip() for e in raw.split(";"))):
        source, _, targets = entry.partition("=")
        chains[source.strip()] = [t.strip() for t in targets.split(",") if t.strip()]
    return chains


@pytest.mark.role("api")
def test_fallbacks_are_the_group_datas_and_go_only_to_allowed_providers_with_keys(
    target: Target,
) -> None:
    env = target.env_file()
    chains = fallback_chains(env.get("LLM_FALLBACKS", ""))
    intended = target.data.get("llm_fallbacks")
    if intended is not None:
        assert chains == intended, f"deployed LLM_FALLBACKS {chains} differs from {intended}"
    allowed = {p.strip() for p in env.get("VERITTA_LLM_ALLOWED_PROVIDERS", "").split(",")}
    for source, alternatives in chains.items():
        for alternative in alternatives:
            provider, slash, model = alternative.partition("/")
            assert slash and model, f"LLM_FALLBACKS {source}: {alternative!r} is not provider/model"
            assert provider in allowed, f"LLM_FALLBACKS {source}: {provider} is not allowed"
            assert provider == "fake" or env.get(f"{provider.upper()}_API_KEY"), (
                f"LLM_FALLBACKS {source}: {provider.upper()}_API_KEY is missing"
            )


@pytest.mark.role("api")
def test_stream_idle_timeout_is_set_as_group_data_says(target: Target) -> None:
    value = target.env_file().get("LLM_STREAM_IDLE_TIMEOUT_SECONDS")
    assert value is not None, "LLM_STREAM_IDLE_TIMEOUT_SECONDS is not in the .env"
    intended = target.data.get("llm_stream_idle_timeout_seconds", 30)
    assert float(value) == float(intended)


@pytest.mark.role("api")
def test_llm_breaker_and_timeout_settings_are_the_runbook_figures(target: Target) -> None:
    env = target.env_file()
    actual = {k: float(env.get(k, v)) for k, v in RUNBOOK_LLM_SETTINGS.items()}
    assert actual == RUNBOOK_LLM_SETTINGS


@pytest.mark.role("api")
def test_no_key_appears_in_docker_labels_logs_or_metrics(target: Target) -> None:
    env = target.env_file()
    secrets = {
        k: v
        for k, v in env.items()
        if (k.endswith("_API_KEY") or k in ("DB_PASSWORD", "DATABASE_URL")) and len(v) >= 6
    }
    if not secrets:
        pytest.skip("no key or password in .env")
    places: dict[str, str] = {}
    containers = target.check("docker ps -aq").split()
    for info in json.loads(target.check("docker inspect " + " ".join(containers)) or "[]"):
        places[f"labels of {info['Name']}"] = json.dumps(info["Config"].get("Labels") or {})
    for name in (target.cfg("api_container"), target.cfg("db_container")):
        if target.inspect(name):
            places[f"docker logs {name}"] = target.check("docker logs %s 2>&1", name)
    places["/metrics"] = target.api("GET", "/metrics").body
    places["the release settings"] = target.check("cat /etc/techno-os/release.json")
    leaks = [
        f"{key} in {place}"
        for key, value in secrets.items()
        for place, text in places.items()
        if value in text
    ]
    assert not leaks, f"secret(s) leaked: {leaks}"

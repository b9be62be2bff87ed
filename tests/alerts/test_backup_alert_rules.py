"""The offsite backups' rules (files/prometheus/backups.yml): valid for promtool, and each
threshold, `for`, absent() branch and severity pinned by tests/alerts/pgbackrest.yml, which
must fail when a rule is moved across its edge (the same proof as test_promtool.py gives for
alerts.yml)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alerts_support import ALERTS_DIR, REPO, Promtool, alert_rules, output

BACKUP_RULES = REPO / "files" / "prometheus" / "backups.yml"
UNIT_TESTS = ALERTS_DIR / "pgbackrest.yml"


def test_backup_rules_pass_promtool_check_rules(promtool: Promtool) -> None:
    result = promtool("check", "rules", BACKUP_RULES)
    assert result.returncode == 0, output(result)
    assert f"SUCCESS: {len(alert_rules(BACKUP_RULES))} rules found" in result.stdout


def test_backup_rule_unit_tests_pass(promtool: Promtool) -> None:
    result = promtool("test", "rules", UNIT_TESTS)
    assert result.returncode == 0, output(result)


# (old, new): each moves one rule across the edge its unit tests pin down.
MUTATIONS = {
    "archive stale > 300 -> >= 300": (
        "pgbackrest_archive_last_segment_timestamp_seconds > 300",
        "pgbackrest_archive_last_segment_timestamp_seconds >= 300",
    ),
    "archive stale > 300 -> > 330": (
        "pgbackrest_archive_last_segment_timestamp_seconds > 300",
        "pgbackrest_archive_last_segment_timestamp_seconds > 330",
    ),
    "archive stale without absent()": (
        "\n          or absent(pgbackrest_archive_last_segment_timestamp_seconds)",
        "",
    ),
    "archive stale for 2m -> 1m45s": (
        "absent(pgbackrest_archive_last_segment_timestamp_seconds)\n        for: 2m\n",
        "absent(pgbackrest_archive_last_segment_timestamp_seconds)\n        for: 1m45s\n",
    ),
    "archiving failing > -> >=": (
        "pg_wal_archiver_last_failed_timestamp_seconds\n            > pg_wal",
        "pg_wal_archiver_last_failed_timestamp_seconds\n            >= pg_wal",
    ),
    "archiving failing without the waiting-WAL branch": (
        "\n          or pg_wal_archiver_oldest_ready_age_seconds > 300",
        "",
    ),
    "waiting WAL > 300 -> >= 300": (
        "pg_wal_archiver_oldest_ready_age_seconds > 300",
        "pg_wal_archiver_oldest_ready_age_seconds >= 300",
    ),
    "archiving failing for 1m -> 45s": (
        "oldest_ready_age_seconds > 300\n        for: 1m\n",
        "oldest_ready_age_seconds > 300\n        for: 45s\n",
    ),
    "archiving failing severity warning": (
        "        for: 1m\n        labels:\n          severity: critical",
        "        for: 1m\n        labels:\n          severity: warning",
    ),
    "offsite stale > 26h -> >= 26h": (
        "pgbackrest_backup_last_good_timestamp_seconds > 26 * 3600",
        "pgbackrest_backup_last_good_timestamp_seconds >= 26 * 3600",
    ),
    "offsite stale without absent()": (
        "\n          or absent(pgbackrest_backup_last_good_timestamp_seconds)",
        "",
    ),
    "offsite stale on any backup, verified or not": (
        "time() - pgbackrest_backup_last_good_timestamp_seconds",
        "time() - pgbackrest_backup_last_timestamp_seconds",
    ),
    "backup failed == 0 -> < 0": (
        "pgbackrest_backup_last_run_success == 0",
        "pgbackrest_backup_last_run_success < 0",
    ),
    "restore test stale > 26h -> >= 26h": (
        "pgbackrest_restore_test_last_success_timestamp_seconds > 26 * 3600",
        "pgbackrest_restore_test_last_success_timestamp_seconds >= 26 * 3600",
    ),
    "restore test stale without absent()": (
        "\n          or absent(pgbackrest_restore_test_last_success_timestamp_seconds)",
        "",
    ),
    "restore test failed severity critical": (
        "expr: pgbackrest_restore_test_success == 0\n        labels:\n          severity: warning",
        "expr: pgbackrest_restore_test_success == 0\n        labels:\n          severity: critical",
    ),
    "conflict without the sealer branch": (
        "\n          or pgbackrest_seal_skipped_entries > 0",
        "",
    ),
    "conflict > 0 -> > 1": (
        "pgbackrest_archive_duplicate_segments > 0",
        "pgbackrest_archive_duplicate_segments > 1",
    ),
    "runbook anchor typo": (
        "runbook_url: docs/runbook.md#walarchivingfailing",
        "runbook_url: docs/runbook.md#wal-archiving-failing",
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=list(MUTATIONS))
def test_unit_tests_fail_when_a_backup_rule_crosses_its_edge(
    promtool: Promtool, tmp_path: Path, mutation: str
) -> None:
    old, new = MUTATIONS[mutation]
    text = BACKUP_RULES.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the mutation {mutation!r} no longer matches backups.yml"
    rules = tmp_path / "files" / "prometheus" / "backups.yml"
    rules.parent.mkdir(parents=True)
    rules.write_text(text.replace(old, new), encoding="utf-8")
    checked = promtool("check", "rules", rules)
    assert checked.returncode == 0, output(checked)
    (tmp_path / "tests" / "alerts").mkdir(parents=True)
    test_file = tmp_path / "tests" / "alerts" / UNIT_TESTS.name
    shutil.copy(UNIT_TESTS, test_file)
    result = promtool("test", "rules", test_file)
    assert result.returncode != 0, f"{UNIT_TESTS.name} did not notice: {mutation}\n{output(result)}"

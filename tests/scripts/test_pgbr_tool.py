"""files/pgbackrest/techno_os_pgbr.py, the parts that run without a repository: the verify gate
(pgBackRest 2.45's real outputs, from the prototype and the sandbox), the archive scan (holes,
duplicates) over real file names, and the sealer on a real directory tree, symlink traps
included. The whole tool runs against real repositories in the sandbox drills
(tests/infra/test_backup_offsite.py)."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location(
    "techno_os_pgbr", REPO / "files" / "pgbackrest" / "techno_os_pgbr.py"
)
assert SPEC and SPEC.loader
pgbr = importlib.util.module_from_spec(SPEC)
sys.modules["techno_os_pgbr"] = pgbr
SPEC.loader.exec_module(pgbr)

# `pgbackrest --output=text --verbose verify`, 2.45 (the sandbox, a healthy repository).
VERIFY_OK = """\
stanza: techno-os
status: ok
  archiveId: 15-1, total WAL checked: 3, total valid WAL: 3
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261201-044439F, status: valid, total files checked: 1287, total valid files: 1287
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""
# The same after one byte of a WAL segment was flipped (the prototype, results/70-corrupt.log):
# the command still exits 0.
VERIFY_CORRUPT = """\
stanza: demo
status: error
  archiveId: 15-1, total WAL checked: 87, total valid WAL: 86
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
  backup: 20261201-031327F, status: valid, total files checked: 961, total valid files: 961
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""


def test_the_gate_passes_a_healthy_verify() -> None:
    assert pgbr.parse_verify(VERIFY_OK) == (True, [])


def test_the_gate_refuses_a_verify_that_found_damage_though_it_exited_0() -> None:
    good, problems = pgbr.parse_verify(VERIFY_CORRUPT)
    assert not good
    assert any("status: error" in p for p in problems)
    assert any("checksum invalid: 1" in p for p in problems)


def test_the_gate_refuses_a_verify_that_printed_nothing() -> None:
    good, problems = pgbr.parse_verify("")
    assert not good and problems == ["verify printed no status line"]


def test_segment_numbers_follow_postgresqls_16_mib_naming() -> None:
    assert pgbr.segment_number("0000000200000001000000FF") == (2, 0x1FF)
    assert pgbr.segment_name(2, 0x200) == "000000020000000200000000"
    assert pgbr.lsn_segment("1/FF000028") == 0x1FF
    assert pgbr.lsn_segment("2/0") == 0x200


def archive(tmp_path: Path, names: list[str]) -> dict:
    """A repository's archive directory with these (empty) files, and settings pointing at it."""
    for name in names:
        segment = name[:24]
        folder = tmp_path / "archive" / "techno-os" / "15-1" / segment[:16]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"Salted__")
    return {"repo_path": str(tmp_path), "stanza": "techno-os"}


def wal(segment: str, checksum: str = "a" * 40) -> str:
    return f"{segment}-{checksum}.zst"


def test_the_scan_finds_a_hole_inside_a_timeline_and_across_a_log_boundary(tmp_path) -> None:
    settings = archive(
        tmp_path,
        [
            wal("0000000100000000000000FE"),
            wal("0000000100000000000000FF"),
            wal("000000010000000100000000"),  # the next segment after ...00FF
            wal("000000010000000100000002"),  # ...01 is missing
            "000000010000000100000002.00000028.backup",  # not a segment
            wal("00000002000000010000000A"),  # another timeline starts anywhere
        ],
    )
    scan = pgbr.scan_archive(settings)
    assert scan.gaps() == [
        "15-1 timeline 00000001: 1 segment(s) missing after 000000010000000100000000 up to "
        "000000010000000100000002"
    ]
    assert scan.duplicates == []


def test_the_scan_counts_a_segment_stored_under_two_names(tmp_path) -> None:
    settings = archive(
        tmp_path,
        [wal("000000010000000000000005"), wal("000000010000000000000005", "0" * 40)],
    )
    assert pgbr.scan_archive(settings).duplicates == ["000000010000000000000005"]


@pytest.fixture
def sealer_settings(tmp_path: Path) -> dict:
    if os.geteuid() != 0:
        pytest.fail("the sealer test changes owners: run the script tests as root (make test)")
    return {
        "repo_path": str(tmp_path / "repo"),
        "stanza": "techno-os",
        "owner": "nobody",
        "wal_group": "nogroup",
        "textfile_dir": str(tmp_path / "textfile"),
    }


def test_the_sealer_hands_files_to_the_owner_read_only_and_follows_no_symlink(
    sealer_settings: dict, tmp_path: Path
) -> None:
    folder = (
        Path(sealer_settings["repo_path"]) / "archive" / "techno-os" / "15-1" / "0000000100000000"
    )
    folder.mkdir(parents=True)
    segment = folder / wal("000000010000000000000001")
    segment.write_bytes(b"Salted__")
    segment.chmod(0o640)
    # A hostile endpoint user's traps: a symlink to a file elsewhere, and a hard link.
    victim = tmp_path / "victim"
    victim.write_text("root's own file")
    victim.chmod(0o600)
    (folder / wal("000000010000000000000002")).symlink_to(victim)
    os.link(victim, folder / wal("000000010000000000000003"))
    in_progress = folder / (wal("000000010000000000000004") + ".pgbackrest.tmp")
    in_progress.write_bytes(b"half")
    (tmp_path / "textfile").mkdir()

    assert pgbr.seal(sealer_settings) == 0

    nobody, nogroup = 65534, 65534
    sealed = segment.stat()
    assert (sealed.st_uid, sealed.st_gid, stat.S_IMODE(sealed.st_mode)) == (nobody, nogroup, 0o440)
    directory = folder.stat()
    assert stat.S_IMODE(directory.st_mode) == 0o3770 and directory.st_uid == nobody
    untouched = victim.stat()
    assert (untouched.st_uid, stat.S_IMODE(untouched.st_mode)) == (0, 0o600), "a trap worked"
    assert in_progress.stat().st_uid == 0, "a push in progress was taken over"
    metrics = (tmp_path / "textfile" / "pgbackrest_seal.prom").read_text()
    assert 'pgbackrest_seal_skipped_entries{stanza="techno-os"} 2' in metrics


def test_publish_installs_only_files_of_pgbackrest_metrics(tmp_path: Path) -> None:
    state, target = tmp_path / "state", tmp_path / "textfile"
    (state / "metrics").mkdir(parents=True)
    target.mkdir()
    (state / "metrics" / "pgbackrest_backup.prom").write_text(
        "# HELP pgbackrest_backup_last_run_success x\npgbackrest_backup_last_run_success 1\n"
    )
    (state / "metrics" / "pgbackrest_evil.prom").write_text("node_load1 1000\n")
    assert pgbr.publish({"state_dir": str(state), "textfile_dir": str(target)}) == 0
    assert sorted(p.name for p in target.iterdir()) == ["pgbackrest_backup.prom"]
    assert stat.S_IMODE((target / "pgbackrest_backup.prom").stat().st_mode) == 0o644


def test_the_backup_type_is_full_when_the_newest_verified_full_is_a_week_old() -> None:
    now = 1_800_000_000
    info = {
        "backup": [
            {"label": "F1", "type": "full", "timestamp": {"stop": now - 8 * 86400}},
            {"label": "F2", "type": "full", "timestamp": {"stop": now - 2 * 86400}},
        ]
    }
    settings = {"full_every_days": 7}
    only_old_verified = {"good": {"F1": {"type": "full"}}}
    both_verified = {"good": {"F1": {"type": "full"}, "F2": {"type": "full"}}}
    # F2 exists but was never verified: it does not count.
    assert pgbr.choose_type(settings, info, only_old_verified, "auto", now) == "full"
    assert pgbr.choose_type(settings, info, both_verified, "auto", now) == "diff"
    assert pgbr.choose_type(settings, info, {"good": {}}, "auto", now) == "full"
    assert pgbr.choose_type(settings, info, both_verified, "incr", now) == "incr"

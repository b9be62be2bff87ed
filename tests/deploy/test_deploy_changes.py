"""Consequences flow from changes: a new .env recreates the API and nothing else.

Changes the sandbox (two deploys), so it refuses any inventory but the local VM's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_deploy_validation import INVENTORY, REPO, SANDBOX, deploy, group_data_dir

if INVENTORY != "inventories/local.py":
    pytest.exit(f"tests/deploy/test_deploy_changes.py changes the host: not run on {INVENTORY}")


def process_identities() -> dict[str, str]:
    """When each container was created and started, and Prometheus' PID."""
    script = (
        "for c in techno-os-api techno-os-db; do "
        "docker inspect -f '{{.Name}} {{.Created}} {{.State.StartedAt}}' $c; done; "
        "systemctl show -p MainPID --value prometheus"
    )
    out = subprocess.run([*SANDBOX, script], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.split("\n")
    return {"api": lines[0], "db": lines[1], "prometheus": lines[2]}


def api_environment(name: str) -> str:
    script = "docker inspect -f '{{json .Config.Env}}' techno-os-api"
    out = subprocess.run([*SANDBOX, script], cwd=REPO, capture_output=True, text=True, check=True)
    values = [e.split("=", 1)[1] for e in json.loads(out.stdout) if e.startswith(f"{name}=")]
    return values[0] if values else ""


def test_env_change_recreates_the_api_and_nothing_else(tmp_path: Path) -> None:
    before = process_identities()
    override = group_data_dir(tmp_path, "llm_timeout_seconds = 29\n")
    try:
        changed = deploy("--group-data", override)
        assert changed.returncode == 0, changed.stdout[-3000:]
        after = process_identities()
        assert api_environment("LLM_TIMEOUT_SECONDS") == "29"
        assert after["api"] != before["api"], "the API kept running with the old .env"
        assert after["db"] == before["db"], "the database was restarted by an .env change"
        assert after["prometheus"] == before["prometheus"], "Prometheus was restarted"
    finally:
        restored = deploy()
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert api_environment("LLM_TIMEOUT_SECONDS") == "30"

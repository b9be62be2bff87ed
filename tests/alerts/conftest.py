"""Fixtures of the promtool suites (tests/alerts).

promtool comes from Debian's `prometheus` package, which `make test` and CI install.
These tests never skip when it is missing: they fail and say how to install it.
Set PROMTOOL to use another binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from alerts_support import Promtool


@pytest.fixture(scope="session")
def promtool_path() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path:
        pytest.fail(
            "promtool not found on PATH. It comes with Debian's prometheus package: "
            "`apt-get install -y prometheus` (make test and CI install it), "
            "or set PROMTOOL=/path/to/promtool. These checks do not skip.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def promtool(promtool_path: str) -> Promtool:
    """Run promtool with arguments; returns the completed process whatever its exit code."""

    def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [promtool_path, *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run

"""Every shell script we ship is shellcheck-clean."""

from __future__ import annotations

import shutil

import pytest
from script_harness import SHELL_SCRIPTS, run


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_script_is_shellcheck_clean(script) -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install -y shellcheck)")
    run(["shellcheck", "--shell=bash", "--external-sources", script])


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_script_is_executable_and_strict(script) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert script.stat().st_mode & 0o111, f"{script} is not executable"

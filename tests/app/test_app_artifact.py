"""The lock and the artifact builder's own logic (the download itself needs PyPI and is run by
`python tools/build_artifact.py`, not here)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build_artifact():
    spec = importlib.util.spec_from_file_location(
        "build_artifact", REPO / "tools" / "build_artifact.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_artifact"] = module
    spec.loader.exec_module(module)
    return module


def test_every_dependency_is_pinned_with_hashes(build_artifact):
    pins = {pin.name: pin for pin in build_artifact.read_lock(REPO / "app" / "requirements.lock")}
    project = tomllib.loads((REPO / "app" / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = build_artifact.normalize(re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is not in requirements.lock"
    for pin in pins.values():
        assert pin.hashes, pin.name
    # SQLAlchemy's asyncio extra needs greenlet, which must be locked too.
    assert "greenlet" in pins and "asyncpg" in pins


def test_version_is_read_from_the_package(build_artifact):
    from techno_os_api import __version__

    assert build_artifact.read_version() == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


GREENLET_ARM = "greenlet-3.1.1-cp311-cp311-manylinux_2_24_aarch64.manylinux_2_28_aarch64.whl"
ASYNCPG_312 = "asyncpg-0.30.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


@pytest.mark.parametrize(
    ("filename", "arch", "fits"),
    [
        (GREENLET_ARM, "aarch64", True),
        (GREENLET_ARM, "x86_64", False),
        (ASYNCPG_312, "x86_64", False),
        ("fastapi-0.115.0-py3-none-any.whl", "aarch64", True),
        ("x-1.0-cp38-abi3-manylinux_2_17_x86_64.whl", "x86_64", True),
        ("x-1.0-cp311-cp311-musllinux_1_2_x86_64.whl", "x86_64", False),
    ],
)
def test_wheel_selection(build_artifact, filename, arch, fits):
    assert (build_artifact.wheel_fits(filename, arch) is not None) is fits


def test_platform_tags_cover_debian_12_glibc(build_artifact):
    tags = build_artifact.platforms("aarch64")
    assert "manylinux2014_aarch64" in tags
    assert "manylinux_2_17_aarch64" in tags and "manylinux_2_28_aarch64" in tags
    assert "manylinux_2_36_aarch64" in tags and "manylinux_2_37_aarch64" not in tags


def test_markers_are_evaluated_for_the_target(build_artifact):
    assert build_artifact.marker_applies('sys_platform == "linux"', "x86_64")
    assert not build_artifact.marker_applies('sys_platform == "win32"', "x86_64")
    assert build_artifact.marker_applies('platform_machine == "aarch64"', "aarch64")

"""Fixtures for the script tests: images built from files/images, throwaway containers."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from script_harness import (
    BASE_IMAGE,
    BASE_SCRIPT,
    POSTGRES_CONTEXT,
    POSTGRES_IMAGE,
    Db,
    docker,
    run,
)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if shutil.which("docker") is None:
        pytest.fail("docker CLI not found: these tests need a local Docker engine")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        pytest.fail(f"the Docker engine is not reachable (docker info):\n{info.stderr}")


@pytest.fixture(scope="session")
def prefix(docker_engine: None) -> Iterator[str]:
    """A unique name prefix; every container and volume carrying it is removed at the end."""
    name = f"tost-{uuid.uuid4().hex[:8]}"
    yield name
    containers = docker("ps", "-aq", "--filter", f"name=^/{name}", check=False).split()
    if containers:
        docker("rm", "-f", "-v", *containers, check=False)
    volumes = docker("volume", "ls", "-q", "--filter", f"name={name}", check=False).split()
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The Debian base image, built by the deploy's own script (a no-op when it exists)."""
    run(["bash", BASE_SCRIPT, BASE_IMAGE], timeout=600)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def postgres_image(base_image: str) -> str:
    run(
        [
            "docker",
            "build",
            "-q",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "-t",
            POSTGRES_IMAGE,
            POSTGRES_CONTEXT,
        ],
        timeout=600,
    )
    return POSTGRES_IMAGE


@pytest.fixture(scope="module")
def db(postgres_image: str, prefix: str) -> Iterator[Db]:
    """A running database with the app's table, shared by a module's tests."""
    tag = uuid.uuid4().hex[:6]
    database = Db(container=f"{prefix}-db-{tag}", volume=f"{prefix}-data-{tag}")
    database.start()
    database.sql(
        "CREATE TABLE IF NOT EXISTS user_preferences ("
        " id bigserial PRIMARY KEY, user_id text NOT NULL, payload text NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT now())"
    )
    yield database
    database.remove()
    docker("volume", "rm", "-f", database.volume, check=False)

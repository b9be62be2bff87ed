"""Facts the standard library of pyinfra does not have: asked of the host while planning."""

import shlex

from pyinfra.api import FactBase


class DockerImageId(FactBase[str]):
    """The id of a local image tag, or "" when it is absent (or Docker is not installed yet)."""

    def command(self, tag: str) -> str:
        return f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(tag)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return "".join(output).strip()


class ComposeServicesRunning(FactBase[bool]):
    """True when every named container exists and runs (it may have been stopped by hand)."""

    def command(self, containers: list[str]) -> str:
        names = " ".join(shlex.quote(c) for c in containers)
        return (
            f"for c in {names}; do "
            '[ "$(docker inspect --format \'{{.State.Running}}\' "$c" 2>/dev/null)" = true ] '
            "|| { echo no; exit 0; }; done; echo yes"
        )

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() == "yes"


class PathsDiffer(FactBase[bool]):
    """True when two files or trees differ, or one is missing (a hand edit, say)."""

    def command(self, first: str, second: str) -> str:
        return (
            f"diff -rq {shlex.quote(first)} {shlex.quote(second)} >/dev/null 2>&1 "
            "&& echo same || echo differ"
        )

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() != "same"

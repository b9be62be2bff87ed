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


class AlembicRevision(FactBase[str]):
    """The database's schema revision (alembic_version), or "" when there is none yet (no
    container, no database, or never migrated)."""

    def command(self, container: str, user: str, database: str) -> str:
        psql = (
            f"docker exec {shlex.quote(container)} psql -qtAX -U {shlex.quote(user)} "
            f"-d {shlex.quote(database)}"
        )
        # Asked only when the table exists: a failing query would be an ERROR in the server log.
        return (
            f'if [ "$({psql} -c "SELECT to_regclass(\'public.alembic_version\') IS NOT NULL" '
            f'2>/dev/null)" = t ]; then {psql} -c "SELECT version_num FROM alembic_version"; fi'
        )

    def process(self, output: list[str]) -> str:
        return "".join(output).strip()


class RolePasswordVerifier(FactBase[str]):
    """The SCRAM verifier PostgreSQL stores for a role (pg_authid.rolpassword: a salted hash,
    never the password), or "" when there is no database yet. Compared with the DB_PASSWORD
    secret on the control machine (tasks/database.py)."""

    def command(self, container: str, user: str, role: str) -> str:
        return (
            f"docker exec {shlex.quote(container)} psql -qtAX -U {shlex.quote(user)} -d postgres "
            f"-c \"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'\" "
            "2>/dev/null || true"
        )

    def process(self, output: list[str]) -> str:
        return "".join(output).strip()


class ReleaseServing(FactBase[bool]):
    """True when the API host's live release runs this image with today's env file and its front
    points at it (`techno-os-release check`); False on a host without a release yet."""

    def command(self, image: str) -> str:
        return (
            f"/usr/local/bin/techno-os-release check {shlex.quote(image)} >/dev/null 2>&1 "
            "&& echo yes || echo no"
        )

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() == "yes"


class FileExists(FactBase[bool]):
    def command(self, path: str) -> str:
        return f"test -e {shlex.quote(path)} && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() == "yes"


class ClientKeyStatus(FactBase[str]):
    """`active`, `revoked` or `expired` for a client key id (the operators' tool in the API
    container); `absent` when there is no such key or no API container yet; `unknown` when the
    tool could not tell (the database refused it, e.g. in the middle of a password rotation)."""

    def command(self, container: str, key_id: str) -> str:
        name = shlex.quote(container)
        return (
            f"docker inspect --type container {name} >/dev/null 2>&1 "
            "|| { echo absent; exit 0; }; "
            f"out=$(docker exec {name} python -m techno_os_api.keys show {shlex.quote(key_id)} "
            "2>/dev/null); rc=$?; "
            # The tool exits 2 for a key it does not know, 1 when the database failed it.
            'case $rc in 0) printf %s "$out" | jq -r .status;; 2) echo absent;; '
            "*) echo unknown;; esac"
        )

    def process(self, output: list[str]) -> str:
        return "".join(output).strip() or "unknown"


class TcpReachable(FactBase[bool]):
    """True when this host opens a TCP connection to address:port within 3 seconds."""

    def command(self, address: str, port: int) -> str:
        probe = shlex.quote(f"</dev/tcp/{address}/{port}")
        return f"timeout 3 bash -c {probe} 2>/dev/null && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() == "yes"


class PgbackrestBackups(FactBase[dict]):
    """The backup host's repository: whether the stanza exists, and how many backups
    techno-os-pgbr has verified (its state file) ({"stanza": False, "good": 0} before any)."""

    def command(self, stanza: str, repo: str, state: str) -> str:
        info = shlex.quote(f"{repo}/backup/{stanza}/backup.info")
        return (
            f"if [ -f {info} ]; then echo stanza; else echo none; fi; "
            f"jq -r '.good | length' {shlex.quote(state)} 2>/dev/null || echo 0"
        )

    def process(self, output: list[str]) -> dict:
        lines = [line.strip() for line in output if line.strip()]
        good = lines[1] if len(lines) > 1 and lines[1].isdigit() else "0"
        return {"stanza": bool(lines) and lines[0] == "stanza", "good": int(good)}


class NotOwnedBy(FactBase[bool]):
    """True when something under `path` is not owned by the numeric uid:gid (a container's user
    that may have another name, or none, on the host), or `path` is missing."""

    def command(self, path: str, uid: int, gid: int) -> str:
        quoted = shlex.quote(path)
        return (
            f"if [ -e {quoted} ]; then find {quoted} \\( ! -uid {uid} -o ! -gid {gid} \\) "
            "-print -quit; else echo missing; fi"
        )

    def process(self, output: list[str]) -> bool:
        return any(line.strip() for line in output)

"""The database host: PostgreSQL 15 in the compose project (the runbook's `techno-os-db` and
volume), on the host's network, listening on loopback and, when an API host is elsewhere, on
the private address with scram access from the API hosts only (pg_hba.conf).

Its config is staged, checked by PostgreSQL itself (`postgres -C` in the release's image), then
installed and reloaded; a setting that needs a restart (listen_addresses) restarts it. Rotating
DB_PASSWORD (the secret, then a deploy) changes the role's password here, before the API hosts
are released with it: their running instances keep their open connections until the switch.
Before a release migrates the schema, the runbook's backup script runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from tasks import topology
from tasks.common import DataRules, artifact, check_data, is_path, is_port, required_secret
from tasks.facts import AlembicRevision, ComposeServicesRunning, RolePasswordVerifier
from tasks.images import db_image
from tasks.services import ConfigFile, checked_config

CONF_IN_CONTAINER = "/etc/techno-os/postgres"
HBA_ERRORS = "SELECT line_number || chr(58) || error FROM pg_hba_file_rules WHERE error IS NOT NULL"
PENDING_RESTART = "SELECT name FROM pg_settings WHERE pending_restart"

DATA: DataRules = {
    "compose_project": (
        str,
        lambda v: v.replace("-", "").replace("_", "").isalnum(),
        "letters, digits, '-' and '_'",
    ),
    "db_container": (str, bool, "a non-empty name"),
    "db_user": (str, lambda v: v.isidentifier(), "a plain identifier"),
    "db_name": (str, lambda v: v.isidentifier(), "a plain identifier"),
    "db_port": (int, is_port, "a TCP port (1-65535)"),
    "db_config_dir": (str, is_path, "an absolute path"),
    "stack_health_timeout_seconds": (int, lambda v: v > 0, "a positive number of seconds"),
}


def check() -> None:
    check_data(DATA)
    required_secret("DB_PASSWORD")


def api_clients() -> list[str]:
    """The private addresses of the API hosts that reach PostgreSQL over the network."""
    return sorted(
        {
            topology.private_address(api)
            for api in topology.hosts_with("api")
            if api.name != host.name
        }
    )


def _docker_exec_psql(sql: str) -> str:
    return (
        f"docker exec {host.data.db_container} psql -v ON_ERROR_STOP=1 -qtAX "
        f"-U {host.data.db_user} -d {host.data.db_name} -c {sql!r}"
    )


@deploy("Database host: PostgreSQL, its config and its password")
def database(stack_inputs: list[OperationMeta]) -> None:
    if not topology.has("db"):
        return
    data = host.data
    conf_dir = data.db_config_dir
    listen = topology.listen_addresses(serves_other_hosts=bool(api_clients()))
    files.directory(
        name=f"Directory {conf_dir} (PostgreSQL's config, read-only in the container)",
        path=conf_dir,
        mode="0755",
    )
    staged_dir = f"/etc/techno-os/staged/postgres{conf_dir}"
    config = checked_config(
        "postgres",
        [
            ConfigFile(
                f"{conf_dir}/postgresql.conf",
                template="templates/postgresql.conf.j2",
                data={"listen": listen, "conf_dir": CONF_IN_CONTAINER},
            ),
            ConfigFile(
                f"{conf_dir}/pg_hba.conf",
                template="templates/pg_hba.conf.j2",
                data={"clients": api_clients()},
            ),
        ],
        # PostgreSQL reads the staged files exactly as it will read the live ones.
        check=(
            f"docker run --rm --network none --user postgres --entrypoint postgres "
            f"-v {staged_dir}:{CONF_IN_CONTAINER}:ro {db_image().tag} -C listen_addresses "
            f"-c config_file={CONF_IN_CONTAINER}/postgresql.conf >/dev/null"
        ),
        what="PostgreSQL's config (postgres -C)",
    )
    backend = data.backend_dir
    password_file = f"{backend}/db_password"
    files.put(
        name=f"{password_file} (root, 0600): initialises an empty volume",
        src=StringIO(required_secret("DB_PASSWORD") + "\n"),
        dest=password_file,
        user="root",
        group="root",
        mode="0600",
    )
    compose = files.template(
        name=f"Render {backend}/docker-compose.yml",
        src="templates/docker-compose.yml.j2",
        dest=f"{backend}/docker-compose.yml",
        mode="0640",
        db_image=db_image().tag,
        conf_in_container=CONF_IN_CONTAINER,
        password_file=password_file,
        pgbackrest_address=topology.private_address(host),
    )
    running = host.get_fact(
        ComposeServicesRunning, containers=[data.db_container, data.pgbackrest_container]
    )
    started = server.shell(
        name="Bring PostgreSQL up (docker-compose up -d) and wait until it is healthy",
        commands=[
            f"cd {backend} && docker-compose up -d --remove-orphans",
            WAIT_HEALTHY.format(
                timeout=data.stack_health_timeout_seconds, container=data.db_container
            ),
        ],
        # docker-compose reports no changes itself: it runs when an input changed, or when the
        # container is not running (someone ran `docker-compose down`).
        _if=any_changed(compose, *stack_inputs) if running else (lambda: True),
    )
    server.shell(
        name="Reload PostgreSQL's config; restart it when a setting needs it; refuse a bad hba",
        commands=[
            _docker_exec_psql("SELECT pg_reload_conf()"),
            "sleep 1",
            # pg_hba.conf is only parsed on reload: an error keeps the previous rules in force.
            f'test -z "$({_docker_exec_psql(HBA_ERRORS)})"',
            f'if [ -n "$({_docker_exec_psql(PENDING_RESTART)})" ]; '
            f"then docker restart {data.db_container} && "
            + WAIT_HEALTHY.format(
                timeout=data.stack_health_timeout_seconds, container=data.db_container
            )
            + "; fi",
        ],
        _if=lambda: config.did_change() and not started.did_change(),
    )
    rotate_password()
    backup_before_migration()


WAIT_HEALTHY = """deadline=$(( $(date +%s) + {timeout} ))
until [ "$(docker inspect --format '{{{{.State.Health.Status}}}}' {container} 2>/dev/null)" \
        = healthy ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "{container} is not healthy after {timeout} s:" >&2; docker logs --tail 50 {container} >&2
    exit 1
  fi
  sleep 2
done"""


def scram_matches(verifier: str, password: str) -> bool:
    """Whether `password` is the one a SCRAM-SHA-256 verifier (pg_authid.rolpassword) was made
    from (RFC 5802/7677, as PostgreSQL stores it: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:
    <ServerKey>`). Checked here, on the control machine: the password never goes to the host to
    be compared."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier.strip())
    if not match:
        return False
    iterations, salt, stored_key = int(match[1]), base64.b64decode(match[2]), match[3]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(
        base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored_key
    )


def rotate_password() -> None:
    """The role's password follows DB_PASSWORD: initdb set the first one; afterwards, when the
    role's stored verifier does not match the secret (a rotation, or a restored database that
    carries an older password), an ALTER ROLE sets it. An unchanged secret changes nothing."""
    data = host.data
    password = required_secret("DB_PASSWORD")
    verifier = host.get_fact(
        RolePasswordVerifier, container=data.db_container, user=data.db_user, role=data.db_user
    )
    if verifier and scram_matches(verifier, password):
        return
    sql_file = f"{data.db_config_dir}/.rotate.sql"
    quoted = password.replace("'", "''")
    files.put(
        name="Stage the role's new password (root, 0600; removed right after)",
        src=StringIO(f"ALTER ROLE {data.db_user} PASSWORD '{quoted}';\n"),
        dest=sql_file,
        mode="0600",
    )
    server.shell(
        name=f"Set the password of role {data.db_user} to DB_PASSWORD (rotation)",
        commands=[
            f"docker exec -i {data.db_container} psql -v ON_ERROR_STOP=1 -q "
            f"-U {data.db_user} -d postgres < {sql_file}; status=$?; rm -f {sql_file}; "
            "exit $status",
        ],
    )


def backup_before_migration() -> None:
    """A release whose schema is ahead of the database's gets a backup first (the runbook's
    script, to the standard directory): expand/contract makes a rollback need no down-
    migration, and this backup is what is left if a migration goes wrong."""
    revision = host.get_fact(
        AlembicRevision,
        container=host.data.db_container,
        user=host.data.db_user,
        database=host.data.db_name,
    )
    if revision and revision != artifact().migration_head:
        server.shell(
            name=f"Back up before the release migrates the schema ({revision} -> "
            f"{artifact().migration_head})",
            commands=[
                f"{host.data.scripts_dir}/backup_observability.sh >> {host.data.backup_log} 2>&1"
                f" || {{ tail -5 {host.data.backup_log} >&2; exit 1; }}"
            ],
        )

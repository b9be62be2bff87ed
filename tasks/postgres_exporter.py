"""The database host: Debian's prometheus-postgres-exporter, which asks PostgreSQL what the API's
/health cannot tell (is it up, its connections, deadlocks, long transactions, restarts).

It connects over loopback as a role of its own with pg_monitor and nothing else (no superuser,
no rights on the application's tables), whose password is the secret POSTGRES_EXPORTER_PASSWORD
(generated on disposable hosts). The password reaches the host only in a file readable by root
and the exporter's group, and the role's password follows the secret as DB_PASSWORD's does
(tasks/database.py): compared with the stored SCRAM verifier on the control machine, set with
ALTER ROLE from a root-only file when they differ.
"""

from __future__ import annotations

import secrets as token
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from tasks import topology
from tasks.common import (
    DataRules,
    append_secrets,
    check_data,
    fail,
    is_port,
    required_secret,
    secret,
)
from tasks.database import scram_matches
from tasks.facts import RolePasswordVerifier

SECRET = "POSTGRES_EXPORTER_PASSWORD"
DEFAULTS_FILE = "/etc/default/prometheus-postgres-exporter"
PASSWORD_FILE = "/etc/prometheus/postgres-exporter.password"
QUERIES_FILE = "/etc/prometheus/postgres-exporter-queries.yaml"

DATA: DataRules = {
    "postgres_exporter_port": (int, is_port, "a TCP port (1-65535)"),
    "postgres_exporter_role": (
        str,
        lambda v: v.isidentifier() and v == v.lower(),
        "a plain lower-case identifier",
    ),
    "postgres_exporter_connection_limit": (int, lambda v: 1 <= v <= 20, "1 to 20"),
}


def check() -> None:
    check_data(DATA)
    if host.data.postgres_exporter_role == host.data.db_user:
        raise fail(
            "group data `postgres_exporter_role` must differ from `db_user`: the monitoring "
            "role has pg_monitor only, never the application's rights"
        )
    if topology.has("db"):
        password()


def password() -> str:
    """POSTGRES_EXPORTER_PASSWORD; generated into the secrets file on a disposable host."""
    if not secret(SECRET) and host.data.disposable:
        append_secrets(
            {SECRET: token.token_urlsafe(24)},
            "PostgreSQL monitoring role (postgres exporter), made by the deploy.",
        )
    return required_secret(SECRET)


def targets() -> list[dict[str, str]]:
    """The exporter as the edge host (Prometheus) reaches it."""
    db = topology.the("db")
    return [
        {
            "name": db.name,
            "address": f"{topology.address_from(db)}:{host.data.postgres_exporter_port}",
        }
    ]


def _monitoring_role() -> None:
    """The role exists with pg_monitor, LOGIN, a connection limit and the secret's password."""
    data = host.data
    role = data.postgres_exporter_role
    verifier = host.get_fact(
        RolePasswordVerifier, container=data.db_container, user=data.db_user, role=role
    )
    if verifier and scram_matches(verifier, password()):
        return
    quoted = password().replace("'", "''")
    sql_file = f"{data.db_config_dir}/.monitoring-role.sql"
    files.put(
        name=f"Stage the monitoring role {role} (root, 0600; removed right after)",
        src=StringIO(
            f"SELECT 'CREATE ROLE {role}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{role}') \\gexec\n"
            f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"CONNECTION LIMIT {data.postgres_exporter_connection_limit} PASSWORD '{quoted}';\n"
            f"GRANT pg_monitor TO {role};\n"
        ),
        dest=sql_file,
        mode="0600",
    )
    server.shell(
        name=f"Monitoring role {role}: pg_monitor only, password POSTGRES_EXPORTER_PASSWORD",
        commands=[
            f"docker exec -i {data.db_container} psql -v ON_ERROR_STOP=1 -q "
            f"-U {data.db_user} -d postgres < {sql_file}; status=$?; rm -f {sql_file}; "
            "exit $status",
        ],
    )


@deploy("Postgres exporter on the db host, as a least-privilege monitoring role")
def postgres_exporter() -> None:
    if not topology.has("db"):
        return
    data = host.data
    _monitoring_role()
    edge_elsewhere = topology.the("edge").name != host.name
    listen = [
        f"{address}:{data.postgres_exporter_port}"
        for address in topology.listen_addresses(serves_other_hosts=edge_elsewhere)
    ]
    # Before the package, so its first start already connects as the monitoring role and
    # listens where it should (dpkg keeps an existing conffile: pyinfra passes --force-confold).
    # Mode 0640 and no owner: the package's postinst makes it prometheus:prometheus 0640, and
    # a deploy that asked for anything else would undo that on every run.
    changed = [
        files.template(
            name=f"Postgres exporter: role {data.postgres_exporter_role}, listens on "
            f"{', '.join(listen)} ({DEFAULTS_FILE})",
            src="templates/postgres-exporter.default.j2",
            dest=DEFAULTS_FILE,
            mode="0640",
            listen=listen,
            password_file=PASSWORD_FILE,
            queries_file=QUERIES_FILE,
        ),
        files.put(
            name=f"Postgres exporter's extra queries ({QUERIES_FILE})",
            src="files/postgres_exporter/queries.yaml",
            dest=QUERIES_FILE,
            mode="0644",
        ),
    ]
    apt.packages(
        name="Install the postgres exporter (Debian)",
        packages=["prometheus-postgres-exporter"],
        no_recommends=True,
    )
    # After the package: its group `prometheus` exists now.
    changed.append(
        files.put(
            name=f"Monitoring role's password {PASSWORD_FILE} (root:prometheus, 0640)",
            src=StringIO(password()),
            dest=PASSWORD_FILE,
            user="root",
            group="prometheus",
            mode="0640",
        )
    )
    systemd.service(
        name="Keep the postgres exporter enabled and running; restart on new settings",
        service="prometheus-postgres-exporter",
        running=True,
        enabled=True,
        restarted=any(op.will_change for op in changed),
    )

"""Offsite, encrypted, verified backups: pgBackRest 2.45 (Debian's) between the db host and the
backup host (docs/architecture.md, "Offsite backups").

db host: archive_command (in the techno-os/postgres container) pushes every WAL segment to the
backup host's archive endpoint; a sidecar container (`pgbackrest server`, the data volume
read-only) serves base backups to the backup host. Its config and TLS files live in
`pgbackrest_config_dir` (root 0700; `conf/` inside, owned by the image's postgres uid, mounted
read-only at /etc/pgbackrest). No passphrase is stored there.

backup host: the repository (encrypted with the secret PGBACKREST_CIPHER_PASS, stored only here)
and three users: `pgbackrest` owns it (backups, verify, expire, the nightly restore test);
`pgarchive` runs the archive endpoint, which can create WAL files but, once the sealer has
handed them to `pgbackrest` (every few seconds), can neither remove nor replace them, and cannot
read backup/; `pgrestore` runs the read-only restore endpoint. Retention is this host's own
config: the db host cannot shorten it.

Certificates: tasks/pgbackrest_pki.py, on the control machine. The stanza and the first backup
are made once the db host serves (`offsite_stanza`, after the database in deploy.py).
"""

from __future__ import annotations

import json
import re
import secrets as token
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from tasks import topology
from tasks.common import (
    DataRules,
    append_secrets,
    check_data,
    fail,
    host_group,
    is_path,
    is_port,
    secret,
    secrets_path,
)
from tasks.facts import NotOwnedBy, PgbackrestBackups
from tasks.pgbackrest_pki import Identity, Pki

CIPHER_SECRET = "PGBACKREST_CIPHER_PASS"
TOOL = "/usr/local/sbin/techno-os-pgbr"
TOOL_SOURCE = "files/pgbackrest/techno_os_pgbr.py"
SETTINGS = "/etc/techno-os/pgbr.json"
CONF_DIR = "/etc/pgbackrest"  # backup host
TLS_DIR = f"{CONF_DIR}/tls"
STATE_DIR = "/var/lib/techno-os-pgbr"
RESTORE_TEST_DIR = "/var/lib/pgbackrest-restore-test"
OWNER, ARCHIVER, RESTORER, WAL_GROUP = "pgbackrest", "pgarchive", "pgrestore", "pgwal"
# The techno-os/postgres image's postgres uid/gid (fixed in its Dockerfile).
CONTAINER_UID = 999
PG_BIN = "/usr/lib/postgresql/15/bin"
UNITS = "/etc/systemd/system"

# Config files on the backup host: live path -> (template, group that reads it).
BACKUP_CONFIGS = {
    # The archive endpoint AND every remote it forks read the default path (2.45 remotes never
    # use the server's --config), so this file holds only what the db host may know.
    f"{CONF_DIR}/pgbackrest.conf": ("templates/pgbackrest/archive-server.conf.j2", ARCHIVER),
    f"{CONF_DIR}/restore-server.conf": ("templates/pgbackrest/restore-server.conf.j2", RESTORER),
    f"{CONF_DIR}/repo.conf": ("templates/pgbackrest/repo.conf.j2", OWNER),
    f"{CONF_DIR}/restore-test.conf": ("templates/pgbackrest/restore-test.conf.j2", OWNER),
}
BACKUP_UNITS = {
    "pgbackrest-archive-server.service": "templates/pgbackrest/archive-server.service.j2",
    "pgbackrest-restore-server.service": "templates/pgbackrest/restore-server.service.j2",
    "techno-os-pgbr-seal.service": "templates/pgbackrest/seal.service.j2",
    "techno-os-pgbr-seal.timer": "templates/pgbackrest/seal.timer.j2",
    "techno-os-pgbr-nightly.service": "templates/pgbackrest/nightly.service.j2",
    "techno-os-pgbr-nightly.timer": "templates/pgbackrest/nightly.timer.j2",
    "techno-os-pgbr-metrics.service": "templates/pgbackrest/metrics.service.j2",
    "techno-os-pgbr-metrics.timer": "templates/pgbackrest/metrics.timer.j2",
}
DB_UNITS = {
    "techno-os-pgbr-db-metrics.service": "templates/pgbackrest/db-metrics.service.j2",
    "techno-os-pgbr-db-metrics.timer": "templates/pgbackrest/db-metrics.timer.j2",
}


def _is_calendar(value: str) -> bool:
    # systemd-analyze checks it on the host; here, the shape: no newline, no quote.
    return bool(value.strip()) and not re.search(r"[\n\"'\\]", value)


DATA: DataRules = {
    "pgbackrest_stanza": (
        str,
        lambda v: re.fullmatch(r"[a-z0-9][a-z0-9-]*", v) is not None,
        "lower-case letters, digits and '-'",
    ),
    "pgbackrest_repo_path": (str, is_path, "an absolute path"),
    "pgbackrest_archive_port": (int, is_port, "a TCP port"),
    "pgbackrest_restore_port": (int, is_port, "a TCP port"),
    "pgbackrest_db_port": (int, is_port, "a TCP port"),
    "pgbackrest_container": (str, bool, "a non-empty name"),
    "pgbackrest_config_dir": (str, is_path, "an absolute path"),
    "pg_archive_timeout_seconds": (int, lambda v: 10 <= v <= 600, "10 to 600 seconds"),
    "pgbackrest_push_timeout_seconds": (int, lambda v: 5 <= v <= 600, "5 to 600 seconds"),
    "backup_calendar": (str, _is_calendar, "a systemd OnCalendar expression"),
    "backup_full_every_days": (int, lambda v: 1 <= v <= 31, "1 to 31 days"),
    "backup_retention_full_days": (int, lambda v: v >= 7, "a whole number of days >= 7"),
    "pgbackrest_seal_interval_seconds": (int, lambda v: 1 <= v <= 300, "1 to 300 seconds"),
    "pgbackrest_metrics_interval_seconds": (int, lambda v: 5 <= v <= 300, "5 to 300 seconds"),
    "restore_test_tables": (
        dict,
        lambda v: all(
            isinstance(k, str) and k.isidentifier() and isinstance(n, int) and n >= 0
            for k, n in v.items()
        ),
        "table name -> minimum rows (a whole number >= 0)",
    ),
    "restore_test_min_rows_ratio": ((int, float), lambda v: 0 <= v <= 1, "a ratio from 0 to 1"),
}


# --- inputs (checked while the deploy is planned) -----------------------------------------------
def check() -> None:
    check_data(DATA)
    data = host.data
    if data.pgbackrest_archive_port == data.pgbackrest_restore_port:
        raise fail("`pgbackrest_archive_port` and `pgbackrest_restore_port` must differ")
    if data.backup_full_every_days > data.backup_retention_full_days:
        raise fail("`backup_full_every_days` must not exceed `backup_retention_full_days`")
    if topology.has("backup"):
        cipher_pass()
    if topology.has("backup") or topology.has("db"):
        for identity in identities().values():
            pki().ensure(identity)


def cipher_pass() -> str:
    """The repository's passphrase: the operator's secret (generated on a disposable host).
    Losing it loses every backup: keep a copy offline, away from both hosts."""
    value = secret(CIPHER_SECRET)
    if not value and host.data.disposable:
        value = token.token_urlsafe(48)
        append_secrets(
            {CIPHER_SECRET: value},
            "pgBackRest repository passphrase (backup host only), made by the deploy.",
        )
    if not value:
        raise fail(
            f"{CIPHER_SECRET} is missing: set it in the environment or in "
            f"{secrets_path().name} (untracked), e.g. `openssl rand -base64 48`, and keep a "
            "copy offline: without it the backups cannot be read"
        )
    if len(value) < 32 or not re.fullmatch(r"[A-Za-z0-9+/=_-]+", value):
        raise fail(f"{CIPHER_SECRET} must be at least 32 characters of [A-Za-z0-9+/=_-]")
    return value


def pki() -> Pki:
    return Pki(secrets_path().with_name(f"{host_group()}-pgbackrest"), host_group())


def identities() -> dict[str, Identity]:
    db, backup = topology.the("db"), topology.the("backup")
    db_address, backup_address = topology.private_address(db), topology.private_address(backup)
    return {
        # The db host's client: archive-push, and restores through the restore endpoint.
        "db-client": Identity(f"{db.name}.client", db.name),
        # The db host's sidecar, which the backup host takes base backups through.
        "db-server": Identity(f"{db.name}.server", db_address, db_address),
        # The backup host's client (user pgbackrest) of that sidecar.
        "backup-client": Identity(f"{backup.name}.client", backup.name),
        # One key per endpoint, each readable by its own user only.
        "backup-archive": Identity(f"{backup.name}.archive", backup_address, backup_address),
        "backup-restore": Identity(f"{backup.name}.restore", backup_address, backup_address),
    }


def settings(role: str) -> dict[str, object]:
    data = host.data
    common = {
        "role": role,
        "stanza": data.pgbackrest_stanza,
        "textfile_dir": data.textfile_collector_dir,
    }
    if role == "db":
        return {
            **common,
            "db_container": data.db_container,
            "db_user": data.db_user,
            "state_dir": STATE_DIR,
        }
    return {
        **common,
        "repo_path": data.pgbackrest_repo_path,
        "repo_config": f"{CONF_DIR}/repo.conf",
        "restore_test_config": f"{CONF_DIR}/restore-test.conf",
        "restore_test_dir": RESTORE_TEST_DIR,
        "restore_test_port": 54329,
        "restore_test_timeout": 3600,
        "restore_test_tables": data.restore_test_tables,
        "restore_test_min_rows_ratio": data.restore_test_min_rows_ratio,
        "state_dir": STATE_DIR,
        "owner": OWNER,
        "wal_group": WAL_GROUP,
        "full_every_days": data.backup_full_every_days,
        "pg_bin": PG_BIN,
        "db_user": data.db_user,
        "db_name": data.db_name,
    }


def template_data() -> dict[str, object]:
    db, backup = topology.the("db"), topology.the("backup")
    ids = identities()
    return {
        "stanza": host.data.pgbackrest_stanza,
        "db_address": topology.private_address(db),
        "backup_address": topology.private_address(backup),
        "db_client_cn": ids["db-client"].cn,
        "backup_client_cn": ids["backup-client"].cn,
        "conf_dir": CONF_DIR,
        "tls_dir": TLS_DIR,
        "state_dir": STATE_DIR,
        "restore_test_dir": RESTORE_TEST_DIR,
        "tool": TOOL,
        "owner": OWNER,
        "archiver": ARCHIVER,
        "restorer": RESTORER,
        "wal_group": WAL_GROUP,
    }


def _any_will_change(*operations: OperationMeta) -> bool:
    return any(operation.will_change for operation in operations)


def _put_tool(role: str) -> list[OperationMeta]:
    return [
        files.put(name=f"Install {TOOL}", src=TOOL_SOURCE, dest=TOOL, mode="0755"),
        files.put(
            name=f"Settings of techno-os-pgbr ({SETTINGS})",
            src=StringIO(json.dumps(settings(role), indent=2, sort_keys=True) + "\n"),
            dest=SETTINGS,
            mode="0644",
        ),
    ]


def _units(units: dict[str, str]) -> list[OperationMeta]:
    return [
        files.template(
            name=f"Unit {unit}",
            src=template,
            dest=f"{UNITS}/{unit}",
            mode="0644",
            **template_data(),
        )
        for unit, template in units.items()
    ]


# --- the db host ---------------------------------------------------------------------------------
def _db_host() -> None:
    data = host.data
    outer = data.pgbackrest_config_dir
    conf = f"{outer}/conf"
    # The outer directory is root-only: on the host, the image's uid 999 may be another user
    # (caddy, on Debian 12), who must not reach the client key through it.
    files.directory(name=f"Directory {outer} (root, 0700)", path=outer, mode="0700")
    # Modes here, ownership below by number: uid 999 has another name (or none) on the host,
    # and pyinfra compares owners by name.
    changed = [
        files.directory(
            name=f"Directory {conf} (0700): the containers' /etc/pgbackrest", path=conf,
            mode="0700",
        ),
        files.directory(name=f"Directory {conf}/tls (0700)", path=f"{conf}/tls", mode="0700"),
    ]  # fmt: skip
    ids = identities()
    for stem, identity in (("client", ids["db-client"]), ("server", ids["db-server"])):
        key, cert = pki().ensure(identity)
        changed += [
            files.put(
                name=f"TLS {stem} certificate of the db host ({identity.cn})",
                src=str(cert), dest=f"{conf}/tls/{stem}.crt", mode="0644",
            ),
            files.put(
                name=f"TLS {stem} key of the db host (0600)",
                src=str(key), dest=f"{conf}/tls/{stem}.key", mode="0600",
            ),
        ]  # fmt: skip
    changed.append(
        files.put(
            name="TLS CA of the pgBackRest endpoints (db host)",
            src=str(pki().ca_cert()),
            dest=f"{conf}/tls/ca.crt",
            mode="0644",
        )  # fmt: skip
    )
    for name, template in (
        ("pgbackrest.conf", "db.conf.j2"),
        ("restore.conf", "db-restore.conf.j2"),
    ):
        changed.append(
            files.template(
                name=f"pgBackRest config {conf}/{name} (0600)",
                src=f"templates/pgbackrest/{template}",
                dest=f"{conf}/{name}",
                mode="0600",
                **template_data(),
            )
        )
    misowned = host.get_fact(NotOwnedBy, path=conf, uid=CONTAINER_UID, gid=CONTAINER_UID)
    server.shell(
        name=f"{conf}: owned by the image's postgres ({CONTAINER_UID}:{CONTAINER_UID})",
        commands=[f"chown -R {CONTAINER_UID}:{CONTAINER_UID} {conf}"],
        _if=lambda: misowned or any(op.did_change() for op in changed),
    )
    container = data.pgbackrest_container
    server.shell(
        name=f"Restart {container} on a new config or certificate (when it runs)",
        commands=[
            f"if [ \"$(docker inspect --format '{{{{.State.Running}}}}' {container} 2>/dev/null)\" "
            f"= true ]; then docker restart {container} >/dev/null; fi"
        ],
        _if=any_changed(*changed),
    )
    tool = _put_tool("db")
    units = _units(DB_UNITS)
    systemd.daemon_reload(name="Reload systemd units (db host)", _if=any_changed(*units))
    systemd.service(
        name="Keep the archiver metrics and heartbeat timer running",
        service="techno-os-pgbr-db-metrics.timer",
        running=True,
        enabled=True,
        restarted=_any_will_change(*tool, *units),
    )


# --- the backup host -----------------------------------------------------------------------------
def _backup_host() -> None:
    data = host.data
    repo = data.pgbackrest_repo_path
    # Debian's postgresql-15 binaries for the restore test, without a cluster of their own.
    files.directory(
        name="Directory /etc/postgresql-common/createcluster.d",
        path="/etc/postgresql-common/createcluster.d",
        mode="0755",
    )
    files.put(
        name="No default cluster from postgresql-common (binaries only, for the restore test)",
        src=StringIO("# Managed by pyinfra (tasks/pgbackrest.py).\ncreate_main_cluster = false\n"),
        dest="/etc/postgresql-common/createcluster.d/techno-os.conf",
        mode="0644",
    )
    apt.packages(
        name="Install pgBackRest and the PostgreSQL 15 binaries (Debian)",
        packages=["pgbackrest", "postgresql-15"],
        no_recommends=True,
    )
    for group in (WAL_GROUP, OWNER, ARCHIVER, RESTORER):
        server.group(name=f"Group {group}", group=group, system=True)
    for user, groups, what in (
        (OWNER, [WAL_GROUP], "owns the repository"),
        (ARCHIVER, [WAL_GROUP], "the archive endpoint: creates WAL files"),
        (RESTORER, [OWNER, WAL_GROUP], "the restore endpoint: reads, writes nothing"),
    ):
        server.user(
            name=f"User {user} ({what})",
            user=user,
            group=user,
            groups=groups,
            system=True,
            home=STATE_DIR if user == OWNER else "/nonexistent",
            shell="/usr/sbin/nologin",
            ensure_home=False,
        )
    for path, user, group, mode in (
        (repo, OWNER, WAL_GROUP, "0750"),
        (STATE_DIR, OWNER, OWNER, "0750"),
        (f"{STATE_DIR}/metrics", OWNER, OWNER, "0755"),
        (f"{STATE_DIR}/lock", OWNER, OWNER, "0750"),
        (RESTORE_TEST_DIR, OWNER, OWNER, "0700"),
        ("/var/log/pgbackrest", OWNER, OWNER, "0750"),
        (CONF_DIR, "root", "root", "0755"),
        (TLS_DIR, "root", "root", "0755"),
    ):
        files.directory(
            name=f"Directory {path} ({user}:{group}, {mode})",
            path=path, user=user, group=group, mode=mode,
        )  # fmt: skip
    # archive/: traversable by the archive endpoint (group pgwal); `layout` keeps the same mode.
    archive_dir = files.directory(
        name=f"Directory {repo}/archive ({OWNER}:{WAL_GROUP}, 2750)",
        path=f"{repo}/archive", user=OWNER, group=WAL_GROUP, mode="2750",
    )  # fmt: skip
    ids = identities()
    ca = files.put(
        name="TLS CA of the pgBackRest endpoints (backup host)",
        src=str(pki().ca_cert()),
        dest=f"{TLS_DIR}/ca.crt",
        mode="0644",
    )
    # Each endpoint restarts on its own key or certificate, and on the CA it checks clients by.
    tls: dict[str, list[OperationMeta]] = {ARCHIVER: [ca], RESTORER: [ca], OWNER: [ca]}
    for user, identity, stem in (
        (ARCHIVER, ids["backup-archive"], "archive-server"),
        (RESTORER, ids["backup-restore"], "restore-server"),
        (OWNER, ids["backup-client"], "client"),
    ):
        key, cert = pki().ensure(identity)
        tls[user] += [
            files.put(
                name=f"TLS certificate {stem} ({identity.cn})", src=str(cert),
                dest=f"{TLS_DIR}/{stem}.crt", mode="0644",
            ),
            files.put(
                name=f"TLS key {stem} ({user}, 0600)", src=str(key),
                dest=f"{TLS_DIR}/{stem}.key", user=user, group=user, mode="0600",
            ),
        ]  # fmt: skip
    configs = {
        live: files.template(
            name=f"pgBackRest config {live} (root:{group}, 0640)",
            src=template,
            dest=live,
            user="root",
            group=group,
            mode="0640",
            cipher_pass=cipher_pass(),
            **template_data(),
        )
        for live, (template, group) in BACKUP_CONFIGS.items()
    }
    _put_tool("backup")
    units = _units(BACKUP_UNITS)
    systemd.daemon_reload(name="Reload systemd units (backup host)", _if=any_changed(*units))
    endpoints = (
        ("pgbackrest-archive-server", f"{CONF_DIR}/pgbackrest.conf", ARCHIVER, units[0]),
        ("pgbackrest-restore-server", f"{CONF_DIR}/restore-server.conf", RESTORER, units[1]),
    )
    for service, config, user, unit in endpoints:
        systemd.service(
            name=f"Keep {service} enabled and running; restart on a new config, key or unit",
            service=service,
            running=True,
            enabled=True,
            restarted=_any_will_change(configs[config], unit, *tls[user], archive_dir),
        )
    for timer in ("techno-os-pgbr-seal", "techno-os-pgbr-metrics", "techno-os-pgbr-nightly"):
        systemd.service(
            name=f"Keep {timer}.timer enabled and running",
            service=f"{timer}.timer",
            running=True,
            enabled=True,
            restarted=_any_will_change(*units),
        )


@deploy("Offsite backups: pgBackRest on the backup host (repository, endpoints) and the db host")
def offsite_backups() -> None:
    if topology.has("backup"):
        _backup_host()
    if topology.has("db"):
        _db_host()


@deploy("Offsite backups: the stanza, and a first verified backup and restore test")
def offsite_stanza() -> None:
    if not topology.has("backup"):
        return
    data = host.data
    repo_conf = f"{CONF_DIR}/repo.conf"
    state = host.get_fact(
        PgbackrestBackups,
        stanza=data.pgbackrest_stanza,
        repo=data.pgbackrest_repo_path,
        state=f"{STATE_DIR}/state.json",
    )
    as_owner = (
        f"runuser -u {OWNER} -- pgbackrest --config={repo_conf} --stanza={data.pgbackrest_stanza}"
    )
    if not state["stanza"]:
        server.shell(
            name=f"Create the stanza {data.pgbackrest_stanza}; open the archive; check WAL arrives",
            commands=[
                f"{as_owner} stanza-create",
                f"{TOOL} layout",
                "systemctl restart pgbackrest-archive-server",
                # A forced WAL switch archived end to end: db -> archive endpoint -> repository.
                f"{as_owner} check",
            ],
        )
    if not state["good"]:
        server.shell(
            name="First verified backup: full, verified, restored into a throwaway PostgreSQL",
            commands=[
                "systemctl start techno-os-pgbr-nightly.service",
                f"runuser -u {OWNER} -- {TOOL} metrics; {TOOL} publish",
            ],
        )

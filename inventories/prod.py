"""Production. By default one host holds every role of the stack (edge, db, api), as before, and
a second host holds the backups. Spread the roles over several hosts with the variables below;
connection details come from the operator's SSH config (~/.ssh/config: User, IdentityFile,
Port) or from TECHNO_OS_PROD_SSH_*; nothing personal or secret here.

    TECHNO_OS_PROD_EDGE     the edge host (Caddy, HAProxy, Prometheus, Alertmanager):
                            api.verittadigital.com
    TECHNO_OS_PROD_DB       the database host (exactly one): the edge host
    TECHNO_OS_PROD_API      the API hosts, comma-separated (one or more): the edge host
    TECHNO_OS_PROD_BACKUP   the backup host (pgBackRest repository): backup.verittadigital.com
    TECHNO_OS_PROD_ADDRESSES host=IP,... the private address each host is reached on by the others
                             (PostgreSQL, the API fronts, the exporters, pgBackRest listen there)
"""

import os

_env = os.environ.get
if "," in _env("TECHNO_OS_PROD_HOSTS", ""):
    raise ValueError(
        "TECHNO_OS_PROD_HOSTS names several hosts: each would get its own PostgreSQL. Give the "
        "roles instead: TECHNO_OS_PROD_EDGE, TECHNO_OS_PROD_DB, TECHNO_OS_PROD_API (see "
        "inventories/prod.py)"
    )
_edge_name = _env("TECHNO_OS_PROD_EDGE") or _env("TECHNO_OS_PROD_HOSTS") or "api.verittadigital.com"
_db_name = _env("TECHNO_OS_PROD_DB", _edge_name)
_api_names = [n.strip() for n in _env("TECHNO_OS_PROD_API", _edge_name).split(",") if n.strip()]
_backup_name = _env("TECHNO_OS_PROD_BACKUP", "backup.verittadigital.com")
_addresses = dict(
    pair.strip().split("=", 1)
    for pair in _env("TECHNO_OS_PROD_ADDRESSES", "").split(",")
    if "=" in pair
)

_ssh = {
    key: value
    for key, value in {
        "ssh_user": _env("TECHNO_OS_PROD_SSH_USER"),
        "ssh_key": _env("TECHNO_OS_PROD_SSH_KEY"),
        "ssh_port": int(_env("TECHNO_OS_PROD_SSH_PORT"))
        if _env("TECHNO_OS_PROD_SSH_PORT")
        else None,
        "ssh_strict_host_key_checking": "yes",
    }.items()
    if value is not None
}


def _host(name: str) -> tuple[str, dict]:
    data = dict(_ssh)
    if name in _addresses:
        data["private_address"] = _addresses[name]
    return (name, data)


_all = list(dict.fromkeys([_edge_name, _db_name, *_api_names, _backup_name]))

# The environment (group_data/prod.py), then the roles.
prod = [_host(name) for name in _all]
edge = [_host(_edge_name)]
db = [_host(_db_name)]
api = [_host(name) for name in _api_names]
backup = [_host(_backup_name)]

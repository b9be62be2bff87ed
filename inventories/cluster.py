"""The cluster sandbox: the stack spread over five VMs on one Docker network, as a production
site with separate hosts would be. `make up-cluster` creates them and deploys this inventory to
them in parallel; `make down-cluster` removes them. Every target takes INVENTORY=this file.

    techno-os-edge      edge    Caddy (TLS), HAProxy (the API hosts), Prometheus, Alertmanager
    techno-os-dbhost    db      PostgreSQL
    techno-os-api1      api     the API (blue/green), behind its own HAProxy front on :8000
    techno-os-api2      api
    techno-os-cbackup   backup  the pgBackRest repository
"""

from pathlib import Path

_state = Path(__file__).resolve().parent.parent / ".sandbox"


def _vm(name: str, port: int, address: str) -> tuple[str, dict]:
    return (
        name,
        {
            "ssh_hostname": "127.0.0.1",
            "ssh_port": port,
            "ssh_user": "root",
            "ssh_key": str(_state / "id_ed25519"),
            "ssh_known_hosts_file": str(_state / "known_hosts"),
            "ssh_strict_host_key_checking": "accept-new",
            "private_address": address,
            "sandbox_vm": True,
        },
    )


_edge = _vm("techno-os-edge", 2230, "10.213.0.20")
_db = _vm("techno-os-dbhost", 2231, "10.213.0.21")
_api1 = _vm("techno-os-api1", 2232, "10.213.0.22")
_api2 = _vm("techno-os-api2", 2233, "10.213.0.23")
_backup = _vm("techno-os-cbackup", 2234, "10.213.0.24")

# The environment (group_data/cluster.py), then the roles.
cluster = [_edge, _db, _api1, _api2, _backup]
edge = [_edge]
db = [_db]
api = [_api1, _api2]
backup = [_backup]

"""Production hosts. Connection details come from the operator's SSH config (~/.ssh/config:
User, IdentityFile, Port) or from TECHNO_OS_PROD_* variables; nothing personal or secret here."""

import os

_hosts = os.environ.get("TECHNO_OS_PROD_HOSTS", "api.verittadigital.com").split(",")

prod = [
    (
        name.strip(),
        {
            key: value
            for key, value in {
                "ssh_user": os.environ.get("TECHNO_OS_PROD_SSH_USER"),
                "ssh_key": os.environ.get("TECHNO_OS_PROD_SSH_KEY"),
                "ssh_port": int(os.environ["TECHNO_OS_PROD_SSH_PORT"])
                if "TECHNO_OS_PROD_SSH_PORT" in os.environ
                else None,
                "ssh_strict_host_key_checking": "yes",
            }.items()
            if value is not None
        },
    )
    for name in _hosts
    if name.strip()
]

"""Caddy on the edge host, the only public listener: TLS for api., prometheus., alertmanager.;
the API's load balancing behind it is HAProxy's (tasks/balancer.py).

Debian's caddy 2.6: automatic HTTPS through ACME in production, bcrypt basic auth, HTTP -> HTTPS,
security headers, bounded bodies and headers. The Caddyfile is staged and checked by
`caddy validate` (as the caddy user, which also proves it can read certificate files) before it
is installed and Caddy reloads (gracefully: requests in flight finish).
"""

from __future__ import annotations

import re
import secrets as token
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files

from tasks import topology
from tasks.common import (
    DataRules,
    append_secrets,
    check_data,
    fail,
    is_duration,
    secret,
    secrets_path,
)
from tasks.services import ConfigFile, checked_config, keep_service

CADDYFILE = "/etc/caddy/Caddyfile"
# Caddy's home: its certificates, ACME account and (tls_mode internal) local CA live below it.
CADDY_HOME = "/var/lib/caddy"
TLS_MODES = ("acme", "files", "internal")
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_SIZE = re.compile(r"\d+(B|KB|MB|GB|KiB|MiB|GiB)")

# The package starts Caddy at once with its own Caddyfile, a file server on port 80. Written
# before the package on a fresh host, this one serves nothing until the validated config lands.
PLACEHOLDER = """\
# Placeholder written by pyinfra (tasks/proxy.py) before the caddy package: no site, no public
# port, until the deploy installs the validated Caddyfile.
{
\tadmin localhost:2019
}
"""


def _is_domain(value: str) -> bool:
    label = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    return len(value) <= 200 and re.fullmatch(rf"({label}\.)+{label}", value) is not None


DATA: DataRules = {
    "public_domain": (str, _is_domain, "a DNS name such as example.com"),
    "tls_mode": (str, lambda v: v in TLS_MODES, f"one of {TLS_MODES}"),
    "acme_email": (str, lambda v: not v or "@" in v, "empty or an e-mail address"),
    "tls_cert_file": (str, lambda v: not v or v.startswith("/"), "empty or an absolute path"),
    "tls_key_file": (str, lambda v: not v or v.startswith("/"), "empty or an absolute path"),
    "proxy_basic_auth_user": (
        str,
        lambda v: re.fullmatch(r"[A-Za-z0-9._-]+", v) is not None,
        "a user name of letters, digits, '.', '_' and '-'",
    ),
    "hsts_max_age_seconds": (int, lambda v: v >= 0, "a whole number of seconds"),
    "public_ports": (list, lambda v: all(isinstance(p, int) for p in v), "a list of TCP ports"),
    "proxy_max_body_size": (str, lambda v: _SIZE.fullmatch(v) is not None, "a size like 8MB"),
    "proxy_max_header_size": (str, lambda v: _SIZE.fullmatch(v) is not None, "a size like 64KB"),
    "proxy_read_header_timeout": (str, is_duration, "a duration such as 10s"),
    "proxy_read_body_timeout": (str, is_duration, "a duration such as 60s"),
    "proxy_idle_timeout": (str, is_duration, "a duration such as 2m"),
}


def check() -> None:
    check_data(DATA)
    if host.data.tls_mode == "files" and not (host.data.tls_cert_file and host.data.tls_key_file):
        raise fail("group data `tls_mode` = 'files' needs `tls_cert_file` and `tls_key_file`")
    if host.data.tls_mode == "internal" and not host.data.disposable:
        raise fail(
            "group data `tls_mode` = 'internal' (a local CA no browser trusts) is only allowed "
            "on a disposable host: use 'acme' or 'files'"
        )
    bad = sorted(set(host.data.public_ports) - {22, 80, 443})
    if bad:
        raise fail(f"group data `public_ports` names {bad}: only SSH and the proxy (80, 443)")
    if topology.has("edge"):
        basic_auth_hash()


def basic_auth_hash() -> str:
    """PROXY_BASIC_AUTH_HASH (bcrypt); generated with its password on a disposable host."""
    hashed = secret("PROXY_BASIC_AUTH_HASH")
    if not hashed and host.data.disposable:
        import bcrypt

        password = token.token_urlsafe(18)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
        append_secrets(
            {"PROXY_BASIC_AUTH_PASSWORD": password, "PROXY_BASIC_AUTH_HASH": hashed},
            "Reverse proxy basic auth (Prometheus, Alertmanager), made by the deploy.",
        )
    if not hashed:
        raise fail(
            f"PROXY_BASIC_AUTH_HASH is missing: set a bcrypt hash in the environment or in "
            f"{secrets_path().name} (untracked), e.g. `caddy hash-password` or `python3 -c "
            "'import bcrypt,getpass; print(bcrypt.hashpw(getpass.getpass().encode(), "
            "bcrypt.gensalt()).decode())'`"
        )
    if not _BCRYPT.fullmatch(hashed):
        raise fail("PROXY_BASIC_AUTH_HASH is not a bcrypt hash ($2a$/$2b$/$2y$, 60 characters)")
    return hashed


@deploy("Reverse proxy (Caddy): TLS on the edge")
def reverse_proxy() -> None:
    if not topology.has("edge"):
        # Hosts that held the API's front in Caddy before HAProxy took it (api_port): the port
        # must be free before the balancer starts.
        apt.packages(name="No Caddy off the edge", packages=["caddy"], present=False)
        return
    if host.get_fact(File, path=CADDYFILE) is None:
        files.put(
            name=f"Placeholder {CADDYFILE} before the first install (serves nothing)",
            src=StringIO(PLACEHOLDER),
            dest=CADDYFILE,
            mode="0644",
        )
    apt.packages(name="Install Caddy (Debian)", packages=["caddy"], no_recommends=True)
    installed = checked_config(
        "caddy",
        [
            ConfigFile(
                CADDYFILE,
                template="templates/Caddyfile.j2",
                group="caddy",
                mode="0640",
                data={"basic_auth_hash": basic_auth_hash()},
            )
        ],
        check=(
            f"runuser -u caddy -- env HOME={CADDY_HOME} caddy validate "
            f"--config {{staged:{CADDYFILE}}} --adapter caddyfile"
        ),
        what="the Caddyfile (caddy validate)",
    )
    keep_service("caddy", config_installed=installed)

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from tasks import inputs
from tasks.facts import PathsDiffer
from tasks.services import keep_service

CADDYFILE = "/etc/caddy/Caddyfile"
STAGED = "/etc/caddy/staged"
# Caddy's home: its certificates, ACME account and (tls_mode internal) local CA live below it.
CADDY_HOME = "/var/lib/caddy"

# The package starts Caddy at once with its own Caddyfile, a file server on port 80. Written
# before the package on a fresh host, this one serves nothing until the validated config lands.
PLACEHOLDER = """\
# Placeholder written by pyinfra (tasks/proxy.py) before the caddy package: no site, no public
# port, until the deploy installs the validated Caddyfile.
{
\tadmin localhost:2019
}
"""


@deploy("Reverse proxy (Caddy): TLS on the public interfaces, auth for Prometheus/Alertmanager")
def reverse_proxy() -> None:
    if host.get_fact(File, path=CADDYFILE) is None:
        files.put(
            name=f"Placeholder {CADDYFILE} before the first install (serves nothing)",
            src=StringIO(PLACEHOLDER),
            dest=CADDYFILE,
            mode="0644",
        )
    apt.packages(name="Install Caddy (Debian)", packages=["caddy"], no_recommends=True)

    # Staged, validated by Caddy itself as the caddy user (which also proves it can read the
    # certificate files of tls_mode "files"), then installed: a bad Caddyfile never reaches the
    # running proxy.
    files.directory(
        name=f"Staging directory {STAGED} (root:caddy, 0750)",
        path=STAGED,
        user="root",
        group="caddy",
        mode="0750",
    )
    staged = files.template(
        name="Stage the Caddyfile (root:caddy, 0640: it holds the basic auth hash)",
        src="templates/Caddyfile.j2",
        dest=f"{STAGED}/Caddyfile",
        user="root",
        group="caddy",
        mode="0640",
        basic_auth_hash=inputs.proxy_basic_auth_hash(),
    )
    drifted = host.get_fact(PathsDiffer, first=f"{STAGED}/Caddyfile", second=CADDYFILE)
    installed = server.shell(
        name="Validate the staged Caddyfile (caddy validate) and install it",
        commands=[
            f"runuser -u caddy -- env HOME={CADDY_HOME} caddy validate "
            f"--config {STAGED}/Caddyfile --adapter caddyfile",
            f"install -m 0640 -o root -g caddy {STAGED}/Caddyfile {CADDYFILE}",
        ],
        # Also when the live Caddyfile drifted from the staged one (edited by hand).
        _if=staged.did_change if not drifted else (lambda: True),
    )
    keep_service("caddy", config_installed=installed)

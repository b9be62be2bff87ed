"""The edge host: the operators' dashboards, Prometheus console templates (an overview and one
page per host), served by Prometheus at /consoles/ and so by the proxy at
https://prometheus.<domain>/consoles/techno-os-overview.html, behind the same basic auth.

They draw with Prometheus' console JavaScript and the libraries Debian's prometheus package
depends on (d3, rickshaw, jQuery, Bootstrap), which Prometheus serves under /classic/static/:
nothing outside Debian's packages. Prometheus reads the templates on each request: installing
them needs no reload. Debian's README.consoles stays where the package put it.
"""

from pyinfra.api import deploy
from pyinfra.operations import files

from tasks import topology

SOURCE = "files/consoles"
TARGETS = {
    "consoles": "/etc/prometheus/consoles",
    "console_libraries": "/etc/prometheus/console_libraries",
}


@deploy("Dashboards: Prometheus console templates on the edge")
def dashboards() -> None:
    if not topology.has("edge"):
        return
    for directory, dest in TARGETS.items():
        files.sync(
            name=f"Dashboards: {SOURCE}/{directory}/ -> {dest}/",
            src=f"{SOURCE}/{directory}/",
            dest=dest,
            user="root",
            group="root",
            mode="0644",
            dir_mode="0755",
            delete=True,
            exclude="README.consoles",
        )

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

BASE_PACKAGES = [
    "ca-certificates",
    "cron",
    "curl",
    "jq",
    "gzip",
    "tar",
    "util-linux",
    "debootstrap",
]


@deploy("Base packages and directories")
def base_system() -> None:
    apt.packages(
        name="Install base packages (cron, curl, jq, debootstrap)",
        packages=BASE_PACKAGES,
        no_recommends=True,
        update=True,
        cache_time=24 * 3600,
    )
    systemd.service(
        name="Keep cron enabled and running", service="cron", running=True, enabled=True
    )
    for path, mode in [
        ("/opt/techno-os", "0755"),
        ("/opt/techno-os/app", "0755"),
        # Holds .env: nobody but root traverses it, so the secrets are never readable in passing.
        (host.data.backend_dir, "0750"),
        (host.data.scripts_dir, "0755"),
        (host.data.build_dir, "0750"),
        (host.data.backup_dir, "0700"),
    ]:
        files.directory(
            name=f"Directory {path} (root, {mode})", path=path, user="root", group="root", mode=mode
        )

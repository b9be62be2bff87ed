"""Every host: base packages and the stack's directories (the ones of its roles)."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from tasks import topology
from tasks.common import DataRules, check_data, is_path

BASE_PACKAGES = [
    "ca-certificates",
    "cron",
    "curl",
    "jq",
    "gzip",
    "tar",
    "util-linux",
    "python3",  # techno-os-release, the sandbox's sink and stand-in
    "zstd",  # images travel between hosts as docker save | zstd
]

DATA: DataRules = {
    "backend_dir": (str, is_path, "an absolute path"),
    "scripts_dir": (str, is_path, "an absolute path"),
    "backup_dir": (str, is_path, "an absolute path"),
    "build_dir": (str, is_path, "an absolute path"),
    "backup_log": (str, is_path, "an absolute path"),
    "textfile_collector_dir": (str, is_path, "an absolute path"),
    "disposable": (bool, lambda v: True, "True or False"),
}


def check() -> None:
    check_data(DATA)


@deploy("Base packages and directories")
def base_system() -> None:
    apt.packages(
        name="Install base packages (cron, curl, jq, python3, zstd)",
        packages=BASE_PACKAGES,
        no_recommends=True,
        update=True,
        cache_time=24 * 3600,
    )
    systemd.service(
        name="Keep cron enabled and running", service="cron", running=True, enabled=True
    )
    directories = [("/opt/techno-os", "0755"), (host.data.scripts_dir, "0755")]
    if topology.has("db") or topology.has("api"):
        directories += [
            ("/opt/techno-os/app", "0755"),
            # Holds .env: nobody but root traverses it, so secrets are never readable in passing.
            (host.data.backend_dir, "0750"),
            (host.data.build_dir, "0750"),
        ]
    if topology.has("db"):
        directories.append((host.data.backup_dir, "0700"))
    for path, mode in directories:
        files.directory(
            name=f"Directory {path} (root, {mode})", path=path, user="root", group="root", mode=mode
        )

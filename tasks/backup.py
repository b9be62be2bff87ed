"""The database host: the runbook's backup and restore scripts, their settings and the nightly
cron line."""

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import crontab, files

from tasks import topology
from tasks.common import DataRules, check_data
from tasks.database import CONF_IN_CONTAINER
from tasks.images import db_image
from tasks.release import STATE as RELEASE_STATE

SCRIPTS = ["backup_observability.sh", "restore_observability.sh"]

DATA: DataRules = {
    "backup_cron_schedule": (str, lambda v: len(v.split()) == 5, "five cron fields"),
    "retention_days": (int, lambda v: v >= 1, "a whole number of days >= 1"),
}


def check() -> None:
    check_data(DATA)


@deploy("Backup script, restore script and the daily cron line")
def backup_and_cron() -> None:
    if not topology.has("db"):
        return
    files.template(
        name="Settings of the backup and restore scripts (/etc/default/techno-os)",
        src="templates/techno-os.default.j2",
        dest="/etc/default/techno-os",
        user="root",
        group="root",
        mode="0644",
        restore_image=db_image().tag,
        api_here=topology.has("api"),
        release_lock=str(PurePosixPath(RELEASE_STATE).with_suffix(".lock")),
        conf_in_container=CONF_IN_CONTAINER,
    )
    for script in SCRIPTS:
        files.put(
            name=f"Install {host.data.scripts_dir}/{script} (root, 0750)",
            src=f"files/scripts/{script}",
            dest=f"{host.data.scripts_dir}/{script}",
            user="root",
            group="root",
            mode="0750",
        )
    files.file(
        name=f"Backup log {host.data.backup_log} (root, 0640)",
        path=host.data.backup_log,
        user="root",
        group="root",
        mode="0640",
    )
    minute, hour, day_of_month, month, day_of_week = host.data.backup_cron_schedule.split()
    crontab.crontab(
        name=f"Cron: {host.data.backup_cron_schedule} backup_observability.sh",
        command=f"{host.data.scripts_dir}/backup_observability.sh >> {host.data.backup_log} 2>&1",
        user="root",
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month=month,
        day_of_week=day_of_week,
    )

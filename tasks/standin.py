"""Disposable API hosts: the drills' LLM provider stand-in (files/standin/, standard library
only) as a systemd service on 127.0.0.1:8080, the `openai` base URL of the sandbox. Never on a
production host (checked by tasks/environment.py)."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from tasks import topology

DIRECTORY = "/opt/techno-os/standin"
UNIT = "/etc/systemd/system/techno-os-llm-standin.service"
LISTEN = ("127.0.0.1", 8080)


@deploy("LLM provider stand-in for the drills (sandbox only)")
def llm_standin() -> None:
    if not (topology.has("api") and host.data.llm_standin):
        return
    changed = [
        files.sync(
            name=f"Install the stand-in in {DIRECTORY}",
            src="files/standin/",
            dest=DIRECTORY,
            mode="0644",
            dir_mode="0755",
            delete=True,
            exclude=["__pycache__", "*.pyc"],
        ),
        files.template(
            name="Unit techno-os-llm-standin.service",
            src="templates/techno-os-llm-standin.service.j2",
            dest=UNIT,
            mode="0644",
            script=f"{DIRECTORY}/llm_standin.py",
            host_address=LISTEN[0],
            port=LISTEN[1],
        ),
    ]
    systemd.service(
        name="Keep the stand-in enabled and running; restart on new code",
        service="techno-os-llm-standin",
        running=True,
        enabled=True,
        daemon_reload=changed[1].will_change,
        restarted=any(op.will_change for op in changed),
    )

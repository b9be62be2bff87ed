from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from tasks.facts import ComposeServicesRunning
from tasks.images import api_image_tag, db_image_tag

WAIT_HEALTHY = """deadline=$(( $(date +%s) + {timeout} ))
for c in {containers}; do
  until [ "$(docker inspect --format '{{{{.State.Health.Status}}}}' "$c" 2>/dev/null)" \
          = healthy ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$c is not healthy after {timeout} s:" >&2; docker logs --tail 50 "$c" >&2; exit 1
    fi
    sleep 2
  done
done"""


@deploy("Compose stack (techno-os-db, techno-os-api) in the backend directory")
def compose_stack(inputs_changed: list[OperationMeta]) -> None:
    backend = host.data.backend_dir
    stack_inputs = [
        files.template(
            name=f"Render {backend}/docker-compose.yml",
            src="templates/docker-compose.yml.j2",
            dest=f"{backend}/docker-compose.yml",
            user="root",
            group="root",
            mode="0640",
            api_image=api_image_tag(),
            db_image=db_image_tag(),
        ),
        *inputs_changed,
    ]
    if host.data.llm_standin:
        stack_inputs.append(
            files.put(
                name="Upload the LLM provider stand-in (sandbox only)",
                src="files/standin/llm_standin.py",
                dest=f"{backend}/standin/llm_standin.py",
                mode="0644",
            )
        )
    containers = [host.data.db_container, host.data.api_container]
    running = host.get_fact(ComposeServicesRunning, containers=containers)
    server.shell(
        name="Bring the stack up (docker-compose up -d) and wait until it is healthy",
        commands=[
            f"cd {backend} && docker-compose up -d --remove-orphans",
            WAIT_HEALTHY.format(
                timeout=host.data.stack_health_timeout_seconds, containers=" ".join(containers)
            ),
        ],
        # docker-compose reports no changes itself: it runs when an input changed or when a
        # container is not running (someone ran `docker-compose down`).
        _if=any_changed(*stack_inputs) if running else (lambda: True),
    )

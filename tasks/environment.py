from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from tasks import inputs


@deploy("Environment of the stack (.env: LLM hardening, keys, database)")
def environment_file() -> OperationMeta:
    secrets = inputs.secrets()
    return files.template(
        name=f"Render {host.data.backend_dir}/.env (root, 0600)",
        src="templates/env.j2",
        dest=f"{host.data.backend_dir}/.env",
        user="root",
        group="root",
        mode="0600",
        secrets=secrets,
        real_providers=inputs.REAL_PROVIDERS,
    )

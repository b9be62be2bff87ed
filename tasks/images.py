from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FindFiles
from pyinfra.facts.server import Arch
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from tasks import inputs
from tasks.facts import DockerImageId


def api_image_tag() -> str:
    return f"{host.data.api_image_repository}:{inputs.artifact().version}"


def db_image_tag() -> str:
    return f"{host.data.db_image_repository}:15-{inputs.artifact().version}"


def _build_image(tag: str, context: str, context_ops: list[OperationMeta]) -> OperationMeta:
    """Build when the tag is absent or its context changed: an unchanged artifact is no rebuild."""
    missing = not host.get_fact(DockerImageId, tag=tag)
    return server.shell(
        name=f"Build image {tag}",
        commands=[
            f"docker build --quiet --build-arg BASE_IMAGE={host.data.base_image} "
            f"--build-arg APP_VERSION={inputs.artifact().version} "
            f"--tag {tag} {context}"
        ],
        _if=(lambda: True) if missing else any_changed(*context_ops),
    )


@deploy("Images: Debian base, API and PostgreSQL, tagged with the artifact version")
def build_images() -> list[OperationMeta]:
    artifact = inputs.artifact()
    build = host.data.build_dir
    arch = host.get_fact(Arch)
    if arch not in artifact.wheelhouses:
        raise inputs.fail(
            f"the artifact has no wheelhouse for this host's CPU ({arch}); "
            f"it has {sorted(artifact.wheelhouses)}: make artifact ARCHS={arch}"
        )

    files.put(
        name="Upload the base image builder",
        src="files/images/base/build_base_image.sh",
        dest=f"{build}/build_base_image.sh",
        mode="0755",
    )
    if not host.get_fact(DockerImageId, tag=host.data.base_image):
        server.shell(
            name=f"Build the Debian base image {host.data.base_image} "
            "(pulled when a registry answers, else debootstrap + docker import)",
            commands=[
                f"DEBIAN_MIRROR={host.data.debian_mirror} "
                f"{build}/build_base_image.sh "
                f"{host.data.base_image}"
            ],
        )

    api_context = f"{build}/api"
    # The Dockerfile installs techno_os_api-*.whl: only the current version may be there.
    for stale in host.get_fact(FindFiles, path=api_context, fname="techno_os_api-*.whl") or []:
        if not stale.endswith(f"/{artifact.wheel}"):
            files.file(name=f"Remove the previous wheel {stale}", path=stale, present=False)
    api_inputs = [
        files.put(
            name="Upload the API Dockerfile", src="app/Dockerfile", dest=f"{api_context}/Dockerfile"
        ),
        files.put(
            name="Upload the locked requirements",
            src=str(artifact.directory / "requirements.lock"),
            dest=f"{api_context}/requirements.lock",
        ),
        files.put(
            name=f"Upload the app wheel {artifact.wheel}",
            src=str(artifact.directory / artifact.wheel),
            dest=f"{api_context}/{artifact.wheel}",
        ),
        files.sync(
            name=f"Upload the wheelhouse for {arch}",
            src=str(artifact.directory / artifact.wheelhouses[arch]),
            dest=f"{api_context}/wheelhouse",
            delete=True,
        ),
    ]
    db_context = f"{build}/postgres"
    db_inputs = [
        files.sync(
            name="Upload the PostgreSQL image context",
            src="files/images/postgres",
            dest=db_context,
            delete=True,
        ),
    ]
    return [
        _build_image(api_image_tag(), api_context, api_inputs),
        _build_image(db_image_tag(), db_context, db_inputs),
    ]

"""The release's images where they run: the API image on every API host, the PostgreSQL image on
the database host. They are built once per release by `make artifact` (tools/build_artifact.py)
and travel as `docker save | zstd` tarballs: uploaded over SSH and `docker load`ed, then checked
to be exactly the manifest's image id. No registry, no build on any host."""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Arch
from pyinfra.operations import files, server

from tasks import topology
from tasks.common import artifact, fail
from tasks.facts import DockerImageId

IMAGES_BY_ROLE = {"api": "api", "db": "postgres"}


@dataclass(frozen=True)
class Image:
    tag: str
    id: str
    file: str
    arch: str


def image(kind: str) -> Image:
    found = artifact().images.get(kind)
    if found is None:
        raise fail(f"the artifact has no {kind} image: make artifact (needs Docker here)")
    return Image(found["tag"], found["id"], found["file"], found["arch"])


def check() -> None:
    for kind in IMAGES_BY_ROLE.values():
        path = artifact().directory / image(kind).file
        if not path.is_file():
            raise fail(f"{path} is missing: make artifact")


def api_image() -> Image:
    return image("api")


def db_image() -> Image:
    return image("postgres")


@deploy("Images: the release's API and PostgreSQL images, loaded where they run")
def load_images() -> dict[str, list[OperationMeta]]:
    """The load operations by role (what changed there triggers a restart or a release)."""
    loaded: dict[str, list[OperationMeta]] = {"api": [], "db": []}
    remote_dir = f"{host.data.build_dir}/images"
    for role, kind in IMAGES_BY_ROLE.items():
        if not topology.has(role):
            continue
        wanted = image(kind)
        arch = host.get_fact(Arch)
        if arch != wanted.arch:
            raise fail(
                f"the artifact's {kind} image is for {wanted.arch}, this host is {arch}: build "
                "the artifact on a machine of the hosts' architecture"
            )
        if host.get_fact(DockerImageId, tag=wanted.tag) == wanted.id:
            continue
        tarball = f"{remote_dir}/{wanted.file.rsplit('/', 1)[-1]}"
        files.directory(name=f"Directory {remote_dir}", path=remote_dir, mode="0750")
        files.put(
            name=f"Upload the {kind} image {wanted.tag}",
            src=str(artifact().directory / wanted.file),
            dest=tarball,
            mode="0640",
        )
        loaded[role].append(
            server.shell(
                name=f"Load {wanted.tag} and check it is image {wanted.id[:19]}",
                commands=[
                    f"zstd -dc {tarball} | docker load --quiet",
                    f'test "$(docker image inspect --format {{{{.Id}}}} {wanted.tag})" '
                    f"= {wanted.id}",
                    f"rm -f {tarball}",
                ],
            )
        )
    return loaded

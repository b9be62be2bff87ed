#!/usr/bin/env python3
"""Build the app artifact in build/artifact/: the wheel, a wheelhouse per architecture, the lock,
the release's container images and manifest.json (layout in docs/architecture.md).

    python tools/build_artifact.py                      # x86_64 and aarch64 wheelhouses
    python tools/build_artifact.py --arch x86_64        # one architecture
    python tools/build_artifact.py --no-images          # wheel and wheelhouses only
    python tools/build_artifact.py --out /tmp/artifact

The images (techno-os/api:<v>, techno-os/postgres:15-<v>) are built here, once per release,
with this machine's Docker engine and for its architecture, then saved as zstd-compressed
`docker save` tarballs in images/: the deploy uploads them to the hosts that run them and loads
them there (no registry), and checks on every host that it runs exactly the manifest's image id.

Every locked dependency is fetched as a wheel for CPython 3.11 on manylinux <arch> (glibc up to
Debian 12's 2.36) and checked against the hashes in app/requirements.lock, so the image can be
built with `pip install --no-index --require-hashes` and no network. A wheelhouse that already
holds every locked wheel with a matching hash is not downloaded again; the app wheel is always
rebuilt (it is small and reflects the working tree). Needs only Python 3.11+ with pip.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app"
LOCK = APP / "requirements.lock"
VERSION_FILE = APP / "src" / "techno_os_api" / "__init__.py"
BASE_IMAGE_SCRIPT = REPO / "files" / "images" / "base" / "build_base_image.sh"
DIST = "techno_os_api"  # the wheel's file-name prefix
ARCHES = ("x86_64", "aarch64")
PYTHON_VERSION = "3.11"
MAX_GLIBC_MINOR = 36  # Debian 12 (bookworm) ships glibc 2.36


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    hashes: frozenset[str]
    marker: str | None


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_version() -> str:
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', VERSION_FILE.read_text(), re.MULTILINE)
    if not match:
        raise BuildError(f'no __version__ = "..." in {VERSION_FILE}')
    return match.group(1)


def read_lock(path: Path) -> list[Pin]:
    """The pins of a pip-compile --generate-hashes file."""
    text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    pins = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement = line.partition("--hash")[0]
        spec, _, marker = requirement.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==(\S+)", spec.strip())
        if not match:
            raise BuildError(f"{path}: not an exact pin: {requirement.strip()!r}")
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        if not hashes:
            raise BuildError(f"{path}: {match.group(1)} has no --hash (use --generate-hashes)")
        pins.append(Pin(normalize(match.group(1)), match.group(3), hashes, marker.strip() or None))
    if not pins:
        raise BuildError(f"{path} pins nothing")
    return pins


def marker_applies(marker: str | None, arch: str) -> bool:
    if marker is None:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # pip always vendors it
        from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    env = {
        "python_version": PYTHON_VERSION,
        "python_full_version": f"{PYTHON_VERSION}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": arch,
    }
    return bool(Marker(marker).evaluate(env))


def platforms(arch: str) -> list[str]:
    tags = [f"manylinux2014_{arch}"]
    tags += [f"manylinux_2_{minor}_{arch}" for minor in range(17, MAX_GLIBC_MINOR + 1)]
    return tags


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_fits(filename: str, arch: str) -> tuple[str, str] | None:
    """(normalized name, version) when the wheel is for CPython 3.11 on this arch, else None."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    name, version, python_tag, abi_tag, platform_tag = parts[0], parts[1], *parts[-3:]
    pythons = python_tag.split(".")
    python_ok = any(p == "cp311" or p.startswith("py3") for p in pythons)
    abi3_ok = abi_tag == "abi3" and any(
        re.fullmatch(r"cp3\d+", p) and int(p[3:]) <= 11 for p in pythons
    )
    if not (python_ok or abi3_ok):
        return None
    plats = platform_tag.split(".")
    if not any(p == "any" or (p.startswith("manylinux") and p.endswith(arch)) for p in plats):
        return None
    return normalize(name), version


def missing_wheels(pins: list[Pin], wheelhouse: Path, arch: str) -> list[str]:
    """Pins with no wheel for `arch` in `wheelhouse` whose sha256 is in the lock."""
    found: dict[str, Path] = {}
    if wheelhouse.is_dir():
        for path in wheelhouse.glob("*.whl"):
            fits = wheel_fits(path.name, arch)
            if fits:
                found[f"{fits[0]}=={fits[1]}"] = path
    missing = []
    for pin in pins:
        if not marker_applies(pin.marker, arch):
            continue
        path = found.get(f"{pin.name}=={pin.version}")
        if path is None:
            missing.append(f"{pin.name}=={pin.version} (no wheel)")
        elif sha256(path) not in pin.hashes:
            missing.append(f"{pin.name}=={pin.version} ({path.name}: hash not in the lock)")
    return missing


def run(command: list[str], what: str) -> None:
    print(f"+ {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=REPO, check=False)
    if result.returncode != 0:
        raise BuildError(f"{what} failed (exit {result.returncode}); see pip's output above")


def build_wheel(out: Path, version: str) -> Path:
    for old in out.glob(f"{DIST}-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", tmp, str(APP)],
            "building the app wheel",
        )
        built = list(Path(tmp).glob(f"{DIST}-{version}-*.whl"))
        if len(built) != 1:
            raise BuildError(f"expected one {DIST}-{version}-*.whl, pip built {built}")
        target = out / built[0].name
        shutil.move(str(built[0]), target)
    print(f"wheel: {target}")
    return target


def fill_wheelhouse(pins: list[Pin], wheelhouse: Path, arch: str) -> None:
    if not missing_wheels(pins, wheelhouse, arch):
        print(f"{wheelhouse.name}: complete, nothing to download")
        return
    wheelhouse.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:"]
    for tag in platforms(arch):
        command += ["--platform", tag]
    command += [
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        "cp" + PYTHON_VERSION.replace(".", ""),
        "--require-hashes",
        "--requirement",
        str(LOCK),
        "--dest",
        str(wheelhouse),
    ]
    run(command, f"downloading the {arch} wheelhouse")
    still_missing = missing_wheels(pins, wheelhouse, arch)
    if still_missing:
        raise BuildError(
            f"{wheelhouse.name} is incomplete after download: " + ", ".join(still_missing)
        )
    print(f"{wheelhouse.name}: complete")


def known_providers(wheel: Path) -> list[str]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from techno_os_api.core.config import KNOWN_PROVIDERS; print(json.dumps(KNOWN_PROVIDERS))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(wheel)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"cannot read KNOWN_PROVIDERS from {wheel.name}: {result.stderr}")
    providers: list[str] = json.loads(result.stdout)
    return providers


def migration_head(wheel: Path) -> str:
    """The Alembic revision no other revision of the wheel revises."""
    revisions: dict[str, str | None] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if "/migrations/versions/" in name and name.endswith(".py"):
                text = archive.read(name).decode()
                revision = re.search(r'^revision = "([^"]+)"', text, re.MULTILINE)
                down = re.search(r'^down_revision = (?:"([^"]+)"|None)', text, re.MULTILINE)
                if revision and down:
                    revisions[revision.group(1)] = down.group(1)
    heads = set(revisions) - {d for d in revisions.values() if d}
    if len(heads) != 1:
        raise BuildError(f"{wheel.name}: expected one migration head, found {sorted(heads)}")
    return heads.pop()


def docker(*argv: str, capture: bool = True) -> str:
    result = subprocess.run(
        ["docker", *argv], cwd=REPO, capture_output=capture, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip()[-2000:] if capture else ""
        raise BuildError(f"docker {' '.join(argv[:2])} failed: {detail}")
    return result.stdout.strip() if capture else ""


def image_context(kind: str, out: Path, wheel: Path, arch: str) -> Path:
    """The build context of an image: the API's is assembled from the artifact."""
    if kind == "postgres":
        return REPO / "files" / "images" / "postgres"
    context = out / "context-api"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir()
    shutil.copy(APP / "Dockerfile", context / "Dockerfile")
    shutil.copy(out / "requirements.lock", context / "requirements.lock")
    shutil.copy(wheel, context / wheel.name)
    shutil.copytree(out / f"wheelhouse-{arch}", context / "wheelhouse")
    return context


@contextlib.contextmanager
def tag_lock() -> Iterator[None]:
    """Hold the image tags of this machine's Docker engine from build to save: checkouts built
    side by side share the tags (techno-os/api:<version>), and `docker save` reads by tag."""
    with open("/tmp/techno-os-image-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_images(out: Path, wheel: Path, version: str, base_image: str) -> dict[str, object]:
    """Build, tag and save the release's images; an unchanged image is not saved again."""
    arch = platform.machine()
    if arch not in ARCHES:
        raise BuildError(f"no images for this machine's architecture {arch}")
    try:
        docker("image", "inspect", base_image)
    except BuildError:
        run(["bash", str(BASE_IMAGE_SCRIPT), base_image], f"building the base image {base_image}")
    images: dict[str, object] = {}
    directory = out / "images"
    directory.mkdir(exist_ok=True)
    for kind, tag in (
        ("api", f"techno-os/api:{version}"),
        ("postgres", f"techno-os/postgres:15-{version}"),
    ):
        with tag_lock():
            context = image_context(kind, out, wheel, arch)
            print(f"+ docker build {tag}", flush=True)
            docker(
                "build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image}",
                "--build-arg", f"APP_VERSION={version}", "--tag", tag, str(context),
            )  # fmt: skip
            image_id = docker("image", "inspect", "--format", "{{.Id}}", tag)
            name = f"{kind}-{version}-{arch}.tar.zst"
            saved = directory / name
            stamp = directory / f"{name}.id"
            if not (saved.exists() and stamp.exists() and stamp.read_text().strip() == image_id):
                for old in directory.glob(f"{kind}-*.tar.zst*"):
                    old.unlink()
                print(f"+ docker save {tag} | zstd > images/{name}", flush=True)
                with saved.open("wb") as target:
                    save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
                    zstd = subprocess.run(
                        ["zstd", "-q", "-T0", "-6"], stdin=save.stdout, stdout=target
                    )
                    if save.wait() != 0 or zstd.returncode != 0:
                        raise BuildError(f"saving {tag} failed")
                stamp.write_text(image_id + "\n")
        images[kind] = {"tag": tag, "id": image_id, "file": f"images/{name}", "arch": arch}
        if kind == "api":
            shutil.rmtree(context, ignore_errors=True)
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        action="append",
        choices=ARCHES,
        help="target architecture (repeatable; default: all of %(choices)s)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "artifact")
    parser.add_argument("--no-images", action="store_true", help="skip the container images")
    parser.add_argument("--base-image", default="techno-os/debian:bookworm")
    args = parser.parse_args(argv)
    arches = list(dict.fromkeys(args.arch or ARCHES))
    out: Path = args.out.resolve()
    try:
        version = read_version()
        pins = read_lock(LOCK)
        out.mkdir(parents=True, exist_ok=True)
        wheel = build_wheel(out, version)
        shutil.copyfile(LOCK, out / "requirements.lock")
        for arch in arches:
            fill_wheelhouse(pins, out / f"wheelhouse-{arch}", arch)
        # Wheelhouses of this run, plus complete ones left by an earlier run for another arch.
        complete = [
            arch
            for arch in ARCHES
            if arch in arches
            or (
                (out / f"wheelhouse-{arch}").is_dir()
                and not missing_wheels(pins, out / f"wheelhouse-{arch}", arch)
            )
        ]
        manifest = {
            "version": version,
            "wheel": wheel.name,
            "wheelhouses": {arch: f"wheelhouse-{arch}" for arch in complete},
            # What the deploy checks group data against, read from the wheel itself (not from
            # the source tree): the providers the app knows and its schema's migration head.
            "known_providers": known_providers(wheel),
            "migration_head": migration_head(wheel),
        }
        if not args.no_images:
            manifest["images"] = build_images(out, wheel, version, args.base_image)
        tmp_manifest = out / "manifest.json.tmp"
        tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp_manifest, out / "manifest.json")
    except (BuildError, OSError) as exc:
        print(f"build_artifact: error: {exc}", file=sys.stderr)
        return 1
    print(f"artifact {version} in {out}: {json.dumps(manifest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sandbox host ("local VM"): a Debian 12 systemd host in a container, reached over SSH.

    python tools/sandbox.py up       create it (idempotent) and wait until SSH answers
    python tools/sandbox.py down     destroy it and its volumes
    python tools/sandbox.py ssh      open a root shell in it, or run a command: ssh -- CMD...
    python tools/sandbox.py tunnel   forward the VM's loopback API and Prometheus to this machine
    python tools/sandbox.py status   print what exists
    python tools/sandbox.py engine   make sure a local Docker engine runs (start or install it)

pyinfra and testinfra reach it exactly as they reach production: root over SSH with a key. Every
setting is an environment variable (SANDBOX_*), so the same tool serves any machine with Docker.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = REPO / ".sandbox"
BASE_IMAGE_SCRIPT = REPO / "files" / "images" / "base" / "build_base_image.sh"


@dataclass(frozen=True)
class SandboxSettings:
    name: str = os.environ.get("SANDBOX_NAME", "techno-os-vm")
    image: str = os.environ.get("SANDBOX_IMAGE", "techno-os/vm:bookworm")
    base_image: str = os.environ.get("SANDBOX_BASE_IMAGE", "techno-os/debian:bookworm")
    bind_address: str = os.environ.get("SANDBOX_BIND", "127.0.0.1")
    ssh_port: int = int(os.environ.get("SANDBOX_SSH_PORT", "2222"))
    # Host port -> VM port. The API and Prometheus listen on the VM's loopback (as on production),
    # so they are forwarded by `tunnel` over SSH; published ports are for what listens publicly.
    tunnel_ports: dict[int, int] = field(
        default_factory=lambda: {
            int(os.environ.get("SANDBOX_API_PORT", "8000")): 8000,
            int(os.environ.get("SANDBOX_PROMETHEUS_PORT", "9090")): 9090,
        }
    )
    boot_timeout: float = float(os.environ.get("SANDBOX_BOOT_TIMEOUT", "120"))

    @property
    def docker_volume(self) -> str:
        return f"{self.name}-docker"

    @property
    def key_path(self) -> Path:
        return STATE_DIR / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return STATE_DIR / "known_hosts"


# The flags a systemd host needs in a container on this kind of machine (--privileged fails here).
SYSTEMD_HOST_OPTIONS = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rmw"],
    "cgroupns": "host",
    "tmpfs": {"/run": "", "/run/lock": ""},
}


def say(message: str) -> None:
    print(f"sandbox: {message}", flush=True)


def fail(message: str) -> None:
    print(f"sandbox: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def docker_client() -> docker.DockerClient:
    """A client for a running engine: start Debian's dockerd, or install it, when we can."""
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException:
        pass
    if shutil.which("dockerd") is None:
        if os.geteuid() == 0 and Path("/etc/debian_version").exists():
            say("no Docker engine here: installing Debian's docker.io")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "docker.io"], check=True, env=env)
        else:
            fail(
                "no Docker engine: install Docker (Debian: apt-get install docker.io) and start it"
            )
    if os.geteuid() != 0:
        fail("the Docker engine is installed but not running, and only root can start it here")
    say("starting the Docker engine (dockerd in the background, log /var/log/dockerd.log)")
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(
            ["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client = docker.from_env()
            client.ping()
            return client
        except docker.errors.DockerException:
            time.sleep(0.5)
    fail("dockerd did not answer within 60 s: see /var/log/dockerd.log")
    raise AssertionError  # unreachable


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_images(client: docker.DockerClient, settings: SandboxSettings) -> None:
    if not image_exists(client, settings.base_image):
        say(f"building the Debian base image {settings.base_image}")
        subprocess.run(["bash", str(BASE_IMAGE_SCRIPT), settings.base_image], check=True)
    if not image_exists(client, settings.image):
        say(f"building the sandbox host image {settings.image}")
        client.images.build(
            path=str(REPO / "tools" / "sandbox"),
            tag=settings.image,
            buildargs={"BASE_IMAGE": settings.base_image},
            rm=True,
        )


def ensure_key(settings: SandboxSettings) -> str:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    if not settings.key_path.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"{settings.name}-deployer",
                "-f",
                str(settings.key_path),
            ],
            check=True,
        )
    return settings.key_path.with_suffix(".pub").read_text()


def ensure_secrets() -> None:
    """The sandbox's untracked secrets: a random DB password, a dummy key for the stand-in."""
    path = REPO / "secrets" / "local.env"
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(
        "# Sandbox secrets, made by tools/sandbox.py; never used anywhere else.\n"
        f"DB_PASSWORD={secrets.token_urlsafe(24)}\n"
        # The stand-in accepts any key; a real key never goes to the sandbox.
        f"OPENAI_API_KEY=sk-sandbox-{secrets.token_hex(8)}\n"
    )
    path.chmod(0o600)


def authorized_keys_archive(public_key: str) -> bytes:
    """A tar holding /root/.ssh/authorized_keys, for put_archive before the first boot."""
    buffer = io.BytesIO()
    data = public_key.encode()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(".ssh/authorized_keys")
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def find_container(client: docker.DockerClient, name: str):  # type: ignore[no-untyped-def]
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def wait_for_ssh(settings: SandboxSettings) -> None:
    deadline = time.monotonic() + settings.boot_timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            ssh_command(settings, "systemctl is-system-running --wait >/dev/null 2>&1; true"),
            capture_output=True,
            timeout=settings.boot_timeout,
        )
        if result.returncode == 0:
            return
        time.sleep(1)
    fail(
        f"SSH on {settings.bind_address}:{settings.ssh_port} did not answer "
        f"within {settings.boot_timeout:.0f} s: see `docker logs {settings.name}`"
    )


def ssh_command(settings: SandboxSettings, *command: str) -> list[str]:
    return [
        "ssh", "-i", str(settings.key_path), "-p", str(settings.ssh_port),
        "-o", f"UserKnownHostsFile={settings.known_hosts}",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
        f"root@{settings.bind_address}", *command,
    ]  # fmt: skip


def up(settings: SandboxSettings) -> None:
    client = docker_client()
    ensure_images(client, settings)
    public_key = ensure_key(settings)
    ensure_secrets()
    container = find_container(client, settings.name)
    if container is None:
        say(f"creating {settings.name} (SSH on {settings.bind_address}:{settings.ssh_port})")
        # A new VM has new host keys: forget the old ones.
        settings.known_hosts.unlink(missing_ok=True)
        client.volumes.create(settings.docker_volume)
        container = client.containers.create(
            settings.image,
            name=settings.name,
            hostname=settings.name,
            detach=True,
            ports={"22/tcp": (settings.bind_address, settings.ssh_port)},
            volumes={
                "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                settings.docker_volume: {"bind": "/var/lib/docker", "mode": "rw"},
            },
            labels={"techno-os.sandbox": "true"},
            **SYSTEMD_HOST_OPTIONS,
        )
        container.put_archive("/root", authorized_keys_archive(public_key))
    if container.status != "running":
        container.start()
    wait_for_ssh(settings)
    say(
        f"{settings.name} is up: ssh -i {settings.key_path} -p {settings.ssh_port} "
        f"root@{settings.bind_address}"
    )


def down(settings: SandboxSettings) -> None:
    client = docker_client()
    container = find_container(client, settings.name)
    if container is not None:
        say(f"destroying {settings.name}")
        container.remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(settings.docker_volume).remove(force=True)
    settings.known_hosts.unlink(missing_ok=True)


def status(settings: SandboxSettings) -> None:
    container = find_container(docker_client(), settings.name)
    print(f"{settings.name}: {container.status if container else 'absent'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "ssh", "tunnel", "status", "engine"])
    parser.add_argument("command", nargs="*", help="with ssh: a command to run in the VM")
    args = parser.parse_args()
    settings = SandboxSettings()
    if args.action == "up":
        up(settings)
    elif args.action == "down":
        down(settings)
    elif args.action == "engine":
        docker_client()
    elif args.action == "status":
        status(settings)
    elif args.action == "ssh":
        os.execvp("ssh", ssh_command(settings, *args.command))
    elif args.action == "tunnel":
        forwards = [
            arg
            for host_port, vm_port in settings.tunnel_ports.items()
            for arg in ("-L", f"{settings.bind_address}:{host_port}:127.0.0.1:{vm_port}")
        ]
        say(
            "forwarding "
            + ", ".join(
                f"{settings.bind_address}:{h} -> VM:{v}" for h, v in settings.tunnel_ports.items()
            )
            + " (Ctrl-C ends)"
        )
        ssh = ssh_command(settings)
        os.execvp("ssh", [*ssh[:-1], "-N", *forwards, ssh[-1]])


if __name__ == "__main__":
    main()

"""The sandbox hosts ("local VMs"): Debian 12 systemd hosts in containers, reached over SSH.

    python tools/sandbox.py up [INVENTORY]      create every VM the inventory names (idempotent)
    python tools/sandbox.py down [INVENTORY]    destroy them and their volumes
    python tools/sandbox.py stop|start HOST     stop or start one VM (the drills' host loss)
    python tools/sandbox.py destroy HOST        destroy one VM and its volumes (`up` recreates it)
    python tools/sandbox.py ssh [--host H] [-- CMD...]   a root shell, or run a command
    python tools/sandbox.py tunnel [--host H]   forward the VM's loopback API and Prometheus here
    python tools/sandbox.py status [INVENTORY]  print what exists
    python tools/sandbox.py engine              make sure a local Docker engine runs

INVENTORY defaults to inventories/local.py. The VMs are the inventory's hosts whose data has
`sandbox_vm` true: each gets its SSH port on 127.0.0.1 (`ssh_port`) and its `private_address`
on the Docker network techno-os-sandbox, where the VMs reach one another as separate hosts do.
pyinfra and testinfra reach them exactly as they reach production: root over SSH with a key.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.types
from inventory import InventoryHost, load_inventory, ssh_argv

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = REPO / ".sandbox"
BASE_IMAGE_SCRIPT = REPO / "files" / "images" / "base" / "build_base_image.sh"
DEFAULT_INVENTORY = "inventories/local.py"

IMAGE = os.environ.get("SANDBOX_IMAGE", "techno-os/vm:bookworm")
BASE_IMAGE = os.environ.get("SANDBOX_BASE_IMAGE", "techno-os/debian:bookworm")
BIND_ADDRESS = os.environ.get("SANDBOX_BIND", "127.0.0.1")
NETWORK = os.environ.get("SANDBOX_NETWORK", "techno-os-sandbox")
SUBNET = os.environ.get("SANDBOX_SUBNET", "10.213.0.0/24")
BOOT_TIMEOUT = float(os.environ.get("SANDBOX_BOOT_TIMEOUT", "120"))
# Host port -> VM port for `tunnel`: the API and Prometheus listen on the VM's loopback (as on
# production), so they are forwarded over SSH; nothing is published but SSH.
TUNNEL_PORTS = {
    int(os.environ.get("SANDBOX_API_PORT", "8000")): 8000,
    int(os.environ.get("SANDBOX_PROMETHEUS_PORT", "9090")): 9090,
}
KEY = STATE_DIR / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"

# The flags a systemd host needs in a container on this kind of machine (--privileged fails here).
SYSTEMD_HOST_OPTIONS = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rmw"],
    "cgroupns": "host",
    "tmpfs": {"/run": "", "/run/lock": ""},
}


@dataclass(frozen=True)
class VM:
    name: str
    ssh_port: int
    address: str
    host: InventoryHost

    @property
    def docker_volume(self) -> str:
        return f"{self.name}-docker"


def say(message: str) -> None:
    print(f"sandbox: {message}", flush=True)


def fail(message: str) -> None:
    print(f"sandbox: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def vms(inventory: str) -> list[VM]:
    found = []
    for host in load_inventory(inventory):
        if not host.data.get("sandbox_vm"):
            continue
        address = str(host.data.get("private_address") or "")
        if ipaddress.ip_address(address) not in ipaddress.ip_network(SUBNET):
            fail(f"{host.name}: private_address {address!r} is not in {SUBNET} (SANDBOX_SUBNET)")
        found.append(VM(host.name, int(host.data["ssh_port"]), address, host))
    if not found:
        fail(f"{inventory} names no sandbox VM (hosts with `sandbox_vm` true)")
    return found


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


def ensure_images(client: docker.DockerClient) -> None:
    if not image_exists(client, BASE_IMAGE):
        say(f"building the Debian base image {BASE_IMAGE}")
        subprocess.run(["bash", str(BASE_IMAGE_SCRIPT), BASE_IMAGE], check=True)
    if not image_exists(client, IMAGE):
        say(f"building the sandbox host image {IMAGE}")
        client.images.build(
            path=str(REPO / "tools" / "sandbox"),
            tag=IMAGE,
            buildargs={"BASE_IMAGE": BASE_IMAGE},
            rm=True,
        )


def ensure_network(client: docker.DockerClient) -> None:
    try:
        network = client.networks.get(NETWORK)
    except docker.errors.NotFound:
        say(f"creating the network {NETWORK} ({SUBNET})")
        pool = docker.types.IPAMPool(subnet=SUBNET)
        client.networks.create(
            NETWORK, driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=[pool])
        )
        return
    subnets = [c.get("Subnet") for c in network.attrs["IPAM"]["Config"]]
    if SUBNET not in subnets:
        fail(f"network {NETWORK} exists with {subnets}, not {SUBNET}: remove it or set SANDBOX_*")


def ensure_key() -> str:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    if not KEY.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "techno-os-sandbox", "-f",
             str(KEY)],
            check=True,
        )  # fmt: skip
    return KEY.with_suffix(".pub").read_text()


def ensure_secrets(inventory: str) -> None:
    """The sandbox's untracked secrets: a random DB password, a dummy key for the stand-in."""
    group = next(g for g in load_inventory(inventory)[0].groups if g != "all")
    path = REPO / "secrets" / f"{group}.env"
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


def forget_host_key(vm: VM) -> None:
    if KNOWN_HOSTS.exists():
        subprocess.run(
            ["ssh-keygen", "-R", f"[{BIND_ADDRESS}]:{vm.ssh_port}", "-f", str(KNOWN_HOSTS)],
            capture_output=True,
            check=False,
        )


def wait_for_ssh(vms_: list[VM]) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    waiting = list(vms_)
    while waiting:
        vm = waiting[0]
        result = subprocess.run(
            ssh_argv(vm.host, "systemctl is-system-running --wait >/dev/null 2>&1; true"),
            capture_output=True,
            timeout=BOOT_TIMEOUT,
            check=False,
        )
        if result.returncode == 0:
            waiting.pop(0)
            continue
        if time.monotonic() > deadline:
            fail(
                f"SSH on {BIND_ADDRESS}:{vm.ssh_port} did not answer within {BOOT_TIMEOUT:.0f} s: "
                f"see `docker logs {vm.name}`"
            )
        time.sleep(1)


@contextlib.contextmanager
def shared_setup_lock() -> Iterator[None]:
    """One `up` at a time builds the images, the network and the key: `make test` brings the
    local sandbox and the cluster up side by side."""
    with open("/tmp/techno-os-sandbox-setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(inventory: str) -> None:
    targets = vms(inventory)
    client = docker_client()
    with shared_setup_lock():
        ensure_images(client)
        ensure_network(client)
        public_key = ensure_key()
    ensure_secrets(inventory)
    for vm in targets:
        container = find_container(client, vm.name)
        if container is None:
            say(f"creating {vm.name} ({vm.address}, SSH on {BIND_ADDRESS}:{vm.ssh_port})")
            forget_host_key(vm)  # a new VM has new host keys
            client.volumes.create(vm.docker_volume)
            container = client.containers.create(
                IMAGE,
                name=vm.name,
                hostname=vm.name,
                detach=True,
                ports={"22/tcp": (BIND_ADDRESS, vm.ssh_port)},
                volumes={
                    "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                    vm.docker_volume: {"bind": "/var/lib/docker", "mode": "rw"},
                },
                labels={"techno-os.sandbox": "true"},
                network=NETWORK,
                **SYSTEMD_HOST_OPTIONS,
            )
            # The fixed address: connect with it (create attached the network without one).
            network = client.networks.get(NETWORK)
            network.disconnect(container)
            network.connect(container, ipv4_address=vm.address)
            container.put_archive("/root", authorized_keys_archive(public_key))
        if container.status != "running":
            container.start()
    wait_for_ssh(targets)
    for vm in targets:
        say(f"{vm.name} is up: ssh -i {KEY} -p {vm.ssh_port} root@{BIND_ADDRESS}")


def destroy(client: docker.DockerClient, vm: VM) -> None:
    """The VM and its volumes, gone at once (SIGKILL: a lost host does not shut down)."""
    container = find_container(client, vm.name)
    if container is not None:
        say(f"destroying {vm.name}")
        container.remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(vm.docker_volume).remove(force=True)
    forget_host_key(vm)


def down(inventory: str) -> None:
    client = docker_client()
    for vm in vms(inventory):
        destroy(client, vm)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        network = client.networks.get(NETWORK)
        network.reload()
        if not network.containers:
            network.remove()


def one(inventory: str, name: str | None) -> VM:
    targets = vms(inventory)
    if name is None:
        return targets[0]
    for vm in targets:
        if vm.name == name:
            return vm
    fail(f"{inventory} has no sandbox VM {name!r}: {', '.join(v.name for v in targets)}")
    raise AssertionError  # unreachable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "action",
        choices=["up", "down", "stop", "start", "destroy", "ssh", "tunnel", "status", "engine"],
    )
    parser.add_argument("words", nargs="*", help="INVENTORY, a host (stop/start), or a command")
    parser.add_argument("--inventory", default=os.environ.get("INVENTORY", DEFAULT_INVENTORY))
    parser.add_argument("--host", help="the VM (ssh, tunnel): default the inventory's first")
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:  # ssh ... -- COMMAND: everything after it is the command
        command, argv = argv[argv.index("--") + 1 :], argv[: argv.index("--")]
    args = parser.parse_args(argv)
    args.words += command
    inventory = args.inventory
    if args.action in ("up", "down", "status") and args.words:
        inventory = args.words[0]
    if args.action == "engine":
        docker_client()
    elif args.action == "up":
        up(inventory)
    elif args.action == "down":
        down(inventory)
    elif args.action == "destroy":
        if not args.words:
            parser.error("destroy needs the VM's name")
        destroy(docker_client(), one(inventory, args.words[0]))
    elif args.action in ("stop", "start"):
        if not args.words:
            parser.error(f"{args.action} needs the VM's name")
        container = find_container(docker_client(), one(inventory, args.words[0]).name)
        if container is None:
            fail(f"{args.words[0]} does not exist")
        getattr(container, args.action)()
    elif args.action == "status":
        client = docker_client()
        for vm in vms(inventory):
            container = find_container(client, vm.name)
            print(f"{vm.name}: {container.status if container else 'absent'}")
    elif args.action == "ssh":
        vm = one(inventory, args.host)
        argv = ssh_argv(vm.host, *args.words, tty=not args.words)
        os.execvp(argv[0], argv)
    elif args.action == "tunnel":
        vm = one(inventory, args.host)
        forwards = [
            arg
            for host_port, vm_port in TUNNEL_PORTS.items()
            for arg in ("-L", f"{BIND_ADDRESS}:{host_port}:127.0.0.1:{vm_port}")
        ]
        say(
            "forwarding "
            + ", ".join(f"{BIND_ADDRESS}:{h} -> {vm.name}:{v}" for h, v in TUNNEL_PORTS.items())
            + " (Ctrl-C ends)"
        )
        argv = ssh_argv(vm.host)
        os.execvp("ssh", [*argv[:-1], "-N", *forwards, argv[-1]])


if __name__ == "__main__":
    main()

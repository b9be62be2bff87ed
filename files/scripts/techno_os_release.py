#!/usr/bin/env python3
"""Techno OS API releases on one host, without dropping a request (blue/green behind the local
front: HAProxy on api_port, on loopback and the host's private address).

    techno-os-release release IMAGE   start IMAGE next to the live container, switch, drain
    techno-os-release rollback        the previous release's image, the same way
    techno-os-release status          the live release and the history, as JSON
    techno-os-release check IMAGE     exit 0 when IMAGE with today's env file is what serves

The front forwards to both slot ports (loopback only), to the first that passes its health check
(/health), and tries a request whose connection was refused on the other slot; its config never
changes during a release. A release: the new container starts on the free slot with the env
file; once its /ready answers 200 (and the front has seen it healthy), the old container is
drained: its /health answers 503 (the drain file), so the front sends it nothing new, then
SIGTERM lets uvicorn finish the requests it still serves (within stop_timeout). The new
container then takes the name `techno-os-api`, so the runbook's `docker logs techno-os-api` and
`docker restart techno-os-api` keep working. A new container that never gets ready is removed
and the old one keeps serving: the command exits 1 with the reason and the container's last log
lines. The images of the last `keep_releases` releases stay on the host; older ones are removed.

Settings: /etc/techno-os/release.json (written by the deploy, tasks/release.py).
Standard library only: it runs with the host's python3.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SETTINGS = Path(os.environ.get("TECHNO_OS_RELEASE_SETTINGS", "/etc/techno-os/release.json"))


class ReleaseError(Exception):
    """The release stopped; the message says why (the live release is untouched)."""


def say(message: str) -> None:
    print(f"techno-os-release: {message}", flush=True)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ReleaseError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()}")
    return result


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def haproxy_command(path: str, command: str) -> str | None:
    """One command on HAProxy's admin socket (its runtime API); None when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").strip()
    except OSError:
        return None


class Releaser:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.live_name: str = settings["container"]
        self.next_name = f"{self.live_name}-next"
        self.state_file = Path(settings["state_file"])

    # --- docker ---------------------------------------------------------------------------
    def inspect(self, name: str) -> dict[str, Any] | None:
        result = run("docker", "inspect", "--type", "container", name, check=False)
        if result.returncode != 0:
            return None
        found: dict[str, Any] = json.loads(result.stdout)[0]
        return found

    def image_id(self, image: str) -> str:
        result = run("docker", "image", "inspect", "--format", "{{.Id}}", image, check=False)
        if result.returncode != 0:
            raise ReleaseError(f"image {image} is not on this host")
        return result.stdout.strip()

    def env_digest(self) -> str:
        """The env file and the files mounted into the container: a change is a new release."""
        digest = hashlib.sha256(Path(self.s["env_file"]).read_bytes())
        for mount in self.s.get("mounts", []):
            source = Path(mount.split(":", 1)[0])
            digest.update(source.read_bytes() if source.exists() else b"-")
        return digest.hexdigest()

    def slot_of(self, container: dict[str, Any]) -> int:
        return int(container["Config"]["Labels"].get("techno-os.slot", 0))

    def serving(self, image: str) -> bool:
        """The live container runs `image` with today's env file, is up, and is the front's."""
        live = self.inspect(self.live_name)
        if live is None or not live["State"]["Running"]:
            return False
        labels = live["Config"]["Labels"]
        if (
            live["Image"] != self.image_id(image)
            or labels.get("techno-os.env") != self.env_digest()
        ):
            return False
        return http_get(f"http://127.0.0.1:{self.slot_of(live)}/health")[0] == 200

    # --- releasing -----------------------------------------------------------------------
    def release(self, image: str) -> None:
        image_id = self.image_id(image)
        if self.serving(image):
            say(f"{image} already serves, with this env file: nothing to do")
            return
        live = self.inspect(self.live_name)
        live_slot = self.slot_of(live) if live and live["State"]["Running"] else None
        slots = [int(p) for p in self.s["slots"]]
        slot = slots[1] if live_slot == slots[0] else slots[0]
        say(f"starting {image} on slot {slot} (live: {live_slot or 'none'})")
        run("docker", "rm", "-f", self.next_name, check=False)
        # A slot left in DRAIN (an interrupted release) would never get the new one's traffic.
        self.set_slot_state(slot, "ready")
        self.start(self.next_name, image, slot)
        try:
            self.wait_ready(slot)
        except ReleaseError:
            logs = run("docker", "logs", "--tail", "40", self.next_name, check=False)
            run("docker", "rm", "-f", self.next_name, check=False)
            say("the new container's last log lines:\n" + (logs.stdout + logs.stderr)[-4000:])
            raise
        # The front checks its slots' health every second: let it see the new one up.
        time.sleep(float(self.s["drain_seconds"]))
        if live is not None:
            self.drain(live)
        self.wait_front(slot)
        self.wait_front(slot)
        run("docker", "rename", self.next_name, self.live_name)
        self.remember(image, image_id)
        self.prune()
        say(f"{image} serves on slot {slot}")

    def start(self, name: str, image: str, slot: int) -> None:
        run(
            "docker", "run", "--detach", "--name", name,
            "--network", "host", "--restart", "unless-stopped",
            "--env-file", self.s["env_file"],
            "--env", "API_HOST=127.0.0.1", "--env", f"API_PORT={slot}",
            "--env", f"API_INSTANCE=slot-{slot}",
            "--env", f"API_DRAIN_FILE={self.s['drain_file']}",
            *[arg for mount in self.s.get("mounts", [])
              if Path(mount.split(":", 1)[0]).exists() for arg in ("--volume", mount)],
            "--label", f"techno-os.slot={slot}", "--label", f"techno-os.env={self.env_digest()}",
            "--log-driver", "json-file",
            "--log-opt", f"max-size={self.s['log_max_size']}",
            "--log-opt", f"max-file={self.s['log_max_files']}",
            "--stop-timeout", str(self.s["stop_timeout"]),
            image,
        )  # fmt: skip

    def slot_server(self, slot: int) -> str:
        """The front's server for a slot port (templates/haproxy.cfg.j2: slot1, slot2...)."""
        return f"{self.s['front_backend']}/slot{self.s['slots'].index(slot) + 1}"

    def set_slot_state(self, slot: int, state: str) -> bool:
        if slot not in self.s["slots"]:
            return False
        answer = haproxy_command(
            self.s["haproxy_socket"], f"set server {self.slot_server(slot)} state {state}"
        )
        # The runtime API answers nothing on success, a message on an error.
        return answer == ""

    def drain(self, live: dict[str, Any]) -> None:
        """Take the old release out of the front's rotation, then stop it. The front is told at
        once (its server goes to DRAIN: no new request, those in flight go on); the drain file
        also turns the old release's /health to 503 for any other balancer that asks. SIGTERM
        then lets uvicorn finish what it still serves (within stop_timeout)."""
        slot = self.slot_of(live)
        if not self.set_slot_state(slot, "drain"):
            say(f"the front's runtime API did not take slot {slot} out; its health check will")
        run(
            "docker", "exec", "--user", "techno", self.live_name,
            "touch", self.s["drain_file"], check=False,
        )  # fmt: skip
        time.sleep(float(self.s["drain_seconds"]))
        grace = str(self.s["stop_timeout"])
        run("docker", "stop", "--time", grace, self.live_name, check=False)
        run("docker", "rm", "-f", self.live_name, check=False)
        # Ready for the next release: with nothing on the port, the health check keeps it DOWN.
        self.set_slot_state(slot, "ready")

    def wait_ready(self, slot: int) -> None:
        deadline = time.monotonic() + float(self.s["ready_timeout"])
        while True:
            status, _ = http_get(f"http://127.0.0.1:{slot}/ready")
            if status == 200:
                return
            container = self.inspect(self.next_name)
            state = container["State"] if container else {}
            if not state.get("Running") or (container or {}).get("RestartCount", 0) > 0:
                raise ReleaseError(
                    f"the new container stopped (exit {state.get('ExitCode')}) before it was "
                    "ready; the previous release keeps serving"
                )
            if time.monotonic() > deadline:
                raise ReleaseError(
                    f"the new container was not ready (/ready {status or 'no answer'}) within "
                    f"{self.s['ready_timeout']} s; the previous release keeps serving"
                )
            time.sleep(0.5)

    def wait_front(self, slot: int) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status, body = http_get(f"http://{self.s['front']}/version")
            if status == 200 and body.get("instance") == f"slot-{slot}":
                return
            time.sleep(0.2)
        raise ReleaseError(f"the front still does not answer from slot {slot} after 15 s")

    # --- history -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        if self.state_file.exists():
            loaded: dict[str, Any] = json.loads(self.state_file.read_text())
            return loaded
        return {"history": []}

    def remember(self, image: str, image_id: str) -> None:
        state = self.state()
        state["history"] = [h for h in state["history"] if h["image_id"] != image_id]
        state["history"].append(
            {"image": image, "image_id": image_id, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        )
        state["history"] = state["history"][-int(self.s["keep_releases"]) :]
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(self.state_file)

    def prune(self) -> None:
        """Remove the repository's images that are not among the kept releases."""
        kept = {h["image_id"] for h in self.state()["history"]}
        listed = run(
            "docker", "image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
            self.s["image_repository"],
        ).stdout.split("\n")  # fmt: skip
        for line in filter(None, listed):
            tag, image_id = line.split()
            if image_id not in kept:
                say(f"removing {tag}: older than the last {self.s['keep_releases']} releases")
                run("docker", "image", "rm", tag, check=False)

    def rollback(self) -> None:
        live = self.inspect(self.live_name)
        live_image = live["Image"] if live else None
        earlier = [h for h in self.state()["history"] if h["image_id"] != live_image]
        if not earlier:
            raise ReleaseError("no earlier release is kept on this host: nothing to roll back to")
        previous = earlier[-1]
        say(f"rolling back to {previous['image']} (released {previous['at']})")
        self.release(previous["image"])

    def status(self) -> dict[str, Any]:
        live = self.inspect(self.live_name)
        return {
            "live": None
            if live is None
            else {
                "image": live["Config"]["Image"],
                "image_id": live["Image"],
                "slot": self.slot_of(live),
                "running": live["State"]["Running"],
            },
            "history": self.state()["history"],
        }


@contextlib.contextmanager
def one_at_a_time(path: Path):  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="techno-os-release", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("release", "check"):
        commands.add_parser(name).add_argument("image")
    commands.add_parser("rollback")
    commands.add_parser("status")
    args = parser.parse_args(argv)
    releaser = Releaser(json.loads(SETTINGS.read_text()))
    try:
        if args.command == "status":
            print(json.dumps(releaser.status(), indent=2))
            return 0
        if args.command == "check":
            return 0 if releaser.serving(args.image) else 1
        with one_at_a_time(releaser.state_file.with_suffix(".lock")):
            if args.command == "release":
                releaser.release(args.image)
            else:
                releaser.rollback()
    except ReleaseError as exc:
        print(f"techno-os-release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Restore the database of an inventory, from the control machine, with every API host stopped.

    python tools/restore.py INVENTORY --latest
    python tools/restore.py INVENTORY --target-time 'YYYY-MM-DD HH:MM:SS'    (UTC)
    python tools/restore.py INVENTORY [ARCHIVE]                              (a nightly archive)
    (make restore INVENTORY=... ARGS="--latest")

restore_observability.sh does the restore on the db host, and stops and restarts the API of its
own host. On a layout where the API hosts are other machines, it cannot reach them: this tool
stops their release containers first (nothing answers from a database being replaced), runs
the script, and starts them again whatever happened (the script has put the previous database
back if it failed), then waits for each API host's /ready. It asks for confirmation unless
--yes is given. Exit status: the script's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from inventory import InventoryHost, load_inventory, ssh_argv

API_LABEL = "techno-os.slot"  # files/scripts/techno_os_release.py labels every release container
READY_TIMEOUT = 300


def say(message: str) -> None:
    print(f"restore: {message}", flush=True)


def ssh(host: InventoryHost, command: str, check: bool = True) -> str:
    result = subprocess.run(
        ssh_argv(host, command), capture_output=True, text=True, timeout=600, check=False
    )
    if check and result.returncode != 0:
        raise SystemExit(f"restore: {host.name}: `{command}` failed: {result.stderr.strip()}")
    return result.stdout


def stop_api(host: InventoryHost) -> list[str]:
    ids = ssh(host, f"docker ps -q --filter label={API_LABEL}").split()
    if ids:
        say(f"{host.name}: stopping the API ({len(ids)} container(s))")
        ssh(host, "docker stop -t 30 " + " ".join(ids))
    return ids


def start_api(host: InventoryHost, ids: list[str]) -> None:
    if not ids:
        return
    say(f"{host.name}: starting the API again")
    ssh(host, "docker start " + " ".join(ids), check=False)
    port = host.data.get("api_port", 8000)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        ready = ssh(
            host,
            f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://127.0.0.1:{port}/ready",
            check=False,
        )
        if ready.strip() == "200":
            say(f"{host.name}: the API is ready")
            return
        time.sleep(2)
    say(f"{host.name}: the API is not ready after {READY_TIMEOUT} s: docker logs techno-os-api")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inventory")
    parser.add_argument("--latest", action="store_true")
    parser.add_argument("--target-time", metavar="'YYYY-MM-DD HH:MM:SS'")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("archive", nargs="?", help="a nightly archive (default: the latest)")
    args = parser.parse_args()
    if args.latest and args.target_time:
        parser.error("--latest and --target-time exclude each other")
    hosts = load_inventory(args.inventory)
    db = [h for h in hosts if h.has("db")]
    if len(db) != 1:
        parser.error(f"{args.inventory} needs exactly one db host, it has {len(db)}")
    others = [h for h in hosts if h.has("api") and h.name != db[0].name]
    mode = ["--latest"] if args.latest else []
    mode += ["--target-time", args.target_time] if args.target_time else []
    mode += [args.archive] if args.archive else []
    if not args.yes:
        print(
            f"The restore STOPS the API on {', '.join(h.name for h in others) or '(no other host)'}"
            f" and on {db[0].name}, and REPLACES the database of {db[0].name}."
        )
        if input("Type 'sim' to continue: ").strip() != "sim":
            say("cancelled: nothing changed")
            return 1
    stopped: dict[str, list[str]] = {}
    try:
        for host in others:
            stopped[host.name] = stop_api(host)
        script = (
            f"{db[0].data.get('scripts_dir', '/opt/techno-os/scripts')}/restore_observability.sh"
        )
        quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in ["--yes", *mode])
        say(f"{db[0].name}: {script} {' '.join(mode)}")
        result = subprocess.run(ssh_argv(db[0], f"{script} {quoted}"), check=False)
        return result.returncode
    finally:
        for host in others:
            start_api(host, stopped.get(host.name, []))


if __name__ == "__main__":
    sys.exit(main())

"""The container's command: validate the settings, apply the migrations (waiting for the
database), then replace this process with uvicorn serving `techno_os_api.main:app` with one worker.

    python -m techno_os_api.serve           # migrate, then serve on API_HOST:API_PORT
    python -m techno_os_api.serve --no-migrate
"""

from __future__ import annotations

import argparse
import os
import sys

from techno_os_api.core.config import SettingsError, load_settings


def uvicorn_argv(
    host: str,
    port: int,
    log_level: str,
    access_log: bool,
    forwarded_allow_ips: str,
    graceful_shutdown_seconds: int = 60,
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "techno_os_api.main:app",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        log_level,
        # X-Forwarded-For names the client only when the peer is the proxy.
        "--proxy-headers",
        "--forwarded-allow-ips",
        forwarded_allow_ips,
        "--timeout-graceful-shutdown",
        str(graceful_shutdown_seconds),
    ]
    if not access_log:
        argv.append("--no-access-log")
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m techno_os_api.serve", description=__doc__)
    parser.add_argument("--no-migrate", action="store_true", help="serve without migrating")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    if not args.no_migrate:
        from techno_os_api import migrate

        code = migrate.main([])
        if code != 0:
            return code
    command = uvicorn_argv(
        settings.api_host,
        settings.api_port,
        settings.log_level,
        settings.api_access_log,
        settings.api_forwarded_allow_ips,
        settings.api_graceful_shutdown_seconds,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

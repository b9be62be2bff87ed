#!/usr/bin/env bash
# Installs what the control machine (a developer's box or CI) needs from Debian's packages:
# PostgreSQL 15 for the app tests, promtool, Docker for the sandbox, debootstrap, shellcheck,
# headless Chromium for the dashboards test.
# Installs only what is missing; elsewhere than root on Debian, names what is missing.
set -euo pipefail

# command -> Debian package providing it
declare -A NEEDED=(
    [/usr/lib/postgresql/15/bin/postgres]=postgresql-15
    [promtool]=prometheus
    [amtool]=prometheus-alertmanager
    [docker]=docker.io
    [docker-compose]=docker-compose
    [debootstrap]=debootstrap
    [shellcheck]=shellcheck
    [ssh]=openssh-client
    [ssh-keygen]=openssh-client
    [flock]=util-linux
    [wrk]=wrk
    # The dashboards test renders the console pages in a real browser; certutil makes it trust
    # the sandbox's local CA in a throwaway profile (never the system's trust store).
    [chromium]=chromium
    [certutil]=libnss3-tools
)

missing_packages() {
    local cmd
    for cmd in "${!NEEDED[@]}"; do
        if [[ "$cmd" == /* ]]; then
            [[ -x "$cmd" ]] || echo "${NEEDED[$cmd]}"
        else
            command -v "$cmd" >/dev/null 2>&1 || echo "${NEEDED[$cmd]}"
        fi
    done | sort -u
}

main() {
    local -a missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        exit 0
    fi
    if [[ $EUID -ne 0 || ! -f /etc/debian_version ]]; then
        echo "host-deps: missing on this machine: ${missing[*]} (Debian package names)" >&2
        exit 1
    fi
    echo "host-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

main "$@"

#!/usr/bin/env bash
# Build the Debian base image of the stack (default tag techno-os/debian:bookworm).
#
# Usage: build_base_image.sh [--force] [--no-pull] [--mirror URL] [TAG]
#
#   With a registry: `docker pull debian:bookworm-slim` and retag it.
#   Without one (air-gapped hosts, CI): debootstrap --variant=minbase from a Debian mirror
#   into a temporary directory and `docker import` it.
#   Does nothing when TAG already exists, unless --force.
#
# Environment (each overridden by the matching option):
#   BASE_IMAGE        tag to build                 (techno-os/debian:bookworm)
#   DEBIAN_MIRROR     mirror for debootstrap/apt   (http://deb.debian.org/debian)
#   SECURITY_MIRROR   security archive, "" = none  (http://deb.debian.org/debian-security)
#   DEBIAN_SUITE      Debian suite                 (bookworm)
#   PULL_IMAGE        image tried with docker pull (debian:<suite>-slim)
#   PULL_TIMEOUT      seconds allowed for the pull (30)
#   BASE_PULL         0 = never try the registry   (1)
#
# Self-contained: the deploy uploads this file alone to the target host and runs it as root.
set -euo pipefail

readonly PROG="${0##*/}"

TAG="${BASE_IMAGE:-techno-os/debian:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SECURITY_MIRROR-http://deb.debian.org/debian-security}"
SUITE="${DEBIAN_SUITE:-bookworm}"
PULL_TIMEOUT="${PULL_TIMEOUT:-30}"
TRY_PULL="${BASE_PULL:-1}"
FORCE=0
ROOTFS=""

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "$0"
}

parse_args() {
    while (($#)); do
        case "$1" in
            --force) FORCE=1 ;;
            --no-pull) TRY_PULL=0 ;;
            --mirror)
                (($# >= 2)) || die "--mirror needs a URL"
                MIRROR="$2"
                shift
                ;;
            --mirror=*) MIRROR="${1#--mirror=}" ;;
            -h | --help)
                usage
                exit 0
                ;;
            -*) die "unknown option: $1" ;;
            *) TAG="$1" ;;
        esac
        shift
    done
}

image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

# Unmount anything debootstrap left mounted in the rootfs (interrupted runs), then remove it.
cleanup() {
    local mnt
    if [[ -n "$ROOTFS" && -d "$ROOTFS" ]]; then
        while read -r mnt; do
            umount -l "$mnt" 2>/dev/null || true
        done < <(awk -v root="$ROOTFS/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r)
        rm -rf --one-file-system "$ROOTFS"
    fi
}

try_pull() {
    local src="${PULL_IMAGE:-debian:${SUITE}-slim}"
    [[ "$TRY_PULL" == 1 ]] || return 1
    if ! image_exists "$src"; then
        log "trying: docker pull $src (timeout ${PULL_TIMEOUT}s)"
        if ! timeout "$PULL_TIMEOUT" docker pull --quiet "$src" >/dev/null 2>&1; then
            log "no registry reachable; building with debootstrap"
            return 1
        fi
    fi
    docker tag "$src" "$TAG"
    log "tagged $src as $TAG"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends debootstrap >&2; } ||
        die "debootstrap is missing and could not be installed"
}

# Make the rootfs behave like the official slim image: no docs, no cached debs, full sources.
configure_rootfs() {
    local root="$1"

    cat >"$root/etc/dpkg/dpkg.cfg.d/docker-excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF

    cat >"$root/etc/apt/apt.conf.d/docker-no-recommends" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF

    {
        printf 'deb %s %s main\n' "$MIRROR" "$SUITE"
        printf 'deb %s %s-updates main\n' "$MIRROR" "$SUITE"
        if [[ -n "$SECURITY" ]]; then
            printf 'deb %s %s-security main\n' "$SECURITY" "$SUITE"
        fi
    } >"$root/etc/apt/sources.list"

    printf '%s\n' "$SUITE" >"$root/etc/hostname"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log \
        "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} +
}

build_with_debootstrap() {
    ensure_debootstrap
    ROOTFS="$(mktemp -d "${TMPDIR:-/var/tmp}/techno-os-base.XXXXXX")"
    chmod 0755 "$ROOTFS"

    log "debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >&2 ||
        die "debootstrap failed (mirror $MIRROR)"
    configure_rootfs "$ROOTFS"

    log "importing rootfs as $TAG"
    tar --numeric-owner -C "$ROOTFS" -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $SUITE $MIRROR" \
            - "$TAG" >/dev/null
    log "built $TAG"
}

main() {
    parse_args "$@"
    command -v docker >/dev/null 2>&1 || die "docker CLI not found"

    if [[ "$FORCE" == 0 ]] && image_exists "$TAG"; then
        log "$TAG already present; nothing to do (use --force to rebuild)"
        return 0
    fi

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    try_pull || build_with_debootstrap
}

main "$@"

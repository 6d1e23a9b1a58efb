#!/usr/bin/env bash
# Install what the project needs, each part only if it is missing or stale.
#
#   scripts/bootstrap.sh [python] [node] [redis] [postgres] [nginx] [chromium]
#
# python    .venv + requirements.txt (re-installed only when requirements.txt changes)
# node      node_modules from package-lock.json (npm ci, only when the lock changed)
# redis     redis-server from apt (not started: the tests start their own)
# postgres  the PostgreSQL server from apt (not started: tests/support/postgres.py starts a throwaway one)
# nginx     nginx from apt (not started: the proxy test starts its own from docs/nginx.conf)
# chromium  /usr/bin/chromium (+ fonts-dejavu-core) from apt
#
# Idempotent; safe to run as root in CI with no stdin (CI=true).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: $0 [python] [node] [redis] [postgres] [nginx] [chromium]" >&2
}

APT_UPDATED=0
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "apt-get install needs root (or sudo): $*"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

do_python() {
    local py="$ROOT/.venv/bin/python"
    local stamp="$ROOT/.venv/.requirements.stamp"
    if [ ! -x "$py" ]; then
        log "creating .venv"
        python3 -m venv "$ROOT/.venv"
        rm -f "$stamp"
    fi
    if [ ! -f "$ROOT/requirements.txt" ]; then
        log "no requirements.txt, skipping pip install"
        return
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/requirements.txt" -nt "$stamp" ]; then
        log "pip install -r requirements.txt"
        "$py" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements.txt"
        touch "$stamp"
    fi
}

do_node() {
    command -v npm >/dev/null 2>&1 || die "npm is not installed"
    [ -f "$ROOT/package-lock.json" ] || die "package-lock.json is missing"
    local marker="$ROOT/node_modules/.package-lock.json"
    if [ ! -f "$marker" ] || [ "$ROOT/package-lock.json" -nt "$marker" ]; then
        log "npm ci"
        npm ci --no-audit --no-fund --loglevel=error </dev/null
    fi
}

do_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
}

do_postgres() {
    # Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin, out of PATH.
    if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
        apt_install postgresql
    fi
}

do_nginx() {
    if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
        apt_install nginx
    fi
}

do_chromium() {
    local pkgs=()
    [ -x /usr/bin/chromium ] || pkgs+=(chromium)
    deb_installed fonts-dejavu-core || pkgs+=(fonts-dejavu-core)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        apt_install "${pkgs[@]}"
    fi
}

if [ "$#" -eq 0 ]; then
    usage
    exit 2
fi

for part in "$@"; do
    case "$part" in
        python|node|redis|postgres|nginx|chromium) ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown part: $part" ;;
    esac
done

for part in "$@"; do
    "do_$part"
done

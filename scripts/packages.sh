#!/usr/bin/env bash
# Makes sure the Debian packages of the given sections of scripts/packages.txt
# are installed. Root: `apt-get update`, then `apt-get install` of the
# missing ones. Another user: prints the exact apt-get line and fails, having
# run nothing.
# Usage: scripts/packages.sh SECTION...     (e.g. test bench)
set -euo pipefail
list="$(cd "$(dirname "$0")" && pwd)/packages.txt"
[ $# -gt 0 ] || { echo "usage: $0 SECTION..." >&2; exit 2; }

# "PACKAGE [GUARD]" for each line of the sections asked for.
entries() {
    awk -v want=" $* " '
        /^[ \t]*(#|$)/ { next }
        /^\[.*\]$/     { section = substr($0, 2, length($0) - 2); next }
        index(want, " " section " ") {
            if ($2 == "unless") print $1, $3; else print $1
        }' "$list"
}

installed() {
    local status
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) || return 1
    [[ $status == ii* ]]
}

missing() {
    local pkg guard
    while read -r pkg guard; do
        [ -n "$guard" ] && command -v "$guard" >/dev/null && continue
        installed "$pkg" || echo "$pkg"
    done < <(entries "$@")
}

need=$(missing "$@" | tr '\n' ' ')
need=${need% }
[ -z "$need" ] && exit 0
line="apt-get install -y --no-install-recommends $need"
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: $need" >&2
    echo "run as root:" >&2
    echo "  $line" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086  # one word a package
apt-get install -y --no-install-recommends $need
still=$(missing "$@" | tr '\n' ' ')
[ -z "$still" ] || { echo "still missing after apt-get: $still" >&2; exit 1; }

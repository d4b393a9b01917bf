#!/usr/bin/env bash
# Install the system packages that Phoenix's tests use and pip cannot provide.
#
#   etcd-server   /usr/bin/etcd, started by the etcd discovery and split-brain lease tests
#                 (tests/testing/etcd_server.py)
#   iptables      partitions between LocalCluster nodes (tests/cluster, fault injection)
#   prometheus    /usr/bin/prometheus and promtool, scraping a real node (tests/web)
#   chromium      /usr/bin/chromium, the headless browser of the dashboard test (tests/web)
#   postgresql    initdb and pg_ctl (/usr/lib/postgresql/*/bin), the throwaway PostgreSQL
#                 server of the state store tests (tests/stores)
#
# Quiet and idempotent when everything is present. As root with apt-get it installs what
# is missing (running `apt-get update` only if the install fails without it). When it
# cannot (not root, no apt-get, apt-get fails, or the command is still missing after the
# install) it says what is missing on one line and exits 1: `make test` stops there,
# because the suite needs all of it. (Under CI a test whose command is missing fails
# rather than skips; run pytest directly on a workstation to skip those tests.)
#
# PHX_SYSTEM_DEPS overrides the package:command list (the script's own test uses it).
set -u

# package:command pairs; a package counts as present when its command is found.
read -r -a NEEDED <<<"${PHX_SYSTEM_DEPS:-etcd-server:etcd iptables:iptables prometheus:prometheus chromium:chromium postgresql:initdb}"

missing_packages() {
    local entry pkg cmd
    for entry in "${NEEDED[@]}"; do
        pkg=${entry%%:*}
        cmd=${entry#*:}
        # (Debian keeps PostgreSQL's server binaries off PATH, per major version.)
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/bin/$cmd" ] \
            && [ ! -x "/usr/sbin/$cmd" ] \
            && ! compgen -G "/usr/lib/postgresql/*/bin/$cmd" >/dev/null; then
            echo "$pkg"
        fi
    done
}

mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system-deps: missing ${missing[*]}; install as root:" \
         "apt-get install ${missing[*]}" >&2
    exit 1
fi

echo "ensure-system-deps: installing ${missing[*]} with apt-get"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }
if ! install; then
    # The package lists may be missing or stale (a fresh machine): refresh once, retry.
    if ! { apt-get update -q >>"$log" 2>&1 && install; }; then
        echo "ensure-system-deps: could not install ${missing[*]} with apt-get;" \
             "its last lines:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
fi
mapfile -t still < <(missing_packages)
if [ ${#still[@]} -ne 0 ]; then
    echo "ensure-system-deps: apt-get installed ${missing[*]} but the commands of" \
         "${still[*]} are still not found" >&2
    exit 1
fi
exit 0

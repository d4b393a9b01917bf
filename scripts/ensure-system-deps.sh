#!/usr/bin/env bash
# Install the system packages that Phoenix's tests use and pip cannot provide.
#
#   etcd-server   /usr/bin/etcd, started by tests/membership/test_discovery_etcd.py
#   iptables      partitions between LocalCluster nodes (tests/cluster, fault injection)
#   prometheus    /usr/bin/prometheus and promtool, scraping a real node (tests/web)
#   chromium      /usr/bin/chromium, the headless browser of the dashboard test (tests/web)
#
# Quiet and idempotent when everything is present. As root with apt-get it installs what
# is missing (running `apt-get update` only if the install fails without it); otherwise
# it prints what is missing and exits 0, and the tests that need it skip with a reason.
set -u

# package:command pairs; a package counts as present when its command is found.
NEEDED=("etcd-server:etcd" "iptables:iptables" "prometheus:prometheus" "chromium:chromium")

missing=()
for entry in "${NEEDED[@]}"; do
    pkg=${entry%%:*}
    cmd=${entry#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/bin/$cmd" ] \
        && [ ! -x "/usr/sbin/$cmd" ]; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system-deps: missing ${missing[*]} (install as root: apt-get install" \
         "${missing[*]}); the tests that need it will be skipped"
    exit 0
fi

echo "ensure-system-deps: installing ${missing[*]} with apt-get"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }
if ! install; then
    # The package lists may be missing or stale (a fresh machine): refresh once, retry.
    if ! { apt-get update -q >>"$log" 2>&1 && install; }; then
        echo "ensure-system-deps: could not install ${missing[*]}; the tests that need it" \
             "will be skipped. Last lines of apt-get's output:"
        tail -n 5 "$log" | sed 's/^/    /'
    fi
fi
exit 0

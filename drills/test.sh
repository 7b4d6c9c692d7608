#!/usr/bin/env bash
# Whole-chain failure drills (drills/drills.py). Run as root from anywhere:  drills/test.sh
# Needs: python3, Prometheus 2.42 (Debian `prometheus`), Alertmanager 0.25 (`prometheus-alertmanager`), iproute2,
# util-linux, systemd, dbus, a Go toolchain (`golang-go`), and the nodesleuth binary as $NODESLEUTH_BIN (default
# target/release/nodesleuth of the repository; it must have `doctor` and `relay`).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export NODESLEUTH_BIN=${NODESLEUTH_BIN:-$ROOT/target/release/nodesleuth}
for tool in python3 prometheus prometheus-alertmanager ip unshare busctl dbus-daemon go; do
  command -v "$tool" >/dev/null || {
    echo "FAIL - missing tool: $tool (Debian: prometheus, prometheus-alertmanager, iproute2, util-linux, systemd, dbus, golang-go)"
    exit 1
  }
done
[ "$(id -u)" = 0 ] || { echo "FAIL - run as root"; exit 1; }
# the drills print "drills: N passed, M failed" and exit non-zero on any failure
out=$(mktemp /tmp/nodesleuth-drills.XXXXXX)
trap 'rm -f "$out"' EXIT
python3 "$HERE/drills.py" | tee "$out"
summary=$(tail -n 1 "$out")
passed=$(sed -n 's/^drills: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' <<<"$summary")
failed=$(sed -n 's/^drills: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' <<<"$summary")
[ -n "$passed" ] && [ "$failed" = 0 ] || { echo "FAIL - drills: $summary"; exit 1; }
echo "$passed passed, 0 failed"

#!/usr/bin/env bash
# Tests of the Grafana dashboards. Run as root from anywhere:
#
#   dashboards/test.sh            # static checks, then the live run against Prometheus
#
# Static: dist/ and LAYOUT.md equal a fresh `python3 dashboards/generate.py`; schema (copy in tests/) and lint,
# each lint check shown to fail on a broken copy; thresholds against rules/dist/nodesleuth.rules.yaml.
# Live: real Prometheus 2.42 + two real nodesleuth exporters ($NODESLEUTH_BIN; IPVS fixture tree and live /proc
# with CLOSE_WAIT sockets in a network namespace, a MADV_FREE hog, a systemd sandbox and a writer stuck on a terminal
# in a pod) + node_exporter; every panel query is run. The exporter must have the output collector (issue 12).
# Needs: python3 with PyYAML and jsonschema, prometheus, prometheus-node-exporter, iproute2 (ip), cc, util-linux
# (unshare, nsenter), systemd and dbus (the systemd sandbox).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
export NODESLEUTH_BIN="${NODESLEUTH_BIN:-$root/target/release/nodesleuth}"
case "$NODESLEUTH_BIN" in /*) ;; *) NODESLEUTH_BIN="$root/$NODESLEUTH_BIN" ;; esac

die() { echo "dashboards/test.sh: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (the live test creates a network namespace)"
for tool in python3 prometheus prometheus-node-exporter ip cc unshare nsenter busctl systemd-run dbus-daemon; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian packages: python3 prometheus prometheus-node-exporter iproute2 gcc util-linux systemd dbus)"
done
for f in /lib/systemd/systemd /lib/systemd/system/dbus.socket /lib/systemd/system/dbus.service; do
    [ -e "$f" ] || die "$f is missing (Debian packages systemd, dbus)"
done
prometheus --version 2>&1 | head -1 | grep -q 'version 2\.' || die "prometheus 2.x expected: $(prometheus --version 2>&1 | head -1)"
python3 -c 'import yaml, jsonschema' 2>/dev/null || die "python3 modules yaml and jsonschema are missing (python3-yaml python3-jsonschema)"
[ -x "$NODESLEUTH_BIN" ] || die "exporter binary $NODESLEUTH_BIN missing (cargo build --release, or set NODESLEUTH_BIN)"

cd "$here/tests"
exec python3 test_dashboards.py static live

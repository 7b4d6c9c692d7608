#!/usr/bin/env bash
# Tests of the alert-rule library (rules/). Run as root from anywhere:  rules/test.sh
# Needs: python3 (PyYAML, jsonschema), promtool 2.42 (Debian `prometheus`), amtool + alertmanager 0.25 (Debian
# `prometheus-alertmanager`), prometheus 2.42, iproute2, cc; and the exporter binary as $NODESLEUTH_BIN
# (default target/release/nodesleuth of the repository).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export NODESLEUTH_BIN=${NODESLEUTH_BIN:-$ROOT/target/release/nodesleuth}
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }

for tool in python3 promtool amtool prometheus prometheus-alertmanager ip cc; do
  command -v "$tool" >/dev/null || { echo "FAIL - missing tool: $tool (install Debian prometheus, prometheus-alertmanager, iproute2, gcc)"; exit 1; }
done
python3 -c 'import yaml, jsonschema' || { echo "FAIL - python3 needs PyYAML and jsonschema (python3-yaml, python3-jsonschema)"; exit 1; }

WORK=$(mktemp -d /tmp/nodesleuth-rules.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# 1. the shipped files are exactly what the source renders (and the README's alert table too); nothing is written
mkdir -p "$WORK/fresh"
python3 "$HERE/render.py" --out "$WORK/fresh"
if out=$(python3 "$HERE/render.py" --check 2>&1); then ok "rules/dist and the README alert table are a fresh render of rules/alerts.py"; else
  bad "$out"; diff -ru "$HERE/dist" "$WORK/fresh" | head -40 || true; fi
# the check can fail: a changed threshold makes the shipped files stale
printf '[alerts.NodesleuthTCPCloseWaitPileUp]\nthreshold = 101\n' >"$WORK/changed.toml"
if python3 "$HERE/render.py" --config "$WORK/changed.toml" --check 2>/dev/null; then bad "render --check accepted stale files"; else ok "render --check detects a stale render"; fi
# determinism
python3 "$HERE/render.py" --out "$WORK/fresh2"
if diff -r "$WORK/fresh" "$WORK/fresh2" >/dev/null; then ok "render is deterministic"; else bad "two renders differ"; fi

# 2. promtool check rules (lint included) on every rendered rule file: shipped, all groups, and the PrometheusRule spec
mkdir -p "$WORK/all"
python3 "$HERE/render.py" --config "$HERE/tests/all-groups.toml" --out "$WORK/all"
for f in "$HERE/dist/nodesleuth.rules.yaml" "$WORK/all/nodesleuth.rules.yaml"; do
  if out=$(promtool check rules --lint=all --lint-fatal "$f" 2>&1); then ok "promtool check rules --lint=all: ${f#"$WORK"/}"; else bad "promtool: $f: $out"; fi
done
for src in "$HERE/dist" "$WORK/all"; do
  n=$(basename "$src")
  python3 -c 'import sys, yaml; print(yaml.safe_dump({"groups": yaml.safe_load(open(sys.argv[1]))["spec"]["groups"]}, allow_unicode=True))' \
    "$src/nodesleuth.prometheusrule.yaml" >"$WORK/pr-$n.yaml"
  if out=$(promtool check rules --lint=all --lint-fatal "$WORK/pr-$n.yaml" 2>&1); then ok "promtool check rules: PrometheusRule spec ($n)"; else bad "promtool: PrometheusRule spec ($n): $out"; fi
done
# the inhibit rules inside a minimal Alertmanager configuration
{ printf 'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n'; cat "$HERE/dist/alertmanager-inhibit-rules.yaml"; } >"$WORK/am.yml"
if out=$(amtool check-config "$WORK/am.yml" 2>&1); then ok "amtool check-config accepts the inhibit rules"; else bad "amtool: $out"; fi

# 3. promtool unit tests of every alert
cp "$HERE"/tests/promtool/*.test.yaml "$WORK/all/"
if out=$(cd "$WORK/all" && promtool test rules ./*.test.yaml 2>&1); then ok "promtool test rules: $(ls "$HERE"/tests/promtool/*.test.yaml | wc -l) files"; else bad "promtool test rules: $out"; fi

# 4. CRD schema, coverage, configuration (python)
if python3 "$HERE/tests/check_static.py" "$WORK/all" "$HERE/tests/promtool" | tee "$WORK/static.log"; then
  ok "static checks ($(grep -c '^ok' "$WORK/static.log") sub-checks)"
else
  bad "static checks"
fi

# 5. inhibition with the real Alertmanager
if [ "${RULES_SKIP_LIVE:-}" != 1 ]; then
  if python3 "$HERE/tests/inhibit_test.py" "$HERE/dist/alertmanager-inhibit-rules.yaml"; then ok "inhibition with the real Alertmanager"; else bad "inhibition with the real Alertmanager"; fi
fi

# 6. alerts that really fire: real Prometheus 2.42, the real exporter, real sockets / memory / systemd
if [ "${RULES_SKIP_LIVE:-}" != 1 ]; then
  if python3 "$HERE/tests/live_test.py"; then ok "alerts fire for real (Prometheus + exporter)"; else bad "alerts that really fire"; fi
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]

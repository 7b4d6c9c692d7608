#!/usr/bin/env bash
# Runs every test of nodesleuth, as CI does, on a fresh Debian 12 machine. Run as root from anywhere:
#
#   tests/run-all.sh
#
# It installs what the tests need (Debian packages via apt-get; cargo-fuzz via cargo), then runs: formatting and
# lint checks, every unit and end-to-end test of the workspace (fixture trees with golden files, real sockets in
# real network namespaces, the real Alertmanager against fake robots), the rule library, dashboard and deploy tests
# (real Prometheus, Alertmanager, buildah, kubectl kustomize) against a release build, and a bounded fuzz run of
# every parser.
# Nothing is skipped when a tool is missing: a missing tool is a failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step() { printf '\n==> [%4ds] %s\n' "$SECONDS" "$*"; }
die() { echo "run-all: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the tests create network namespaces and install Debian packages"
command -v cargo >/dev/null || die "cargo is not installed (Rust toolchain required)"

# Debian packages: promtool (prometheus), the benchmark peers, Alertmanager for the relay tests, iproute2 for
# `ip netns`, python3 for socket holders, g++ for libFuzzer, systemd and dbus for the real-systemd sandbox,
# openssl and curl for the TLS test, golang-go for the failure drills' Go service (drills/); clang and libbpf-dev to
# check the committed BPF object against its source, bpftool to inspect its maps, libelf-dev/zlib1g-dev/pkg-config to
# build the BPF loader (libbpf).
packages=(prometheus prometheus-node-exporter prometheus-alertmanager prometheus-process-exporter iproute2 util-linux
          python3 g++ curl openssl systemd dbus buildah binutils tar golang-go
          clang libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in promtool prometheus-node-exporter prometheus-alertmanager prometheus-process-exporter amtool ip unshare \
            nsenter setpriv python3 cc c++ clang bpftool curl openssl dbus-daemon busctl systemd-run systemctl buildah \
            kubectl prometheus go; do
    command -v "$tool" >/dev/null || die "$tool is still missing after installing packages"
done
[ -x /lib/systemd/systemd ] || die "/lib/systemd/systemd is missing (package systemd)"
# The rule, dashboard and deploy tests read YAML and validate JSON schemas.
if ! python3 -c 'import yaml, jsonschema' 2>/dev/null; then
    step "installing Python modules: pyyaml jsonschema"
    python3 -m pip install --quiet pyyaml jsonschema
fi
python3 -c 'import yaml, jsonschema' || die "python3 modules yaml and jsonschema are still missing"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The workspace build turns on dev-dependency features (the IPVS writers); lint the production parser build too.
cargo clippy -p nodesleuth-parse --lib --quiet -- -D warnings

step "cargo test (unit, fixture/golden, real-kernel and relay end-to-end tests)"
cargo test --workspace --no-fail-fast

step "release build of the binary the rule, dashboard and deploy tests run"
cargo build --release -p nodesleuth --bin nodesleuth --quiet
export NODESLEUTH_BIN="$root/target/release/nodesleuth"

# The area tests (real Prometheus, Alertmanager, buildah, kustomize) mostly wait on clocks: they run in parallel with
# each other and with the fuzz run, each into its own log, printed in full when it fails.
area_tests=(rules/test.sh dashboards/test.sh deploy/test.sh drills/test.sh)
logs="$(mktemp -d)"
declare -A pids=()
for t in "${area_tests[@]}"; do
    [ -x "$t" ] || die "$t is missing or not executable"
    name="${t%%/*}"
    step "starting $t in the background (log: $logs/$name.log)"
    "$t" >"$logs/$name.log" 2>&1 &
    pids[$name]=$!
done

step "fuzz smoke run (FUZZ_SECONDS=${FUZZ_SECONDS:-20} per target)"
tests/fuzz-smoke.sh

failed=()
for name in "${!pids[@]}"; do
    if wait "${pids[$name]}"; then
        step "$name/test.sh passed: $(tail -n 1 "$logs/$name.log")"
    else
        step "$name/test.sh FAILED; its log:"
        cat "$logs/$name.log"
        failed+=("$name")
    fi
done
((${#failed[@]} == 0)) || die "area tests failed: ${failed[*]}"

step "all tests passed"

#!/usr/bin/env bash
# Fuzz smoke run: every cargo-fuzz target in fuzz/fuzz_targets/ for a bounded time each.
#
#   tests/fuzz-smoke.sh                 # 20 s per target
#   FUZZ_SECONDS=600 tests/fuzz-smoke.sh ipvs_conn   # longer, one target
#
# Works on stable Rust: targets are built with `--sanitizer none` (AddressSanitizer needs nightly's -Zsanitizer;
# the parsers are safe Rust, so libFuzzer's coverage guidance plus Rust's own panics/overflow checks do the work).
# Installs cargo-fuzz if it is missing. Fails on a crash, a timeout, a target missing from fuzz/Cargo.toml, or a
# missing tool. Corpora grow in fuzz/corpus/<target> (git-ignored), seeded from fuzz/seeds/<target>, with the
# libFuzzer dictionary fuzz/dicts/<target>.dict or fuzz/dicts/<prefix>.dict (ipvs_conn -> ipvs.dict); a crashing
# input is saved in fuzz/artifacts/<target>/ and its path printed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz="$root/fuzz"
seconds="${FUZZ_SECONDS:-20}"
target_dir="${FUZZ_TARGET_DIR:-$fuzz/target}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

die() {
    echo "fuzz-smoke: FAILED: $*" >&2
    exit 1
}

[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive number of seconds, got '$seconds'"
command -v cargo >/dev/null || die "cargo is not installed"
command -v c++ >/dev/null || die "a C++ compiler (c++) is needed to build libFuzzer: apt-get install -y g++"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is missing, installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked || die "could not install cargo-fuzz"
    cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz installed but 'cargo fuzz' does not run"
fi

cd "$fuzz"
shopt -s nullglob
all=()
for f in fuzz_targets/*.rs; do
    all+=("$(basename "$f" .rs)")
done
((${#all[@]} > 0)) || die "no fuzz targets in $fuzz/fuzz_targets"
registered="$(cargo fuzz list)" || die "cargo fuzz list failed"
for t in "${all[@]}"; do
    grep -qx -- "$t" <<<"$registered" || die "fuzz_targets/$t.rs has no [[bin]] entry in fuzz/Cargo.toml"
done
if (($# > 0)); then
    targets=("$@")
else
    targets=("${all[@]}")
fi

echo "fuzz-smoke: building ${#all[@]} targets (cargo-fuzz $(cargo fuzz --version | awk '{print $2}'), sanitizer none)"
cargo fuzz build --sanitizer none --target-dir "$target_dir" || die "cargo fuzz build failed"

passed=0
failed=0
for t in "${targets[@]}"; do
    grep -qx -- "$t" <<<"$registered" || die "unknown target '$t' (targets: ${all[*]})"
    corpora=("corpus/$t")
    mkdir -p "corpus/$t"
    [[ -d "seeds/$t" ]] && corpora+=("seeds/$t")
    # A dictionary: dicts/<target>.dict, else dicts/<prefix>.dict for targets named <prefix>_<what>.
    dict=()
    for d in "dicts/$t.dict" "dicts/${t%%_*}.dict"; do
        if [[ -f "$d" ]]; then
            dict=("-dict=$d")
            break
        fi
    done
    log="$(mktemp)"
    echo "fuzz-smoke: $t for ${seconds}s"
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds memory on the shared 2-core machine.
    if cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
        runs="$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
        cov="$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')"
        echo "fuzz-smoke: $t ok: ${runs:-?} inputs, coverage ${cov:-?} edges, corpus $(ls "corpus/$t" | wc -l) files"
        passed=$((passed + 1))
    else
        echo "fuzz-smoke: $t FAILED; last lines of its log:" >&2
        tail -n 40 "$log" >&2
        grep -Eo 'artifact_prefix=[^;]*; Test unit written to [^ ]+' "$log" >&2 || true
        echo "fuzz-smoke: reproduce with: (cd fuzz && cargo fuzz run --sanitizer none $t artifacts/$t/<file>)" >&2
        failed=$((failed + 1))
    fi
    rm -f "$log"
done

echo "fuzz-smoke: $passed passed, $failed failed"
((failed == 0))

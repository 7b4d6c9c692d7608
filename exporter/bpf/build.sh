#!/usr/bin/env bash
# Compiles tcp_state.bpf.c into the committed tcp_state.bpf.o (so `cargo build` needs no clang).
#   exporter/bpf/build.sh [OUTPUT]      (default: exporter/bpf/tcp_state.bpf.o)
# Needs Debian's clang (14) and libbpf-dev (bpf_helpers.h). Deterministic: fixed flags, compiled from inside this
# directory with the compilation directory recorded as ".", so no path of the building machine ends up in the
# object's debug info. exporter/tests/tcp_ebpf.rs runs this and compares the result with the committed object.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(realpath -m "${1:-$dir/tcp_state.bpf.o}")"
command -v clang >/dev/null || { echo "bpf/build.sh: clang is not installed (Debian package clang)" >&2; exit 1; }
[ -f /usr/include/bpf/bpf_helpers.h ] || { echo "bpf/build.sh: libbpf-dev is not installed" >&2; exit 1; }
cd "$dir"
clang -O2 -g -target bpf -mcpu=v3 -fdebug-compilation-dir=. -c tcp_state.bpf.c -o "$out"

#!/usr/bin/env bash
# Builds the nodesleuth container image from an already built release binary, FROM scratch, with buildah.
#
#   deploy/image/build.sh [BINARY] [TAG]
#     BINARY  default: $NODESLEUTH_BIN, else target/release/nodesleuth (cargo build --release -p nodesleuth)
#     TAG     default: nodesleuth:<workspace version>
#   Environment: BUILDAH_ROOT / BUILDAH_RUNROOT  storage of the image (default: buildah's own, /var/lib/containers);
#                OCI_OUT  also write the image as an OCI layout directory there (what the test unpacks);
#                KEEP_DEBUG=1  keep the binary's DWARF line tables (the release profile's `debug = "line-tables-only"`
#                quadruples the file); by default they are removed with `objcopy --strip-debug`, which keeps the
#                symbol table, so panic backtraces still name functions.
#
# The binary is linked dynamically against glibc. The image gets exactly what `ldd` lists, at the paths it lists
# (the loader at its PT_INTERP path), copied from this machine, so the image matches the machine that built the
# binary. A static (musl) build would need the x86_64-unknown-linux-musl target, which cannot be installed offline.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-${NODESLEUTH_BIN:-$root/target/release/nodesleuth}}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
tag="${2:-nodesleuth:$version}"
die() { echo "image/build.sh: $*" >&2; exit 1; }
command -v buildah >/dev/null || die "buildah is not installed (Debian package buildah)"
command -v ldd >/dev/null || die "ldd is not installed (Debian package libc-bin)"
[ -x "$bin" ] || die "$bin is not an executable (cargo build --release -p nodesleuth)"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/bin"
if [ "${KEEP_DEBUG:-0}" = 1 ]; then
    cp "$bin" "$ctx/rootfs/usr/bin/nodesleuth"
else
    command -v objcopy >/dev/null || die "objcopy is not installed (Debian package binutils), or set KEEP_DEBUG=1"
    objcopy --strip-debug "$bin" "$ctx/rootfs/usr/bin/nodesleuth"
fi
chmod 0755 "$ctx/rootfs/usr/bin/nodesleuth"
# `ldd` lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)";
# linux-vdso has no file. A "not found" library is an error.
if ldd "$bin" | grep -q 'not found'; then die "$(ldd "$bin" | grep 'not found')"; fi
libs="$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)"
[ -n "$libs" ] || die "ldd lists no libraries for $bin (a static binary needs none: remove this check)"
for lib in $libs; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
echo "image/build.sh: libraries: $(echo $libs)" >&2

storage=(--storage-driver vfs)
[ -n "${BUILDAH_ROOT:-}" ] && storage+=(--root "$BUILDAH_ROOT")
[ -n "${BUILDAH_RUNROOT:-}" ] && storage+=(--runroot "$BUILDAH_RUNROOT")
buildah "${storage[@]}" bud --quiet --isolation chroot --layers=false \
    --label "org.opencontainers.image.version=$version" \
    -f "$root/deploy/image/Containerfile" -t "$tag" "$ctx" >/dev/null
if [ -n "${OCI_OUT:-}" ]; then
    buildah "${storage[@]}" push --quiet "$tag" "oci:$OCI_OUT" >/dev/null
fi
echo "$tag"

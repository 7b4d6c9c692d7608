#!/usr/bin/env bash
# deploy/ test: generated files, manifests, image, least privilege. Run as root from anywhere:
#
#   deploy/test.sh                                  # NODESLEUTH_BIN defaults to target/release/nodesleuth
#
# 1. render.py: the committed generated files equal a fresh render of rules/dist and dashboards/dist; its error
#    paths (missing inputs, a stale file) fail as they should.
# 2. `kubectl kustomize` of deploy/kubernetes and of the example overlay, validated strictly against the Kubernetes
#    1.29 schemas and the Prometheus Operator CRDs in deploy/tests/schemas/, plus cross-object checks
#    (deploy/tests/validate.py); the plain alertmanager.yml through `amtool check-config`.
# 3. The image: built FROM scratch with buildah (vfs storage under a temp dir), pushed to an OCI layout, its layer
#    unpacked; only the binary and its libraries inside; `nodesleuth --version` and `relay --check-config` run
#    chrooted in it; its size printed.
# 4. Least privilege (deploy/tests/leastpriv.py): the exporter from that root filesystem, with the DaemonSet's
#    mounts, args and capabilities, in a simulated node (PID + network namespace), against a foreign network
#    namespace, a MADV_FREE process and a real systemd; then with all of root's capabilities, with NET_ADMIN, under
#    a runtime's default seccomp profile, without each capability. The capability table it prints must be the one
#    in deploy/README.md.
#
# Needs: buildah (and its golang-github-containers-common seccomp profile, libseccomp2), kubectl (kustomize), python3
# with PyYAML and jsonschema, amtool (prometheus-alertmanager), iproute2, util-linux (unshare, nsenter, setpriv),
# curl, cc, objcopy (binutils), systemd, dbus, tar. Leaves nothing behind (trap cleanup).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
bin="${NODESLEUTH_BIN:-target/release/nodesleuth}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac

die() { echo "deploy/test.sh: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (network namespaces, mounts, chroot, capabilities)"
for tool in buildah kubectl python3 amtool ip unshare nsenter setpriv curl cc tar busctl dbus-daemon ldd objcopy; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian packages: buildah kubectl prometheus-alertmanager iproute2 util-linux curl gcc binutils systemd dbus)"
done
[ -x /lib/systemd/systemd ] || die "/lib/systemd/systemd is missing (Debian package systemd)"
# The default seccomp profile of CRI-O and Podman (golang-github-containers-common, a dependency of buildah); the
# least-privilege test runs the exporter under it as seccompProfile: RuntimeDefault would.
seccomp_profile=/usr/share/containers/seccomp.json
[ -f "$seccomp_profile" ] || die "$seccomp_profile is missing (Debian package golang-github-containers-common, installed with buildah)"
python3 -c 'import ctypes.util, sys; sys.exit(ctypes.util.find_library("seccomp") is None)' || die "libseccomp is missing (Debian package libseccomp2)"
python3 -c 'import yaml, jsonschema, referencing' 2>/dev/null || die "python3 needs PyYAML and jsonschema (python3-yaml python3-jsonschema)"
[ -x "$bin" ] || die "$bin is not an executable: build it (cargo build --release -p nodesleuth) or set NODESLEUTH_BIN"

tmp="$(mktemp -d /tmp/nsl-deploy.XXXXXX)"
storage=(--storage-driver vfs --root "$tmp/storage" --runroot "$tmp/run")
cleanup() {
    buildah "${storage[@]}" rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
# Adds the "N passed, M failed" summary of a sub-test to the totals.
tally() {
    local line
    line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n1)" || { bad "$2: no summary line"; return; }
    pass=$((pass + ${line%% passed*}))
    local f="${line#*passed, }"
    fail=$((fail + ${f%% failed}))
}

echo "==> generated files"
if python3 deploy/render.py --check; then ok "committed generated files equal a fresh render"; else bad "generated files are stale (python3 deploy/render.py)"; fi
# render.py without its inputs: a clear error, no output.
mkdir -p "$tmp/bare/deploy"
cp deploy/render.py "$tmp/bare/deploy/"
if out="$(python3 "$tmp/bare/deploy/render.py" 2>&1)"; then bad "render.py without rules/ and dashboards/ succeeded"
elif grep -q "missing input(s): rules/dist/nodesleuth.prometheusrule.yaml, rules/dist/alertmanager-inhibit-rules.yaml, dashboards/dist" <<<"$out" \
     && [ ! -e "$tmp/bare/deploy/kubernetes" ]; then ok "render.py without its inputs names them and writes nothing"
else bad "render.py without inputs: unclear error: $out"; fi
# A hand edit of a generated file is caught.
mkdir -p "$tmp/stale"
cp -r deploy rules dashboards "$tmp/stale/"
echo "# hand edit" >>"$tmp/stale/deploy/kubernetes/exporter/generated/prometheusrule.yaml"
if python3 "$tmp/stale/deploy/render.py" --check 2>/dev/null; then bad "render.py --check missed a hand-edited file"
else ok "render.py --check fails on a hand-edited generated file"; fi
# Deterministic: two renders are byte-identical.
python3 deploy/render.py --out "$tmp/r1" && python3 deploy/render.py --out "$tmp/r2"
if diff -r "$tmp/r1" "$tmp/r2" >/dev/null; then ok "render.py is deterministic"; else bad "render.py output differs between runs"; fi
# The standard-library YAML subset reader agrees with PyYAML on the real inhibit rules and on tricky spellings.
if python3 deploy/tests/render_yaml_check.py; then ok "render.py's YAML reader agrees with PyYAML"; else bad "render.py's YAML reader disagrees with PyYAML"; fi

echo "==> manifests"
kubectl kustomize deploy/kubernetes >"$tmp/rendered.yaml"
kubectl kustomize deploy/examples/existing-release >"$tmp/overlay.yaml"
python3 deploy/tests/validate.py "$root" "$tmp/rendered.yaml" "$tmp/overlay.yaml" | tee "$tmp/validate.log" || true
tally "$tmp/validate.log" validate.py
if amtool check-config deploy/alertmanager/alertmanager.yml >"$tmp/amtool.log" 2>&1; then ok "amtool check-config deploy/alertmanager/alertmanager.yml"
else bad "amtool check-config: $(cat "$tmp/amtool.log")"; fi

echo "==> image"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
BUILDAH_ROOT="$tmp/storage" BUILDAH_RUNROOT="$tmp/run" OCI_OUT="$tmp/oci" deploy/image/build.sh "$bin" "nodesleuth:$version" >/dev/null
ok "image nodesleuth:$version built FROM scratch with buildah"
manifest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "$tmp/oci/index.json")"
mkdir -p "$tmp/rootfs"
compressed=0
for layer in $(python3 -c 'import json,sys; [print(l["digest"].split(":")[1], l["size"]) for l in json.load(open(sys.argv[1]))["layers"]]' "$tmp/oci/blobs/sha256/$manifest" | tr ' ' ':'); do
    tar -xzf "$tmp/oci/blobs/sha256/${layer%%:*}" -C "$tmp/rootfs"
    compressed=$((compressed + ${layer##*:}))
done
config="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["digest"].split(":")[1])' "$tmp/oci/blobs/sha256/$manifest")"
entry="$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["config"]; print(c["Entrypoint"], c.get("User"))' "$tmp/oci/blobs/sha256/$config")"
[ "$entry" = "['/usr/bin/nodesleuth'] 65534:65534" ] && ok "image entrypoint /usr/bin/nodesleuth, user 65534" || bad "image config: $entry"
expected="$( (echo usr/bin/nodesleuth; ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print substr($3, 2)} $1 ~ /^\// {print substr($1, 2)}') | sort -u)"
actual="$(cd "$tmp/rootfs" && find . \( -type f -o -type l \) | sed 's#^\./##' | sort)"
if [ "$expected" = "$actual" ]; then ok "image holds only the binary and the $(($(wc -l <<<"$expected") - 1)) files ldd lists: no shell, no package manager"
else bad "image content differs from binary + ldd: $(diff <(echo "$expected") <(echo "$actual") | tr '\n' ' ')"; fi
[ ! -e "$tmp/rootfs/bin/sh" ] && [ ! -e "$tmp/rootfs/usr/bin/sh" ] && ok "no /bin/sh in the image" || bad "a shell is in the image"
objcopy --strip-debug "$bin" "$tmp/stripped"
cmp -s "$tmp/stripped" "$tmp/rootfs/usr/bin/nodesleuth" && ok "image binary is \$NODESLEUTH_BIN without DWARF ($(($(stat -c %s "$bin") / 1048576)) -> $(($(stat -c %s "$tmp/stripped") / 1048576)) MiB)" || bad "image binary differs from \$NODESLEUTH_BIN"
v="$(chroot "$tmp/rootfs" /usr/bin/nodesleuth --version 2>&1)" || true
if grep -q "$version" <<<"$v"; then ok "nodesleuth --version in the image: $v"; else bad "nodesleuth --version in the image: $v"; fi
if out="$(chroot "$tmp/rootfs" /usr/bin/nodesleuth --collector.bogus-flag 2>&1)"; then bad "the binary accepted an unknown flag"
elif grep -q "unexpected argument '--collector.bogus-flag'" <<<"$out"; then ok "the binary rejects an unknown flag (so the DaemonSet's args, which start it in leastpriv.py, are checked)"
else bad "unknown flag: unexpected answer: $out"; fi
size_unpacked="$(du -sb "$tmp/rootfs" | cut -f1)"
echo "# image size: $((compressed / 1024)) KiB compressed layer, $((size_unpacked / 1024)) KiB unpacked ($(buildah "${storage[@]}" images --format '{{.Size}}' "nodesleuth:$version") as buildah reports it)"

# The relay as the Deployment runs it: uid 65534, no capabilities, read-only root; its ConfigMap at its mountPath
# and the Secret template's keys as files at theirs; --check-config loads config, secrets and templates.
python3 deploy/tests/relay_files.py "$tmp/rendered.yaml" deploy/kubernetes/relay/secret.template.yaml "$tmp/relaycfg"
mkdir -p "$tmp/rtools"
cp "$(command -v setpriv)" "$tmp/rtools/"
cp "$(ldd "$(command -v setpriv)" | awk '/libcap-ng/ {print $3}')" "$tmp/rtools/"
cp -a "$tmp/rootfs" "$tmp/relayroot"
script='set -eu
R="$1"; shift
mkdir -p "$R/.testtools" "$R/proc"
mount --bind "$R" "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
while read -r src dst; do mkdir -p "$R$dst"; mount --bind "$src" "$R$dst"; mount -o remount,bind,ro "$R$dst"; done <"$MOUNTS"
mount --bind "$TOOLS" "$R/.testtools"
mount -o remount,bind,ro "$R"
exec unshare --root="$R" /lib64/ld-linux-x86-64.so.2 --library-path /.testtools /.testtools/setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all --ambient-caps=-all --bounding-set=-all -- /usr/bin/nodesleuth "$@"'
mapfile -t rargs <"$tmp/relaycfg/args"
if out="$(MOUNTS="$tmp/relaycfg/mounts" TOOLS="$tmp/rtools" unshare --mount --propagation private sh -c "$script" sh "$tmp/relayroot" "${rargs[@]}" --check-config 2>&1)"; then
    ok "relay --check-config in the image as uid 65534 without capabilities (config + Secret template)"
else bad "relay --check-config in the image: $out"; fi
# ... and the same check fails when a secret the config names is missing (the check can fail).
rm "$tmp/relaycfg/secrets/wecom-url"
if out="$(MOUNTS="$tmp/relaycfg/mounts" TOOLS="$tmp/rtools" unshare --mount --propagation private sh -c "$script" sh "$tmp/relayroot" "${rargs[@]}" --check-config 2>&1)"; then
    bad "relay --check-config passed without the wecom-url secret"
elif grep -q "wecom-url" <<<"$out"; then ok "relay --check-config fails naming the missing secret file"
else bad "relay --check-config without a secret failed for another reason: $out"; fi

echo "==> least privilege"
python3 deploy/tests/leastpriv.py "$root" "$tmp/rootfs" "$tmp/rendered.yaml" "$tmp/captable.md" "$seccomp_profile" | tee "$tmp/leastpriv.log" || true
tally "$tmp/leastpriv.log" leastpriv.py
if [ -s "$tmp/captable.md" ]; then
    missing="$(grep '^|' "$tmp/captable.md" | while IFS= read -r line; do grep -qxF -- "$line" deploy/README.md || echo "$line"; done)"
    if [ -z "$missing" ]; then ok "deploy/README.md shows the capability table this run measured"
    else bad "deploy/README.md's capability table is not what this run measured; missing rows:"$'\n'"$missing"; fi
else bad "leastpriv.py wrote no capability table"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

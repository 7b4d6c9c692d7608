#!/usr/bin/env python3
"""Runs a command under a container runtime's default seccomp profile, as `seccompProfile: RuntimeDefault` would:

    seccomp_exec.py PROFILE.json CAP1,CAP2,... -- COMMAND [ARG...]

PROFILE is an OCI/containers seccomp profile (deploy/test.sh uses /usr/share/containers/seccomp.json, the default
profile of CRI-O and Podman, from the Debian package golang-github-containers-common that buildah pulls in). Rules
are selected the way the runtime selects them for a container with the given capabilities (`includes`/`excludes`
by capability and architecture); the filter is loaded through libseccomp (ctypes, no build step) with
no_new_privs, and is inherited by COMMAND and everything it starts.
"""

import ctypes
import ctypes.util
import json
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
            "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


def errno_action(n: int) -> int:
    return 0x00050000 | (n & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def main() -> int:
    profile_path, caps = sys.argv[1], {c if c.startswith("CAP_") else "CAP_" + c
                                       for c in sys.argv[2].split(",") if c}
    if sys.argv[3] != "--":
        sys.exit("usage: seccomp_exec.py PROFILE CAPS -- COMMAND...")
    cmd = sys.argv[4:]
    profile = json.load(open(profile_path))
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO", profile["defaultAction"]
    default = errno_action(profile.get("defaultErrnoRet", 1))
    ctx = lib.seccomp_init(default)
    if not ctx:
        sys.exit("seccomp_init failed")
    added = skipped = 0
    for rule in profile["syscalls"]:
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if inc.get("arches") and not {"amd64", "x86_64"} & set(inc["arches"]):
            continue
        if inc.get("caps") and not set(inc["caps"]) <= caps:
            continue
        if exc.get("caps") and set(exc["caps"]) & caps:
            continue
        if inc.get("minKernel"):
            pass  # every kernel this runs on is newer than the profile's minimums
        if rule["action"] == "SCMP_ACT_ALLOW":
            action = SCMP_ACT_ALLOW
        elif rule["action"] == "SCMP_ACT_ERRNO":
            action = errno_action(rule.get("errnoRet", 1))
        else:
            sys.exit(f"unsupported action {rule['action']}")
        if action == default:
            continue
        args = rule.get("args") or []
        arr = (ArgCmp * max(1, len(args)))(*[ArgCmp(a["index"], SCMP_CMP[a["op"]], a["value"], a.get("valueTwo", 0))
                                               for a in args])
        for name in rule["names"]:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                skipped += 1  # not a syscall of this architecture
                continue
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(args), arr)
            # -EEXIST: the syscall already has a rule from an earlier entry (the runtime keeps the first as well).
            if rc == 0:
                added += 1
            elif rc != -17:
                sys.exit(f"seccomp_rule_add {name}: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        sys.exit(f"seccomp_load: {os.strerror(-rc)}")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Lays out the relay Deployment's volumes for deploy/test.sh: for each volumeMount, a directory with the
ConfigMap's keys (from the rendered manifests) or the Secret template's keys as files, and two lists: `mounts`
(`<dir> <mountPath>` per line) and `args` (the container args, one per line).

    relay_files.py RENDERED.yaml SECRET_TEMPLATE.yaml OUTDIR
"""

import sys
from pathlib import Path

import yaml
import yamlcompat  # noqa: F401

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
tpl = yaml.safe_load(open(sys.argv[2]))
out = Path(sys.argv[3])
dep = [d for d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
c = dep["containers"][0]
vols = {v["name"]: v for v in dep["volumes"]}
cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
mounts = []
for m in c["volumeMounts"]:
    v = vols[m["name"]]
    src = out / m["name"]
    src.mkdir(parents=True)
    if "configMap" in v:
        data = cms[v["configMap"]["name"]]["data"]
    elif v.get("secret", {}).get("secretName") == tpl["metadata"]["name"]:
        data = tpl["stringData"]
    else:
        sys.exit(f"relay_files.py: volume {m['name']} is neither the ConfigMap nor the Secret")
    for k, val in data.items():
        (src / k).write_text(val)
    mounts.append(f"{src} {m['mountPath']}")
(out / "mounts").write_text("\n".join(mounts) + "\n")
(out / "args").write_text("\n".join(c["args"]) + "\n")

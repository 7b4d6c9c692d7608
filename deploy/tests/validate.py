#!/usr/bin/env python3
"""Validates the manifests as `kubectl kustomize` renders them, against the Kubernetes 1.29 strict schemas and the
Prometheus Operator CRDs copied under deploy/tests/schemas/, and cross-checks the objects against each other and
the generators. Run by deploy/test.sh:

    validate.py REPO_ROOT RENDERED.yaml OVERLAY.yaml

Prints one line per check (`ok ...` / `FAIL ...`) and a final `N passed, M failed`; exits 1 on any failure.
"""

import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml
import yamlcompat  # noqa: F401  (kubectl's reading of a bare `=`)
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
K8S = SCHEMAS / "k8s-v1.29.0-local-strict"
CRDS = SCHEMAS / "prometheus-operator"

passed, failed = 0, 0


def check(name: str, ok: bool, detail: str = "") -> None:
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))


# ---------------------------------------------------------------------------------------------------------- schemas

K8S_FILES = {
    ("v1", "ConfigMap"): "configmap-v1.json",
    ("v1", "Secret"): "secret-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("v1", "ServiceAccount"): "serviceaccount-v1.json",
    ("apps/v1", "DaemonSet"): "daemonset-apps-v1.json",
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicy-networking-v1.json",
}
CRD_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): "monitoring.coreos.com_alertmanagerconfigs.yaml",
}

definitions = json.loads((K8S / "_definitions.json").read_text())
registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions, DRAFT202012))
OBJECT_META = {"$ref": definitions["$id"] + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


def strict(schema):
    """The CRD's OpenAPI schema made strict: an object with `properties` allows no other keys (the API server would
    prune them silently, so a typo such as `honorLabel` would otherwise pass)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(file: str, version: str) -> dict:
    crd = yaml.safe_load((CRDS / file).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            assert v["served"], f"{file}: {version} not served"
            s = strict(v["schema"]["openAPIV3Schema"])
            s["properties"]["metadata"] = OBJECT_META
            s["properties"].pop("status", None)
            s["required"] = sorted(set(s.get("required", [])) | {"spec"})
            return s
    raise SystemExit(f"{file}: no version {version}")


validators = {}


def validator(api: str, kind: str):
    key = (api, kind)
    if key not in validators:
        if key in K8S_FILES:
            schema = json.loads((K8S / K8S_FILES[key]).read_text())
            validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
        elif key in CRD_FILES:
            schema = crd_schema(CRD_FILES[key], api.split("/")[1])
            validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
        else:
            return None
    return validators[key]


def schema_errors(doc) -> list[str]:
    v = validator(doc.get("apiVersion"), doc.get("kind"))
    if v is None:
        return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


# ------------------------------------------------------------------------------------------------------ helpers


def selects(selector: dict, labels: dict) -> bool:
    """matchLabels/matchExpressions semantics (a plain map is treated as matchLabels)."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        has, val = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if op == "In" and val not in e["values"] or op == "NotIn" and val in e["values"]:
            return False
        if op == "Exists" and not has or op == "DoesNotExist" and has:
            return False
    return True


def duration(s: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", s):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def arg_value(args: list[str], flag: str):
    for a in args:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


# ------------------------------------------------------------------------------------------------------- checks


def main() -> int:
    root, rendered, overlay = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    kinds = sorted({d["kind"] for d in docs})
    print(f"# {len(docs)} objects: {', '.join(kinds)}")

    # 1. Every object validates strictly.
    for d in docs:
        errs = schema_errors(d)
        check(f"schema {d['kind']}/{d['metadata']['name']}", not errs, "; ".join(errs[:5]))
    # ... and the validator is not a rubber stamp: typical mistakes are rejected.
    ds = one(docs, "DaemonSet")
    sm = one(docs, "ServiceMonitor")
    amc = one(docs, "AlertmanagerConfig")
    mutations = {
        "unknown container key": (ds, lambda d: d["spec"]["template"]["spec"]["containers"][0].update(bogus=1)),
        "capability as a number": (ds, lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                                   ["capabilities"].update(add=[1])),
        "ServiceMonitor typo honorLabel": (sm, lambda d: d["spec"]["endpoints"][0].update(honorLabel=True)),
        "ServiceMonitor scrapeTimeout 10": (sm, lambda d: d["spec"]["endpoints"][0].update(scrapeTimeout=10)),
        "AlertmanagerConfig bad matchType": (amc, lambda d: d["spec"]["route"]["matchers"][0].update(matchType="==")),
        "metadata typo": (amc, lambda d: d["metadata"].update(lables={})),
    }
    for what, (doc, mutate) in mutations.items():
        bad = copy.deepcopy(doc)
        mutate(bad)
        check(f"schema rejects: {what}", bool(schema_errors(bad)))

    # 2. Names are unique per kind and namespace; everything lands in one namespace.
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    check("object names unique", len(keys) == len(set(keys)))
    namespaces = {d["metadata"].get("namespace") for d in docs}
    check("one namespace for every object", len(namespaces) == 1 and None not in namespaces, str(namespaces))

    # 3. DaemonSet.
    pod = ds["spec"]["template"]
    podspec = pod["spec"]
    c = one([{"kind": "c", "metadata": {"name": x["name"]}, **x} for x in podspec["containers"]], "c")
    labels = pod["metadata"]["labels"]
    check("DaemonSet selector selects its pods", selects(ds["spec"]["selector"], labels))
    sc = c["securityContext"]
    caps = sc["capabilities"]
    check("DaemonSet: hostPID, not hostNetwork/hostIPC", podspec.get("hostPID") is True
          and not podspec.get("hostNetwork") and not podspec.get("hostIPC"))
    check("DaemonSet: not privileged, no privilege escalation, read-only root",
          sc.get("privileged") is False and sc.get("allowPrivilegeEscalation") is False
          and sc.get("readOnlyRootFilesystem") is True)
    check("DaemonSet: capabilities drop ALL, add a small explicit set",
          caps.get("drop") == ["ALL"] and 0 < len(caps.get("add", [])) <= 4
          and all(re.fullmatch(r"[A-Z_]+", x) for x in caps["add"]), str(caps))
    check("DaemonSet: seccomp RuntimeDefault", podspec.get("securityContext", {}).get("seccompProfile")
          == {"type": "RuntimeDefault"})
    check("DaemonSet: system-node-critical, tolerates every taint, rolling update",
          podspec.get("priorityClassName") == "system-node-critical"
          and {"operator": "Exists"} in podspec.get("tolerations", [])
          and ds["spec"]["updateStrategy"]["type"] == "RollingUpdate")
    check("DaemonSet: no API token mounted", podspec.get("automountServiceAccountToken") is False)
    res = c.get("resources", {})
    check("DaemonSet: requests and a memory limit", {"cpu", "memory"} <= set(res.get("requests", {}))
          and "memory" in res.get("limits", {}))
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in podspec["volumes"]}
    check("DaemonSet: every mount read-only", all(m.get("readOnly") for m in mounts.values()))
    check("DaemonSet: every volume a mounted hostPath", set(mounts) == set(volumes)
          and all("hostPath" in v for v in volumes.values()))
    args = c["args"]
    host_to_mount = {volumes[n]["hostPath"]["path"]: m["mountPath"] for n, m in mounts.items()}
    check("--path.procfs is the host /proc mount", arg_value(args, "--path.procfs") == host_to_mount.get("/proc"))
    check("--path.rootfs/run/netns is the host /run/netns mount",
          (arg_value(args, "--path.rootfs") or "/").rstrip("/") + "/run/netns" == host_to_mount.get("/run/netns"))
    check("--path.pod-logs / --path.container-logs are the kubelet log mounts",
          arg_value(args, "--path.pod-logs") == host_to_mount.get("/var/log/pods")
          and arg_value(args, "--path.container-logs") == host_to_mount.get("/var/log/containers"))
    addr = arg_value(args, "--collector.systemd.address") or ""
    check("systemd address is a socket in the host D-Bus directory mount",
          addr.startswith("unix:path=") and str(Path(addr[len("unix:path="):]).parent) == host_to_mount.get("/var/run/dbus"))
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    listen = arg_value(args, "--web.listen-address") or ":9741"
    check("--web.listen-address port is the container's metrics port",
          int(listen.rsplit(":", 1)[1]) == port_names.get("metrics"), f"{listen} vs {port_names}")
    # That the binary accepts every arg is proven where the paths they name exist: deploy/tests/leastpriv.py starts
    # it with exactly these args in the DaemonSet's mount layout (the binary checks that path flags exist).
    version = re.search(r'^version = "(.*)"', (root / "Cargo.toml").read_text(), re.M).group(1)
    check("DaemonSet image tag is the workspace version", c["image"] == f"nodesleuth:{version}", c["image"])

    # 4. Service and ServiceMonitor.
    svc = one(docs, "Service", "nodesleuth")
    check("Service is headless", svc["spec"].get("clusterIP") == "None")
    check("Service selects the DaemonSet's pods", selects(svc["spec"]["selector"], labels))
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    check("Service targetPort names a container port",
          all(p["targetPort"] in port_names or p["targetPort"] in port_names.values() for p in svc_ports.values()))
    check("ServiceMonitor selects the Service", selects(sm["spec"]["selector"], svc["metadata"]["labels"]))
    ns_sel = sm["spec"].get("namespaceSelector")
    check("ServiceMonitor looks in its own namespace", ns_sel in (None, {}) or
          svc["metadata"]["namespace"] in ns_sel.get("matchNames", []) or ns_sel.get("any") is True)
    ep = sm["spec"]["endpoints"]
    check("ServiceMonitor has one endpoint naming an existing Service port",
          len(ep) == 1 and ep[0].get("port") in svc_ports, str([e.get("port") for e in ep]))
    ep = ep[0]
    check("ServiceMonitor honorLabels: true (namespace/pod/container of the owning pod survive)",
          ep.get("honorLabels") is True)
    timeout, interval = duration(ep["scrapeTimeout"]), duration(ep["interval"])
    ctimeout = duration(arg_value(args, "--collector.timeout") or "8s")
    check(f"scrapeTimeout {ep['scrapeTimeout']} fits --collector.timeout {ctimeout:g}s (+0.5s) and the interval",
          ctimeout + 0.5 <= timeout <= interval)
    check("ServiceMonitor relabels the node name into `node`", any(
        r.get("sourceLabels") == ["__meta_kubernetes_pod_node_name"] and r.get("targetLabel") == "node"
        and r.get("action", "replace") == "replace" for r in ep.get("relabelings", [])))
    check("ServiceMonitor carries a release label", "release" in sm["metadata"]["labels"])

    # 5. NetworkPolicies select the pods they protect and name real ports.
    for np in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        targets = [d for d in docs if d["kind"] in ("DaemonSet", "Deployment")
                   and selects(np["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"])]
        ok = len(targets) == 1
        if ok:
            cports = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            ok = all(p["port"] in cports for rule in np["spec"]["ingress"] for p in rule.get("ports", []))
        check(f"NetworkPolicy {np['metadata']['name']} selects one workload and names its ports", ok)
    relay_np = one(docs, "NetworkPolicy", "nodesleuth-relay")
    peers = [p for rule in relay_np["spec"]["ingress"] for p in rule["from"]]
    check("relay NetworkPolicy admits only Alertmanager pods", relay_np["spec"]["policyTypes"] == ["Ingress"]
          and peers and all(p.get("podSelector") == {"matchLabels": {"app.kubernetes.io/name": "alertmanager"}}
                            for p in peers))

    # 6. Relay: Deployment, Service, config, Secret template, AlertmanagerConfig.
    dep = one(docs, "Deployment", "nodesleuth-relay")
    dpod = dep["spec"]["template"]
    rc = dpod["spec"]["containers"][0]
    check("relay Deployment selector selects its pods", selects(dep["spec"]["selector"], dpod["metadata"]["labels"]))
    check("relay: 1 replica, Recreate (rate limit and de-duplication are per process)",
          dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate")
    rsc = rc["securityContext"]
    check("relay: non-root, no capabilities, read-only root, no escalation",
          dpod["spec"]["securityContext"].get("runAsNonRoot") is True
          and rsc["capabilities"] == {"drop": ["ALL"]} and rsc["readOnlyRootFilesystem"] is True
          and rsc["allowPrivilegeEscalation"] is False)
    rsvc = one(docs, "Service", "nodesleuth-relay")
    check("relay Service selects the relay pods", selects(rsvc["spec"]["selector"], dpod["metadata"]["labels"]))
    rports = {p["name"]: p["containerPort"] for p in rc["ports"]}
    check("relay Service targetPort names a container port",
          all(p["targetPort"] in rports for p in rsvc["spec"]["ports"]))
    rargs = rc["args"]
    check("relay container runs the relay subcommand", rargs[0] == "relay")
    rlisten = arg_value(rargs, "--web.listen-address")
    check("relay listens on its container port", rlisten and int(rlisten.rsplit(":", 1)[1]) == rports["http"])
    # The relay's args are run by deploy/test.sh (`--check-config` in the image, with the mounts).
    cm = one(docs, "ConfigMap", "nodesleuth-relay-config")
    rmounts = {m["name"]: m["mountPath"] for m in rc["volumeMounts"]}
    rvols = {v["name"]: v for v in dpod["spec"]["volumes"]}
    config_path = arg_value(rargs, "--config")
    cfg_vol = [n for n, v in rvols.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    check("relay --config is a key of the mounted ConfigMap", len(cfg_vol) == 1 and
          config_path == f"{rmounts[cfg_vol[0]]}/relay.yaml" and "relay.yaml" in cm["data"])
    secret_tpl = yaml.safe_load((root / "deploy/kubernetes/relay/secret.template.yaml").read_text())
    check("Secret template validates", not schema_errors(secret_tpl), "; ".join(schema_errors(secret_tpl)))
    sec_vol = [n for n, v in rvols.items() if v.get("secret", {}).get("secretName") == secret_tpl["metadata"]["name"]]
    relay_cfg = yaml.safe_load(cm["data"]["relay.yaml"])
    files = re.findall(r"\{file: ([^}]+)\}", cm["data"]["relay.yaml"])
    check("relay config reads every secret from the Secret's mount, keys the template has",
          len(sec_vol) == 1 and files and all(
              str(Path(f).parent) == rmounts[sec_vol[0]] and Path(f).name in secret_tpl["stringData"] for f in files),
          str(files))
    spec = amc["spec"]
    url = spec["receivers"][0]["webhookConfigs"][0]["url"]
    m = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)/alertmanager/([A-Za-z0-9_.-]+)", url)
    check("AlertmanagerConfig URL names the relay Service, its namespace, port and a configured target",
          bool(m) and m.group(1) == rsvc["metadata"]["name"] and m.group(2) == rsvc["metadata"]["namespace"]
          and int(m.group(3)) in [p["port"] for p in rsvc["spec"]["ports"]] and m.group(4) in relay_cfg["targets"],
          url)
    cred = spec["receivers"][0]["webhookConfigs"][0]["httpConfig"]["authorization"]["credentials"]
    token_file = relay_cfg["auth"]["bearer_token"]["file"]
    check("Alertmanager's bearer token is the Secret key the relay reads",
          cred["name"] == secret_tpl["metadata"]["name"] and cred["key"] == Path(token_file).name
          and cred["key"] in secret_tpl["stringData"])
    check("AlertmanagerConfig route points at its receiver", spec["route"]["receiver"] == spec["receivers"][0]["name"])
    dedup = duration(relay_cfg["server"]["dedup_window"])
    check("relay dedup_window between group_interval and repeat_interval",
          duration(spec["route"]["groupInterval"]) < dedup < duration(spec["route"]["repeatInterval"]))

    # 7. Generated objects equal their sources.
    rule_src = yaml.safe_load((root / "rules/dist/nodesleuth.prometheusrule.yaml").read_text())
    pr = one(docs, "PrometheusRule")
    check("PrometheusRule spec equals rules/dist", pr["spec"] == rule_src["spec"])
    check("PrometheusRule carries the ServiceMonitor's release label",
          pr["metadata"]["labels"].get("release") == sm["metadata"]["labels"]["release"])
    job = svc["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), svc["metadata"]["name"])
    exprs = "\n".join(r["expr"] for g in rule_src["spec"]["groups"] for r in g["rules"])
    rule_jobs = set(re.findall(r'\bnodesleuth_\w*\{[^}]*\bjob\s*=~?\s*"([^"]*)"', exprs))
    check(f"the ServiceMonitor's job label ({job}) is the one the rules' nodesleuth_* selectors use "
          f"({', '.join(sorted(rule_jobs))})",
          rule_jobs and all(re.fullmatch(j, job) for j in rule_jobs))
    alerts = [r["alert"] for g in rule_src["spec"]["groups"] for r in g["rules"] if "alert" in r]
    amatch = spec["route"]["matchers"]
    check("AlertmanagerConfig routes exactly the rule library's alerts", amatch == [
        {"name": "alertname", "value": "|".join(dict.fromkeys(alerts)), "matchType": "=~"}])
    boards = sorted((root / "dashboards/dist").glob("*.json"))
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    got = {k: v for d in cms for k, v in d["data"].items()}
    check(f"{len(boards)} dashboards, one ConfigMap each, labelled grafana_dashboard=\"1\"",
          len(cms) == len(boards) and all(len(d["data"]) == 1 for d in cms))
    check("dashboard ConfigMap data equals dashboards/dist byte for byte",
          got == {b.name: b.read_text(encoding="utf-8") for b in boards})
    check("dashboard ConfigMaps fit the API server's 1 MiB",
          all(len(json.dumps(d).encode()) < 1024 * 1024 for d in cms))
    inh_src = yaml.safe_load((root / "rules/dist/alertmanager-inhibit-rules.yaml").read_text())
    inh_src = inh_src["inhibit_rules"] if isinstance(inh_src, dict) else inh_src
    am = yaml.safe_load((root / "deploy/alertmanager/alertmanager.yml").read_text())

    def norm_side(rule, side):
        out = [m for m in rule.get(f"{side}_matchers") or []]
        out += [f'{k}={json.dumps(str(v))}' for k, v in (rule.get(f"{side}_match") or {}).items()]
        out += [f'{k}=~{json.dumps(str(v))}' for k, v in (rule.get(f"{side}_match_re") or {}).items()]
        return [re.sub(r'^(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?$', r'\1\2\3', m) for m in out]

    src = [(norm_side(r, "source"), norm_side(r, "target"), r.get("equal") or []) for r in inh_src]
    plain = [(norm_side(r, "source"), norm_side(r, "target"), r.get("equal") or []) for r in am["inhibit_rules"]]
    op = [([f"{m['name']}{m['matchType']}{m['value']}" for m in r["sourceMatch"]],
           [f"{m['name']}{m['matchType']}{m['value']}" for m in r["targetMatch"]], r.get("equal") or [])
          for r in spec.get("inhibitRules", [])]
    check(f"{len(src)} inhibit rules carried into alertmanager.yml and the AlertmanagerConfig",
          src == plain == op, f"{src} / {plain} / {op}")

    # 8. The example overlay for an existing release changes the label and the relay address, nothing else.
    odocs = [d for d in yaml.safe_load_all(overlay.read_text()) if d]
    osm, opr, oamc = one(odocs, "ServiceMonitor"), one(odocs, "PrometheusRule"), one(odocs, "AlertmanagerConfig")
    ons = osm["metadata"]["namespace"]
    check("overlay: release label replaced on ServiceMonitor and PrometheusRule",
          osm["metadata"]["labels"]["release"] == opr["metadata"]["labels"]["release"] != "kube-prometheus-stack")
    check("overlay: every object in the new namespace, relay URL follows",
          all(d["metadata"]["namespace"] == ons for d in odocs) and ons != svc["metadata"]["namespace"]
          and f".{ons}.svc:" in oamc["spec"]["receivers"][0]["webhookConfigs"][0]["url"])
    check("overlay: objects still validate", all(not schema_errors(d) for d in odocs))
    images = {c["image"] for d in odocs if d["kind"] in ("DaemonSet", "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}
    check("overlay: both workloads use the overlay's image", images == {"registry.example.com/nodesleuth:" + version},
          str(images))

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

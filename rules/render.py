#!/usr/bin/env python3
"""Render the nodesleuth alert-rule library (rules/alerts.py) into its shipped forms.

    python3 rules/render.py [--config my.toml] [--out DIR] [--print-defaults] [--check]

Writes into DIR (default: rules/dist next to this file):
  nodesleuth.rules.yaml              plain Prometheus rule file (rule_files:, promtool, Thanos/Mimir rulers)
  nodesleuth.prometheusrule.yaml     PrometheusRule object for the Prometheus Operator
  alertmanager-inhibit-rules.yaml    Alertmanager inhibit_rules (paste under the top-level `inhibit_rules:`)
  alerts.json                        machine-readable list: alert, severity, group, failure mode, runbook
  defaults.toml                      every configurable key with its default (copy, edit, pass with --config)
and, when DIR is the default, refreshes the alert table in rules/README.md.

Standard library only (Python >= 3.11 for tomllib). Output is deterministic: same input, same bytes.
"""
import argparse
import copy
import json
import os
import re
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import alerts as src  # noqa: E402

DEFAULTS = {
    "cluster_label": "cluster",
    "node_label": "node",
    "runbook_base": "https://github.com/nodesleuth/nodesleuth/blob/main/docs/runbooks/",
    "for_cap": "",
    "selectors": {
        "nodesleuth": 'job="nodesleuth"',
        "node_exporter": 'job="node-exporter"',
        "kubelet": 'job="kubelet", metrics_path="/metrics"',
        "kubelet_probes": 'job="kubelet", metrics_path="/metrics/probes"',
        "cadvisor": 'job="kubelet", metrics_path="/metrics/cadvisor"',
        "kube_state_metrics": 'job="kube-state-metrics"',
        "coredns": 'job="coredns"',
        "go_services": 'namespace!=""',
    },
    "groups": {g: on for g, (on, _) in src.GROUPS.items()},
    "group_params": copy.deepcopy(src.GROUP_PARAMS),
    "prometheusrule": {
        "name": "nodesleuth",
        "namespace": "monitoring",
        "labels": {"app.kubernetes.io/name": "nodesleuth", "app.kubernetes.io/component": "alert-rules"},
    },
    "alerts": {
        a["id"]: {
            "enabled": True,
            "severity": a["severity"],
            "for": a["for"],
            "keep_firing_for": a.get("keep_firing_for", "0s"),
            **a["params"],
        }
        for a in src.ALERTS
    },
}

DUR = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def seconds(d):
    m = DUR.match(d)
    if not d or not m:
        raise SystemExit(f"bad duration {d!r} (use e.g. 90s, 5m, 1h30m, 2d)")
    dd, h, mi, s = (int(x or 0) for x in m.groups())
    return ((dd * 24 + h) * 60 + mi) * 60 + s


def merge(base, over, path=""):
    for k, v in over.items():
        if k not in base and not path.startswith("prometheusrule.labels"):
            raise SystemExit(f"unknown configuration key {path}{k}")
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v, f"{path}{k}.")
        else:
            if k in base and base[k] is not None and type(base[k]) is not type(v):
                if not (isinstance(base[k], (int, float)) and isinstance(v, (int, float))):
                    raise SystemExit(f"{path}{k}: expected {type(base[k]).__name__}, got {type(v).__name__}")
            base[k] = v


def load_config(path):
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path, "rb") as f:
            merge(cfg, tomllib.load(f))
    for sev in (a["severity"] for a in cfg["alerts"].values()):
        if sev not in ("critical", "warning", "info"):
            raise SystemExit(f"severity {sev!r}: use critical, warning or info")
    if not cfg["node_label"]:
        raise SystemExit("node_label must not be empty")
    return cfg


def fmt_num(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def substitute(text, cfg, params, name):
    cl, nl = cfg["cluster_label"], cfg["node_label"]
    node_t = f"{{{{ with $labels.{nl} }}}}{{{{ . }}}}{{{{ else }}}}{{{{ $labels.instance }}}}{{{{ end }}}}"

    def one(m):
        key = m.group(1)
        if key == "C":
            return f"{cl}, " if cl else ""
        if key == "N":
            return f"{nl}, "
        if key == "CQ":  # the cluster matcher of a template query (printf verb), "" without a cluster label
            return f"{cl}=%q, " if cl else ""
        if key == "CV":  # its printf argument
            return f"$labels.{cl} " if cl else ""
        if key == "node_label":
            return nl
        if key == "cluster_label":
            return cl
        if key == "node":
            return node_t
        if key == "where":
            return substitute(src.WHERE, cfg, params, name)
        if key == "where_zh":
            return substitute(src.WHERE_ZH, cfg, params, name)
        if key == "runbook_url":
            return cfg["runbook_base"] + name + ".md"
        if key.startswith("sel:"):
            sel = cfg["selectors"][key[4:]]
            if not sel.strip():
                raise SystemExit(f"selector {key[4:]} must not be empty (use e.g. job=~\".+\")")
            return sel
        if key in params:
            return fmt_num(params[key])
        raise SystemExit(f"{name}: unknown placeholder <<{key}>>")

    return re.sub(r"<<([A-Za-z_:]+)>>", one, text)


def effective_for(cfg, f):
    cap = cfg["for_cap"]
    if cap and seconds(f) > seconds(cap):
        return cap
    return f


def build(cfg):
    """Returns the rule groups as plain data (list of dicts), in source order."""
    groups = []
    for g in src.GROUPS:
        if not cfg["groups"][g]:
            continue
        gparams = cfg["group_params"].get(g, {})
        rules = []
        for r in src.RECORDING.get(g, []):
            rules.append(
                {
                    "record": substitute(r["record"], cfg, gparams, r["record"]),
                    "expr": substitute(r["expr"], cfg, gparams, r["record"]),
                }
            )
        for a in src.ALERTS:
            if a["group"] != g:
                continue
            ac = cfg["alerts"][a["id"]]
            if not ac["enabled"]:
                continue
            name = a.get("name", a["id"])
            params = {
                **gparams,
                **{k: v for k, v in ac.items() if k not in ("enabled", "severity", "keep_firing_for")},
            }
            params["for"] = ac["for"]
            seconds(ac["for"])
            rule = {"alert": name, "expr": substitute(a["expr"], cfg, params, name)}
            f = effective_for(cfg, ac["for"])
            if seconds(f) > 0:
                rule["for"] = f
            keep = effective_for(cfg, ac["keep_firing_for"])
            if seconds(keep) > 0:
                rule["keep_firing_for"] = keep
            rule["labels"] = {"severity": ac["severity"]}
            ann = {}
            for k in ("summary", "description", "summary_zh", "description_zh"):
                ann[k] = substitute(a[k], cfg, params, name)
            ann["runbook_url"] = substitute("<<runbook_url>>", cfg, params, name)
            rule["annotations"] = ann
            rules.append(rule)
        if rules:
            groups.append({"name": g, "rules": rules})
    return groups


# ---------------------------------------------------------------- YAML out (a small, fixed subset)
def q(s):
    return json.dumps(s, ensure_ascii=False)


def key(k):
    return k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", k) and k not in ("y", "n", "yes", "no") else q(k)


def yaml_rules(groups, indent):
    p = " " * indent
    out = [f"{p}groups:"]
    for g in groups:
        out.append(f"{p}  - name: {q(g['name'])}")
        out.append(f"{p}    rules:")
        for r in g["rules"]:
            first = True
            for k in ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"):
                if k not in r:
                    continue
                lead = f"{p}      - " if first else f"{p}        "
                first = False
                v = r[k]
                if k == "expr" and "\n" in v:
                    out.append(f"{lead}expr: |-")
                    out.extend(f"{p}          {line}" if line else "" for line in v.split("\n"))
                elif isinstance(v, dict):
                    out.append(f"{lead}{k}:")
                    out.extend(f"{p}          {key(kk)}: {q(vv)}" for kk, vv in v.items())
                else:
                    out.append(f"{lead}{k}: {q(v)}")
    return out


HEADER = "# Generated by `python3 rules/render.py` from rules/alerts.py; do not edit (change the source or a --config).\n"


def render_rules_file(groups):
    return HEADER + "\n".join(yaml_rules(groups, 0)) + "\n"


def render_prometheusrule(groups, cfg):
    pr = cfg["prometheusrule"]
    out = [
        "apiVersion: monitoring.coreos.com/v1",
        "kind: PrometheusRule",
        "metadata:",
        f"  name: {q(pr['name'])}",
        f"  namespace: {q(pr['namespace'])}",
    ]
    if pr["labels"]:
        out.append("  labels:")
        out.extend(f"    {key(k)}: {q(str(v))}" for k, v in sorted(pr["labels"].items()))
    out.append("spec:")
    out.extend(yaml_rules(groups, 2))
    return HEADER + "\n".join(out) + "\n"


def inhibit_rules(cfg, names):
    out = []
    for sources, targets, equal, extra in src.INHIBIT:
        equal = [substitute(e, cfg, {}, "inhibit") for e in equal]
        equal = [e for e in equal if e]
        if extra == "critical-over-warning":
            out.append(
                {
                    "source_matchers": [f"alertname={q(sources[0])}", 'severity="critical"'],
                    "target_matchers": [f"alertname={q(targets[0])}", 'severity="warning"'],
                    "equal": equal,
                }
            )
            continue
        sm = [f"alertname=~{q('|'.join(sources))}"]
        if extra:
            sm += [extra] if isinstance(extra, str) else list(extra)
        out.append({"source_matchers": sm, "target_matchers": [f"alertname=~{q('|'.join(targets))}"], "equal": equal})
    return out


def render_inhibit(cfg):
    lines = [
        HEADER.rstrip("\n"),
        "# Alertmanager inhibit_rules: a root cause silences its symptoms on the same node or pod. Put these",
        "# entries under the top-level `inhibit_rules:` of alertmanager.yml (Alertmanager >= 0.22 matcher syntax).",
        "inhibit_rules:",
    ]
    for r in inhibit_rules(cfg, None):
        lines.append("  - source_matchers:")
        lines.extend(f"      - {q(m)}" for m in r["source_matchers"])
        lines.append("    target_matchers:")
        lines.extend(f"      - {q(m)}" for m in r["target_matchers"])
        lines.append("    equal: [" + ", ".join(q(e) for e in r["equal"]) + "]")
    return "\n".join(lines) + "\n"


def alert_list(cfg):
    out = []
    for a in src.ALERTS:
        ac = cfg["alerts"][a["id"]]
        name = a.get("name", a["id"])
        out.append(
            {
                "alert": name,
                "id": a["id"],
                "severity": ac["severity"],
                "group": a["group"],
                "failure_mode": a["mode"],
                "enabled": bool(cfg["groups"][a["group"]] and ac["enabled"]),
                "runbook_url": cfg["runbook_base"] + name + ".md",
                "meaning": a["meaning"] or next(x["meaning"] for x in src.ALERTS if x.get("name") == name and x["meaning"]),
            }
        )
    return json.dumps({"failure_modes": src.FAILURE_MODES, "alerts": out}, ensure_ascii=False, indent=1) + "\n"


# ---------------------------------------------------------------- TOML out (defaults.toml)
def tv(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return fmt_num(v)
    return q(v)


def render_defaults():
    d = DEFAULTS
    o = [
        "# Every configurable key of the nodesleuth rule library with its default. Generated by rules/render.py.",
        "# Copy the keys you change into your own file and run: python3 rules/render.py --config my.toml --out DIR",
        "",
        "# Label that tells clusters apart in a multi-cluster Prometheus / Thanos / Mimir ruler (\"\" to drop it).",
        f"cluster_label = {tv(d['cluster_label'])}",
        "# Label that names the node on every target (relabel it from __meta_kubernetes_pod_node_name); the",
        "# inhibit rules match root cause and symptom on it.",
        f"node_label = {tv(d['node_label'])}",
        "# Runbook base URL: runbook_url = runbook_base + AlertName + \".md\" (point it at your fork or wiki).",
        f"runbook_base = {tv(d['runbook_base'])}",
        "# Caps every alert's `for` and `keep_firing_for` (e.g. \"5s\" in tests and staging). Empty: no cap.",
        f"for_cap = {tv(d['for_cap'])}",
        "",
        "# Label matchers (without braces) selecting each source's series; must not be empty.",
        "[selectors]",
    ]
    o += [f"{k} = {tv(v)}" for k, v in d["selectors"].items()]
    o += ["", "# Groups on/off (nodesleuth-node overlaps upstream mixins: off by default).", "[groups]"]
    o += [f"{key(k)} = {tv(v)}  # needs: {src.GROUPS[k][1]}" for k, v in d["groups"].items()]
    for g, params in d["group_params"].items():
        o += ["", f"[group_params.{key(g)}]"] + [f"{k} = {tv(v)}" for k, v in params.items()]
    o += ["", "[prometheusrule]", f"name = {tv(d['prometheusrule']['name'])}"]
    o += [f"namespace = {tv(d['prometheusrule']['namespace'])}"]
    o += ["# labels your Prometheus's ruleSelector matches", "[prometheusrule.labels]"]
    o += [f"{q(k)} = {tv(v)}" for k, v in sorted(d["prometheusrule"]["labels"].items())]
    o += ["", "# Per alert: enabled, severity (critical|warning|info), for, keep_firing_for (how long it keeps firing",
          "# after its expression stops matching: Prometheus >= 2.42), and its thresholds."]
    for aid, ac in d["alerts"].items():
        o += ["", f"[alerts.{q(aid) if '.' in aid else aid}]"] + [f"{k} = {tv(v)}" for k, v in ac.items()]
    return "\n".join(o) + "\n"


# ---------------------------------------------------------------- README table
BEGIN, END = "<!-- BEGIN ALERT TABLE (rules/render.py) -->", "<!-- END ALERT TABLE -->"


def readme_table(cfg, runbooks="../docs/runbooks/"):
    rows = ["| alert | severity | group | meaning | runbook |", "|---|---|---|---|---|"]
    for a in json.loads(alert_list(cfg))["alerts"]:
        on = "" if a["enabled"] else " (off by default)"
        rb = f"[runbook]({runbooks}{a['alert']}.md)"
        rows.append(f"| `{a['alert']}` | {a['severity']} | `{a['group']}`{on} | {a['meaning']} | {rb} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TOML file overriding defaults (see dist/defaults.toml)")
    ap.add_argument("--out", help="output directory (default: rules/dist)")
    ap.add_argument("--print-defaults", action="store_true", help="print defaults.toml and exit")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 when rules/dist or the README table differ from a fresh render")
    args = ap.parse_args()
    if args.print_defaults:
        sys.stdout.write(render_defaults())
        return
    cfg = load_config(args.config)
    groups = build(cfg)
    out = args.out or os.path.join(HERE, "dist")
    files = {
        "nodesleuth.rules.yaml": render_rules_file(groups),
        "nodesleuth.prometheusrule.yaml": render_prometheusrule(groups, cfg),
        "alertmanager-inhibit-rules.yaml": render_inhibit(cfg),
        "alerts.json": alert_list(cfg),
        "defaults.toml": render_defaults(),
    }
    # The alert table stands in rules/README.md and in the project's README.md (links relative to each).
    readmes = []
    for path, runbooks in [(os.path.join(HERE, "README.md"), "../docs/runbooks/"),
                           (os.path.join(HERE, "..", "README.md"), "docs/runbooks/")]:
        with open(path, encoding="utf-8") as f:
            old = f.read()
        a, b = old.index(BEGIN), old.index(END)
        readmes.append((path, old, old[: a + len(BEGIN)] + "\n" + readme_table(cfg, runbooks) + "\n" + old[b:]))
    if args.check:
        stale = []
        for name, text in files.items():
            try:
                with open(os.path.join(out, name), encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        extra = sorted(set(os.listdir(out)) - set(files)) if os.path.isdir(out) else []
        for path, old, new in readmes:
            if not args.out and new != old:
                stale.append(f"{os.path.relpath(path, os.path.join(HERE, '..'))} alert table")
        if stale or extra:
            print(f"stale: {', '.join(stale + extra)} (run: python3 rules/render.py)", file=sys.stderr)
            sys.exit(1)
        return
    os.makedirs(out, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write(text)
    if not args.out:
        for path, _, new in readmes:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)


if __name__ == "__main__":
    main()

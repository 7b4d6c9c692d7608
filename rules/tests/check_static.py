#!/usr/bin/env python3
"""Static checks of the rendered rule library (run by rules/test.sh; PyYAML and jsonschema are test-only deps).

    check_static.py RENDER_DIR TEST_DIR

RENDER_DIR holds a render with every group on; TEST_DIR holds the promtool unit tests. Prints one line per check
and exits non-zero on the first failure.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.dirname(HERE)
RENDER = os.path.join(RULES, "render.py")
passed = 0


def ok(msg):
    global passed
    passed += 1
    print(f"ok {passed} - {msg}")


def fail(msg):
    print(f"FAIL - {msg}")
    sys.exit(1)


def strict(schema):
    s = copy.deepcopy(schema)

    def walk(n):
        if isinstance(n, dict):
            if n.get("type") == "object" and "properties" in n and "additionalProperties" not in n:
                n["additionalProperties"] = False
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(s)
    return s


def crd_schema():
    with open(os.path.join(HERE, "schemas", "monitoring.coreos.com_prometheusrules.yaml")) as f:
        crd = yaml.safe_load(f)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def validate_pr(obj, schema):
    v = jsonschema.Draft7Validator(schema)
    errs = sorted(v.iter_errors(obj), key=lambda e: list(e.path))
    return [f"{list(e.path)}: {e.message}" for e in errs]


def render(cfg_text):
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "c.toml")
    with open(cfg, "w") as f:
        f.write(cfg_text)
    r = subprocess.run([sys.executable, RENDER, "--config", cfg, "--out", d], capture_output=True, text=True)
    return d, r


def main():
    render_dir, test_dir = sys.argv[1], sys.argv[2]
    schema = crd_schema()
    sschema = strict(schema)

    # 1. the PrometheusRule objects (shipped default and all-groups render) validate against the CRD, strictly
    for label, path in [
        ("shipped", os.path.join(RULES, "dist", "nodesleuth.prometheusrule.yaml")),
        ("all groups", os.path.join(render_dir, "nodesleuth.prometheusrule.yaml")),
    ]:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            if d.get("apiVersion") != "monitoring.coreos.com/v1" or d.get("kind") != "PrometheusRule":
                fail(f"{label}: not a monitoring.coreos.com/v1 PrometheusRule")
            errs = validate_pr(d, schema) + validate_pr(d, sschema)
            if errs:
                fail(f"{label} PrometheusRule invalid: {errs[:5]}")
        ok(f"{label} PrometheusRule valid against the CRD schema (and its strict form)")

    # 2. negative: the validator does reject a bad object (so check 1 can fail)
    with open(os.path.join(render_dir, "nodesleuth.prometheusrule.yaml")) as f:
        good = yaml.safe_load(f)
    bad_for = copy.deepcopy(good)
    bad_for["spec"]["groups"][0]["rules"][1]["for"] = "5 minutes"
    typo = copy.deepcopy(good)
    typo["spec"]["groups"][0]["rules"][1]["fro"] = typo["spec"]["groups"][0]["rules"][1].pop("for")
    no_expr = copy.deepcopy(good)
    del no_expr["spec"]["groups"][0]["rules"][1]["expr"]
    for name, obj, sch in [("bad for", bad_for, schema), ("typo fro:", typo, sschema), ("no expr", no_expr, schema)]:
        if not validate_pr(obj, sch):
            fail(f"schema accepted a broken object ({name})")
    ok("schema rejects a bad `for`, a `fro:` typo and a rule without expr")

    # 3. the PrometheusRule carries exactly the plain rule file's groups
    with open(os.path.join(render_dir, "nodesleuth.rules.yaml")) as f:
        plain = yaml.safe_load(f)
    if plain["groups"] != good["spec"]["groups"]:
        fail("PrometheusRule spec.groups differs from the plain rule file")
    ok("PrometheusRule spec.groups == plain rule file groups")

    # 4. every alert: severity, the five annotations, runbook page exists; unique (alert, severity)
    seen = set()
    alerts = []
    for g in plain["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            key = (r["alert"], r["labels"]["severity"])
            if key in seen:
                fail(f"duplicate alert {key}")
            seen.add(key)
            alerts.append(key)
            if r["labels"]["severity"] not in ("critical", "warning", "info"):
                fail(f"{key}: severity")
            want = {"summary", "description", "summary_zh", "description_zh", "runbook_url"}
            if set(r["annotations"]) != want:
                fail(f"{key}: annotations {sorted(r['annotations'])}")
            rb = os.path.join(RULES, "..", "docs", "runbooks", r["alert"] + ".md")
            if not os.path.exists(rb):
                fail(f"{key}: no runbook {rb}")
            if not r["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{r['alert']}.md"):
                fail(f"{key}: runbook_url")
            if not any("\u4e00" <= c <= "\u9fff" for c in r["annotations"]["summary_zh"] + r["annotations"]["description_zh"]):
                fail(f"{key}: zh annotations without Chinese")
    ok(f"{len(alerts)} alert rules carry severity, summary/description (en, zh), runbook_url, and a runbook page")

    # 5. every runbook has the sections a person needs
    for name in sorted({a for a, _ in alerts}):
        with open(os.path.join(RULES, "..", "docs", "runbooks", name + ".md")) as f:
            text = f.read()
        for sec in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Silencing"):
            if sec not in text:
                fail(f"runbook {name}: missing {sec}")
    ok("every runbook has Meaning, Impact, Diagnosis, Mitigation, Silencing")

    # 6. promtool tests cover EVERY alert (rule, severity): a firing case and a no-alert case for the name
    fired, quiet, cases = set(), set(), 0
    for fn in sorted(os.listdir(test_dir)):
        if not fn.endswith(".test.yaml"):
            continue
        with open(os.path.join(test_dir, fn)) as f:
            t = yaml.safe_load(f)
        for test in t["tests"]:
            for c in test.get("alert_rule_test", []):
                cases += 1
                if c.get("exp_alerts"):
                    for e in c["exp_alerts"]:
                        fired.add((c["alertname"], e["exp_labels"]["severity"]))
                else:
                    quiet.add(c["alertname"])
            cases += len(test.get("promql_expr_test", []))
    missing = [a for a in alerts if a not in fired]
    if missing:
        fail(f"alerts without a firing promtool test: {missing}")
    missing = sorted({a for a, _ in alerts} - quiet)
    if missing:
        fail(f"alerts without a not-firing promtool test: {missing}")
    ok(f"promtool tests: {cases} cases; every alert has a firing case and a not-firing case")
    print(f"STAT promtool_cases={cases} alerts={len(alerts)}")

    # 7. the configuration really changes the output
    d, r = render('cluster_label = ""\nnode_label = "kubernetes_node"\nrunbook_base = "https://wiki.example/rb/"\n'
                  '[selectors]\nnodesleuth = \'job="ns", env="prod"\'\n'
                  '[groups]\nnodesleuth-ipvs = false\n'
                  '[alerts.NodesleuthTCPCloseWaitPileUp]\nthreshold = 250\nfor = "7m"\nseverity = "critical"\n'
                  '[alerts.NodesleuthDBusDown]\nenabled = false\n')
    if r.returncode != 0:
        fail(f"render with a config: {r.stderr}")
    with open(os.path.join(d, "nodesleuth.rules.yaml")) as f:
        text = f.read()
        conf = yaml.safe_load(text)
    rules = {(x.get("alert") or x.get("record")): x for g in conf["groups"] for x in g["rules"]}
    pu = rules["NodesleuthTCPCloseWaitPileUp"]
    checks = [
        (">= 250" in pu["expr"], "threshold"),
        (pu["for"] == "7m", "for"),
        (pu["labels"]["severity"] == "critical", "severity"),
        ("cluster" not in text.replace("cluster_label", ""), "cluster label dropped"),
        ("kubernetes_node" in rules["nodesleuth:tcp_close_wait_sockets:sum"]["expr"], "node label"),
        ('job="ns", env="prod"' in rules["nodesleuth:tcp_close_wait_sockets:sum"]["expr"], "selector"),
        (not any(g["name"] == "nodesleuth-ipvs" for g in conf["groups"]), "group off"),
        ("NodesleuthDBusDown" not in rules, "alert off"),
        (pu["annotations"]["runbook_url"] == "https://wiki.example/rb/NodesleuthTCPCloseWaitPileUp.md", "runbook base"),
        ("threshold 250" in pu["annotations"]["description"], "threshold in the description"),
    ]
    for good_, what in checks:
        if not good_:
            fail(f"configuration did not change: {what}")
    with open(os.path.join(d, "alertmanager-inhibit-rules.yaml")) as f:
        inh = yaml.safe_load(f)
    if any("cluster" in r["equal"] for r in inh["inhibit_rules"]) or not all(
        "kubernetes_node" in r["equal"] or "pod" in r["equal"] for r in inh["inhibit_rules"]
    ):
        fail("inhibit rules ignore the configured labels")
    r2 = subprocess.run(["promtool", "check", "rules", "--lint=all", os.path.join(d, "nodesleuth.rules.yaml")],
                        capture_output=True, text=True)
    if r2.returncode != 0:
        fail(f"promtool rejects the configured render: {r2.stdout}{r2.stderr}")
    ok("config changes threshold, for, severity, cluster/node labels, selector, groups, alerts, runbook base "
       "(and promtool accepts the result)")

    # 7b. template queries in annotations (the hung-container alert's output-stall cause): as many printf verbs as
    # arguments, with and without the cluster label (promtool checks the template syntax, not printf's arguments,
    # and a mismatch would only show as %!q(MISSING) in a page)
    import re
    n_queries = 0
    for label, doc in [("default", plain), ("no cluster label", conf)]:
        for g in doc["groups"]:
            for r in g["rules"]:
                for k, v in r.get("annotations", {}).items():
                    for fmt, args in re.findall(r"printf `([^`]*)`((?: \$labels\.[A-Za-z_]+)+) \| query", v):
                        n_queries += 1
                        if fmt.count("%") != args.count("$labels."):
                            fail(f"{label}: {r['alert']} {k}: {fmt.count('%')} printf verbs, {args.count('$labels.')} "
                                 f"arguments")
                        if label == "no cluster label" and "cluster" in fmt + args:
                            fail(f"{label}: {r['alert']} {k}: template query still matches on cluster")
    if n_queries < 8:
        fail(f"expected the hung-container alert's 4 cause queries in both renders, found {n_queries}")
    ok(f"{n_queries} template queries in annotations: printf verbs match their arguments, with and without cluster")

    # 8. bad configurations are refused with a message
    for text, word in [
        ("[alerts.NodesleuthTCPCloseWaitPileUp]\nthreshhold = 1\n", "unknown configuration key"),
        ("[alerts.NodesleuthTCPCloseWaitPileUp]\nseverity = \"page\"\n", "severity"),
        ("[alerts.NodesleuthTCPCloseWaitPileUp]\nfor = \"5 minutes\"\n", "bad duration"),
        ("[selectors]\nnodesleuth = \"\"\n", "must not be empty"),
        ("[groups]\nnodesleuth-tpc = true\n", "unknown configuration key"),
    ]:
        _, r = render(text)
        if r.returncode == 0 or word not in r.stderr:
            fail(f"bad config accepted or unclear ({word}): rc={r.returncode} {r.stderr}")
    ok("bad configurations (unknown key, severity, duration, empty selector, group typo) are refused")

    # 9. dist/alerts.json lists every alert with its failure mode (for dashboards / doctor)
    with open(os.path.join(RULES, "dist", "alerts.json")) as f:
        al = json.load(f)
    names = {(a["alert"], a["severity"]) for a in al["alerts"]}
    if names != set(alerts):
        fail(f"alerts.json differs from the rules: {names ^ set(alerts)}")
    if not all(a["failure_mode"] in al["failure_modes"] for a in al["alerts"]):
        fail("alerts.json: unknown failure mode")
    ok("dist/alerts.json lists every alert with a known failure mode")
    print(f"static checks: {passed} passed")


if __name__ == "__main__":
    main()

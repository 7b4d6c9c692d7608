"""Lint of generated Grafana dashboards: schema, data sources, units, descriptions, variables, uids, legends,
metric names. Every check returns a list of problems (strings); an empty list is a pass. Used by
test_dashboards.py, which also feeds it broken copies to prove each check can fail."""
import json
import re
from pathlib import Path

import jsonschema

TESTS = Path(__file__).resolve().parent

# Grafana's own variables (global and data-link ones) that need no definition.
BUILTIN_VARS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
                "__url_time_range", "__all_variables", "__all", "__from", "__to", "__dashboard", "__org", "__user"}

PROMQL_FUNCS = {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10",
    "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "label_values",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
            "inf", "nan", "Inf", "NaN"}
# `$1` (a label_replace back-reference) is no variable: names start with a letter or an underscore
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z_][A-Za-z0-9_]*)\]\])")


def exported_metrics():
    """The exporter's metric contract: every name in the first column of README.md's metric tables (the README is
    the contract; a name missing there is missing for the dashboards too)."""
    names = set()
    readme = TESTS.parent.parent / "README.md"
    in_metric_table = False
    for line in readme.read_text().splitlines():
        if not line.startswith("|"):
            in_metric_table = False
            continue
        if line.replace(" ", "").startswith("|metric|"):
            in_metric_table = True
            continue
        if not in_metric_table or not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([a-z_:][a-z0-9_:]*)`", first):
            if name.startswith(("nodesleuth_", "process_")):
                names.add(name)
    return names


def load_list(name):
    out = set()
    for line in (TESTS / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.add(line.split()[-1])
    return out


# Relax-list: where the copied schema (grafana-foundation-sdk, see its SOURCE note) is stricter than Grafana. A field
# override's matcher option is a string for Grafana's byName/byFrameRefID matchers and an override property's
# value is whatever the property takes (a number for custom.fillOpacity); the schema types both as objects.
RELAX = {"MatcherConfig": ("options",), "DynamicConfigValue": ("value",)}


def schema_validator():
    schema = json.loads((TESTS / "dashboard.jsonschema.json").read_text())
    for definition, props in RELAX.items():
        for prop in props:
            schema["definitions"][definition]["properties"][prop] = {}
    return jsonschema.Draft7Validator(schema)


def metric_names(expr):
    """Metric names a PromQL expression selects (strings, matchers, ranges and grouping clauses removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names, unknown = set(), set()
    for m in re.finditer(r"(?<![0-9.A-Za-z_:$])([A-Za-z_:][A-Za-z0-9_:]*)", e):
        word, rest = m.group(1), e[m.end():].lstrip()
        if word in KEYWORDS:
            continue
        if rest.startswith("("):
            if word not in PROMQL_FUNCS:
                unknown.add(word)
        else:
            names.add(word)
    return names, unknown


def walk(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + "/" + k, k, v
            yield from walk(v, path + "/" + k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}/{i}")


def panels_of(d):
    for p in d.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def targets_of(d):
    for p in panels_of(d):
        for t in p.get("targets", []):
            yield p, t


def by_labels(expr):
    labels = set()
    for m in re.finditer(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    return labels


def lint(name, d, validator, exported, others):
    errs = []
    for e in validator.iter_errors(d):
        errs.append(f"schema: {list(e.absolute_path)}: {e.message[:200]}")
    uid = d.get("uid", "")
    if not (uid.startswith("nodesleuth-") and 8 <= len(uid) <= 40):
        errs.append(f"uid {uid!r}: must start with nodesleuth- and be 8-40 characters")
    if "nodesleuth" not in d.get("tags", []):
        errs.append("tag nodesleuth missing")
    # data sources: only the variable, never a UID
    for path, key, v in walk(d):
        if key == "datasource":
            if isinstance(v, str) or (isinstance(v, dict) and v.get("uid") not in (None, "${datasource}")):
                errs.append(f"hard-coded datasource at {path}: {v!r}")
            if isinstance(v, dict) and v.get("type") not in (None, "prometheus"):
                errs.append(f"datasource of type {v.get('type')!r} at {path}")
    vars_ = {v["name"]: v for v in d["templating"]["list"]}
    dsv = vars_.get("datasource")
    if not dsv or dsv.get("type") != "datasource" or dsv.get("query") != "prometheus":
        errs.append("no datasource variable of type prometheus")
    for needed in ("cluster", "instance", "job"):
        if needed not in vars_:
            errs.append(f"variable {needed} missing")
    # every variable used is defined (in queries, variable queries, links, titles)
    for path, key, v in walk(d):
        if isinstance(v, str):
            for m in VAR_RE.finditer(v):
                var = next(g for g in m.groups() if g)
                if var not in vars_ and var not in BUILTIN_VARS:
                    errs.append(f"undefined variable ${var} at {path}")
    # panels
    ids = set()
    for p in d.get("panels", []):
        if p["id"] in ids:
            errs.append(f"duplicate panel id {p['id']}")
        ids.add(p["id"])
    for p in panels_of(d):
        t = p.get("title", "?")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            errs.append(f"panel {t!r}: no unit")
        if len(p.get("description", "")) < 40:
            errs.append(f"panel {t!r}: no description (what it shows, what bad looks like)")
        if not p.get("targets"):
            errs.append(f"panel {t!r}: no query")
        for tg in p.get("targets", []):
            expr = tg.get("expr", "")
            names, unknown = metric_names(expr)
            for fn in unknown:
                errs.append(f"panel {t!r}: unknown PromQL function {fn}")
            for n in names:
                if n.startswith("nodesleuth_") or n.startswith("process_"):
                    if n not in exported:
                        errs.append(f"panel {t!r}: {n} is not exported by nodesleuth (README.md's metric table)")
                elif n not in others and n not in exported:
                    errs.append(f"panel {t!r}: {n} is neither nodesleuth's nor on other_metrics.txt")
            if p["type"] == "timeseries":
                legend = tg.get("legendFormat", "")
                for lab in ("pod", "process", "local_port", "virtual_address", "container", "method", "pattern", "host"):
                    if lab in by_labels(expr) and "{{" + lab + "}}" not in legend:
                        errs.append(f"panel {t!r}: legend {legend!r} does not name {lab}")
    # variable queries name exported metrics too
    for v in vars_.values():
        if v.get("type") == "query":
            m = re.match(r"label_values\(([A-Za-z_:][A-Za-z0-9_:]*)", v.get("query", ""))
            if not m or m.group(1) not in exported:
                errs.append(f"variable {v['name']}: query {v.get('query')!r} does not read an exported metric")
    # grid: inside 24 columns, no overlaps
    cells = {}
    for p in d.get("panels", []):
        g = p["gridPos"]
        if g["x"] + g["w"] > 24:
            errs.append(f"panel {p.get('title')!r} overflows the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    errs.append(f"panels {cells[(x, y)]!r} and {p.get('title')!r} overlap")
                    break
                cells[(x, y)] = p.get("title")
            else:
                continue
            break
    return [f"{name}: {e}" for e in errs]


def lint_all(dashboards):
    validator, exported, others = schema_validator(), exported_metrics(), load_list("other_metrics.txt")
    errs = []
    uids = {}
    for name, d in dashboards.items():
        errs += lint(name, d, validator, exported, others)
        if d.get("uid") in uids:
            errs.append(f"{name}: uid {d['uid']} also used by {uids[d['uid']]}")
        uids[d.get("uid")] = name
    # links between dashboards point at dashboards that exist
    for name, d in dashboards.items():
        for path, key, v in walk(d):
            if key == "url" and isinstance(v, str) and v.startswith("/d/"):
                target = v[3:].split("?")[0].split("/")[0]
                if target not in uids:
                    errs.append(f"{name}: link to unknown dashboard uid {target} at {path}")
    return errs

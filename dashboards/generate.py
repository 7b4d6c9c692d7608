#!/usr/bin/env python3
"""Generates nodesleuth's Grafana dashboards: dashboards/dist/<name>.json (overview, tcp, ipvs, memory, systemd).

    python3 dashboards/generate.py                # rewrite dashboards/dist/
    python3 dashboards/generate.py --check        # exit 1 when dist/ differs from what this file generates
    python3 dashboards/generate.py --runbook-base-url https://wiki.example/runbooks

Standard library only (nothing to install). The output is deterministic: same source, same bytes.

Conventions (the ideas come from kubernetes-mixin / node-mixin, written here from scratch): every query goes through
the `datasource` variable (no data-source UID in the JSON), `cluster` is hidden unless --multi-cluster, `job`,
`instance` (node), `namespace` and `pod` variables; every panel has a unit and a description saying what it shows
and what a bad value looks like; stat panels of the overview turn red at the same threshold as their alert (the
table ALERTS below, checked against the rule library's rendered rules by dashboards/tests/test_dashboards.py).
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x save this; newer Grafana migrates it up on load, older ones cannot read newer
TAGS = ["nodesleuth"]

# ---------------------------------------------------------------------------------------------------------------------
# Alert thresholds shared with the rule library (rules/, written in parallel): the same keys and default values as
# its rules/dist/defaults.toml `[alerts.<name>]` tables, cross-checked against that file and the rendered rules by
# dashboards/tests/test_dashboards.py. Alerts without parameters compare with a fixed condition (> 0, == 0, length
# >= limit) and are listed so that their runbooks are linked and their existence checked.
ALERTS = {
    "NodesleuthTCPCloseWaitPileUp": {"threshold": 100},
    "NodesleuthTCPCloseWaitClientLeak": {"threshold": 100},
    "NodesleuthTCPAcceptQueueFull": {},
    "NodesleuthNodeListenOverflows": {},
    "NodesleuthIPVSOrphanedConnections": {},
    "NodesleuthIPVSConnectionsNearExpiry": {},
    "NodesleuthIPVSIdleNearTimeout": {"quantile": 0.99, "ratio": 0.8},
    "NodesleuthGoMadvFreeRetention": {"share": 0.5, "min_bytes": 268435456},
    "NodesleuthSystemdCookieExhaustion.warning": {"horizon": 2592000},
    "NodesleuthSystemdCookieExhaustion.critical": {"horizon": 604800, "ratio": 0.95},
    "NodesleuthSystemdUnresponsive": {},
    "NodesleuthDBusDown": {},
    "NodesleuthSystemdLeakedProbeSlices": {"threshold": 20},
    "NodesleuthCollectorFailing": {},
    "NodesleuthExporterDown": {},
    # issue 12: a process blocked writing its stdout/stderr; critical on a terminal, warning on a pipe/file/socket
    "NodesleuthContainerOutputStalled.critical": {"threshold": 120},
    "NodesleuthContainerOutputStalled.warning": {"threshold": 120},
}
# rules/dist/defaults.toml [group_params.nodesleuth-systemd] forecast_window: the rate the cookie forecast uses
COOKIE_FORECAST_WINDOW = "6h"
# rules/dist/defaults.toml runbook_base (without the trailing slash)
RUNBOOK_BASE = "https://github.com/nodesleuth/nodesleuth/blob/main/docs/runbooks"


def param(alert, key):
    return ALERTS[alert][key]


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks

DS = {"type": "prometheus", "uid": "${datasource}"}

# Label selectors. `$cluster` is single-valued with "All" = `.*` (which also matches series without a cluster label);
# the others are multi-valued with "All" = `.*`, which also matches the empty namespace/pod of host processes.
NODE = 'cluster=~"$cluster", job=~"$job", instance=~"$instance"'
POD = NODE + ', namespace=~"$namespace", pod=~"$pod"'


def sel(metric, labels=NODE, extra=""):
    inner = labels + (", " + extra if extra else "")
    return f"{metric}{{{inner}}}"


# Selectors with a fixed matcher (kept out of f-strings: Python 3.11 allows no quotes of the same kind inside them)
SRC_SYSTEMD = sel("nodesleuth_collector_source_present", extra='collector="systemd"')
LIBCONTAINER = sel("nodesleuth_systemd_pattern_units", extra='pattern=~"libcontainer.*"')
RARE_STATES = sel("nodesleuth_tcp_sockets", POD, 'state!~"established|listen"')
ESTAB = sel("nodesleuth_tcp_sockets", POD, 'state="established"')
TCP_TIMEOUT = sel("nodesleuth_ipvs_timeout_seconds", extra='timeout="tcp"')
TTY_WRITERS = sel("nodesleuth_container_output_processes", POD, 'target="tty"')
GO_MADV0 = sel("nodesleuth_process_go_info", POD, 'madvdontneed="0"')
GO_NOT_DONTNEED = sel("nodesleuth_process_go_info", POD, 'madvdontneed!="1"')
# Go 1.12-1.15 return memory with MADV_FREE unless GODEBUG=madvdontneed=1
GO_OLD = sel("nodesleuth_process_go_info", POD, 'go_version=~"go1\\\\.1[2-5]([^0-9].*)?", madvdontneed!="1"')


class Target:
    def __init__(self, expr, legend="", instant=False, fmt="time_series"):
        self.expr, self.legend, self.instant, self.fmt = expr, legend, instant, fmt

    def render(self, ref):
        t = {"datasource": DS, "refId": ref, "expr": self.expr, "legendFormat": self.legend or "__auto",
             "range": not self.instant, "instant": self.instant, "format": self.fmt}
        if self.fmt == "heatmap":
            t["interval"] = ""
        return t


def series_style(ref, color, dash=True, stack=False):
    """Override for one query's series (by refId): a fixed colour, dashed, not filled, out of the stack: for limits
    and timeouts drawn over the data."""
    props = [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}},
             {"id": "custom.fillOpacity", "value": 0},
             {"id": "custom.stacking", "value": {"mode": "normal" if stack else "none", "group": "A"}}]
    if dash:
        props.append({"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}})
    return {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": props}


def unit_of(column, unit):
    """Override giving one table column (by its displayed name) its own unit."""
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "unit", "value": unit}]}


def thresholds(*steps):
    """steps: ("green", None), ("red", 100), ..."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def _panel(kind, title, desc, targets, unit, w, h, **kw):
    assert desc and unit, title
    defaults = {"unit": unit}
    for k in ("min", "max", "decimals", "noValue", "mappings", "thresholds", "color"):
        if k in kw:
            defaults[k] = kw.pop(k)
    if "custom" in kw:
        defaults["custom"] = kw.pop("custom")
    p = {"type": kind, "title": title, "description": desc, "datasource": DS,
         "targets": [t.render(chr(ord("A") + i)) for i, t in enumerate(targets)],
         "fieldConfig": {"defaults": defaults, "overrides": kw.pop("overrides", [])},
         "options": kw.pop("options", {}), "_w": w, "_h": h}
    if "links" in kw:
        p["links"] = kw.pop("links")
    if "transformations" in kw:
        p["transformations"] = kw.pop("transformations")
    assert not kw, kw
    return p


def timeseries(title, desc, targets, unit, w=12, h=8, stack=False, thresh=None, fill=10, **kw):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 35 if stack else fill, "showPoints": "never",
              "spanNulls": False, "axisLabel": kw.pop("axis", ""),
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    if thresh is not None:
        custom["thresholdsStyle"] = {"mode": "dashed"}
        kw["thresholds"] = thresh
    kw.setdefault("color", {"mode": "palette-classic"})
    options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                          "calcs": ["lastNotNull", "max"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return _panel("timeseries", title, desc, targets, unit, w, h, custom=custom, options=options, **kw)


def stat(title, desc, targets, unit, thresh, w=4, h=6, graph=False, **kw):
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "background", "graphMode": "area" if graph else "none", "textMode": "auto",
               "orientation": "auto", "justifyMode": "auto", "wideLayout": True}
    return _panel("stat", title, desc, targets, unit, w, h, thresholds=thresh, color={"mode": "thresholds"},
                  options=options, **kw)


def table(title, desc, targets, unit, w=24, h=8, sort=None, exclude=(), rename=None, thresh=None, cell="auto", **kw):
    organize = {"excludeByName": {k: True for k in ("Time", "__name__", "job", *exclude)},
                "renameByName": rename or {}, "indexByName": {}}
    trans = [{"id": "merge", "options": {}}] if len(targets) > 1 else []
    trans.append({"id": "organize", "options": organize})
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    if sort:
        options["sortBy"] = [{"displayName": sort, "desc": True}]
    custom = {"align": "auto", "filterable": True, "cellOptions": {"type": cell}}
    if thresh:
        kw["thresholds"] = thresh
        kw["color"] = {"mode": "thresholds"}
    return _panel("table", title, desc, targets, unit, w, h, custom=custom, options=options,
                  transformations=trans, **kw)


def heatmap(title, desc, targets, unit, yunit, w=12, h=8):
    options = {"calculate": False, "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64,
                                                          "exponent": 0.5, "fill": "dark-orange", "reverse": False},
               "yAxis": {"axisPlacement": "left", "unit": yunit, "reverse": False},
               "rowsFrame": {"layout": "le"}, "cellValues": {"unit": unit},
               "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": True},
               "legend": {"show": True}, "filterValues": {"le": 1e-9}, "exemplars": {"color": "rgba(255,0,255,0.7)"}}
    return _panel("heatmap", title, desc, targets, unit, w, h, options=options,
                  custom={"scaleDistribution": {"type": "linear"}, "hideFrom": {"legend": False, "tooltip": False,
                                                                                 "viz": False}})


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def dash_link(uid, title):
    """A panel link to another nodesleuth dashboard, keeping time range and variables."""
    return _link(title, f"/d/{uid}?${{__url_time_range}}&${{__all_variables}}", f"Open {title}", blank=False)


def runbook_link(alert):
    return _link(f"Runbook: {alert}", f"${{runbook_base}}/{alert}.md", f"What to do when {alert} fires",
                 blank=True)


def _link(title, url, tooltip, blank):
    # Panel links in the shape the schema gives them (DashboardLink); Grafana reads title, url and targetBlank.
    return {"title": title, "type": "link", "url": url, "icon": "external link", "tooltip": tooltip, "tags": [],
            "asDropdown": False, "targetBlank": blank, "includeVars": False, "keepTime": False}


# ---------------------------------------------------------------------------------------------------------------------
# Variables


def var_query(name, label, query, multi=True, hide=0, regex="", include_all=True, all_value=".*"):
    v = {"type": "query", "name": name, "label": label, "datasource": DS, "query": query, "definition": query,
         "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all, "hide": hide, "regex": regex,
         "current": {"text": "All", "value": "$__all"} if include_all else {"text": "", "value": ""},
         "options": []}
    if include_all and all_value is not None:
        v["allValue"] = all_value
    return v


def variables(pod_metric=None, multi_cluster=False, runbook_base=""):
    vs = [
        {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
         "current": {"text": "default", "value": "default"}, "hide": 0, "options": [], "regex": "",
         "refresh": 1, "multi": False, "includeAll": False},
        # hidden (kubernetes-mixin's showMultiCluster idea) and "All" by default: a single cluster has no cluster
        # label at all, and a multi-cluster Prometheus seen through the default dashboards is merged, never silently
        # cut to its first cluster
        var_query("cluster", "cluster", "label_values(nodesleuth_build_info, cluster)", multi=False,
                  hide=0 if multi_cluster else 2),
        var_query("job", "job", 'label_values(nodesleuth_build_info{cluster=~"$cluster"}, job)', all_value=None),
        var_query("instance", "node (instance)",
                  'label_values(nodesleuth_build_info{cluster=~"$cluster", job=~"$job"}, instance)'),
    ]
    if pod_metric:
        vs.append(var_query("namespace", "namespace", f"label_values({sel(pod_metric)}, namespace)"))
        vs.append(var_query("pod", "pod", 'label_values(' + sel(pod_metric, extra='namespace=~"$namespace"') + ', pod)'))
    vs.append({"type": "constant", "name": "runbook_base", "label": "runbook base URL", "query": runbook_base,
               "hide": 2, "skipUrlSync": False,
               "description": "Base URL of the runbooks (docs/runbooks/<AlertName>.md); generate.py --runbook-base-url"})
    return vs


# ---------------------------------------------------------------------------------------------------------------------
# Layout: rows of panels, packed left to right on Grafana's 24-column grid


def layout(items):
    panels, x, y, row_h, next_id = [], 0, 0, 0, 1
    for it in items:
        if it["type"] == "row":
            if x:
                y, x, row_h = y + row_h, 0, 0
            it = dict(it, id=next_id, gridPos={"h": 1, "w": 24, "x": 0, "y": y})
            next_id += 1
            y += 1
            panels.append(it)
            continue
        w, h = it.pop("_w"), it.pop("_h")
        if x + w > 24:
            y, x, row_h = y + row_h, 0, 0
        p = {"id": next_id, "gridPos": {"h": h, "w": w, "x": x, "y": y}}
        p.update(it)
        next_id += 1
        panels.append(p)
        x += w
        row_h = max(row_h, h)
    return panels


def dashboard(uid, title, desc, tags, items, vars_):
    return {
        "uid": uid, "title": title, "description": desc, "tags": TAGS + tags, "timezone": "browser",
        "editable": True, "graphTooltip": 1, "time": {"from": "now-6h", "to": "now"},
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m", "1h"]}, "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION, "version": 1, "fiscalYearStartMonth": 0, "liveNow": False,
        "links": [
            {"title": "nodesleuth", "type": "dashboards", "tags": TAGS, "asDropdown": True, "icon": "external link",
             "tooltip": "Other nodesleuth dashboards", "targetBlank": False, "includeVars": True, "keepTime": True,
             "url": ""},
            {"title": "Runbooks", "type": "link", "url": "${runbook_base}", "icon": "doc",
             "tooltip": "nodesleuth runbooks (one page per alert)", "tags": [], "asDropdown": False,
             "targetBlank": True, "includeVars": False, "keepTime": False},
        ],
        "annotations": {"list": []},
        "templating": {"list": vars_},
        "panels": layout(items),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Shared expressions

CW_GROUP = "namespace, pod, container, process, local_port, netns"


def cookie_days():
    """Days until systemd's reply serial reaches 2^32 per node, as NodesleuthSystemdCookieExhaustion computes it:
    (1 - ratio) / rate(ratio[forecast window]); absent while the serial does not grow."""
    r = sel("nodesleuth_systemd_reply_serial_ratio")
    return (f"(1 - max by (cluster, instance) ({r})) / on (cluster, instance) "
            f"(max by (cluster, instance) (rate({r}[{COOKIE_FORECAST_WINDOW}])) > 0) / 86400")


def lazyfree_alert_expr():
    """Groups as NodesleuthGoMadvFreeRetention selects them: LazyFree >= share of RSS, >= min_bytes, and a Go runtime
    that does not run with madvdontneed=1."""
    share, min_bytes = param("NodesleuthGoMadvFreeRetention", "share"), param("NodesleuthGoMadvFreeRetention",
                                                                                  "min_bytes")
    grp = "cluster, instance, namespace, pod, container, process"
    lf = f"sum by ({grp}) ({sel('nodesleuth_process_lazyfree_bytes', POD)})"
    rss = f"sum by ({grp}) ({sel('nodesleuth_process_resident_memory_bytes', POD)})"
    return (f"({lf} / {rss} >= {share} and on ({grp}) {lf} >= {min_bytes}) and on ({grp}) "
            f"{GO_NOT_DONTNEED}")


def idle_buckets(by):
    """nodesleuth_ipvs_established_idle_entries summed `by` its bound, which the exporter names `idle_le` (a gauge
    may not carry `le`), copied to `le` for histogram_quantile and the heatmap."""
    return (f"sum by ({by}le) (label_replace({sel('nodesleuth_ipvs_established_idle_entries')}, "
            f'"le", "$1", "idle_le", "(.*)"))')


def idle_ratio_expr():
    q = param("NodesleuthIPVSIdleNearTimeout", "quantile")
    return (f"histogram_quantile({q}, {idle_buckets('cluster, instance, ')}) / on (cluster, instance) "
            f"max by (cluster, instance) ({TCP_TIMEOUT})")


def collector_failing_expr():
    """NodesleuthCollectorFailing: success 0, except the systemd collector while systemd itself is down (that is
    NodesleuthSystemdUnresponsive / NodesleuthDBusDown)."""
    return (f"max by (cluster, instance, collector) ({sel('nodesleuth_scrape_collector_success')}) == 0 unless on "
            f"(cluster, instance, collector) label_replace(max by (cluster, instance) "
            f"({sel('nodesleuth_systemd_up')}) == 0, \"collector\", \"systemd\", \"\", \"\")")


OUT_GROUP = "instance, namespace, pod, container, process, target"
OUT_CONTAINER = "instance, namespace, pod, container"


def stall_threshold():
    """Seconds a write may stay blocked before NodesleuthContainerOutputStalled (the lower of its two severities'
    thresholds; both 120 s by default)."""
    return min(param("NodesleuthContainerOutputStalled.critical", "threshold"),
               param("NodesleuthContainerOutputStalled.warning", "threshold"))


def stalled_groups():
    return f"max by ({OUT_GROUP}) ({sel('nodesleuth_output_stalled_seconds', POD)})"


def on_selected_hosts(expr):
    """node_exporter series of the machines of the selected nodesleuth instances. node_exporter listens on its
    own port, so the two are joined on the host part of `instance` (label_replace into `host`)."""
    host = '"host", "$1", "instance", "(.*):[0-9]+"'
    return (f"max by (host) (label_replace({expr}, {host})) and on (host) "
            f"group by (host) (label_replace({sel('nodesleuth_build_info')}, {host}))")


def unresponsive_expr():
    return (f"{sel('nodesleuth_systemd_up')} == 0 and on(cluster, instance) {sel('nodesleuth_dbus_up')} == 1")


def dbus_down_expr():
    return (f"{sel('nodesleuth_dbus_up')} == 0 unless on(cluster, instance) "
            f"{SRC_SYSTEMD} == 0")


# ---------------------------------------------------------------------------------------------------------------------
# Dashboards


def overview(ctx):
    red_at = lambda v: thresholds(("green", None), ("red", v))  # noqa: E731
    cw = param("NodesleuthTCPCloseWaitPileUp", "threshold")
    share, min_bytes = param("NodesleuthGoMadvFreeRetention", "share"), param("NodesleuthGoMadvFreeRetention",
                                                                              "min_bytes")
    warn_d = param("NodesleuthSystemdCookieExhaustion.warning", "horizon") // 86400
    crit_d = param("NodesleuthSystemdCookieExhaustion.critical", "horizon") // 86400
    crit_ratio = param("NodesleuthSystemdCookieExhaustion.critical", "ratio")
    idle = param("NodesleuthIPVSIdleNearTimeout", "ratio")
    slices = param("NodesleuthSystemdLeakedProbeSlices", "threshold")
    stall = stall_threshold()
    tcp_l, ipvs_l = dash_link("nodesleuth-tcp", "TCP detail"), dash_link("nodesleuth-ipvs", "IPVS detail")
    mem_l, sd_l = dash_link("nodesleuth-memory", "Memory detail"), dash_link("nodesleuth-systemd", "systemd detail")
    items = [
        row("CLOSE_WAIT pile-ups"),
        stat("Largest CLOSE_WAIT group",
             f"The most CLOSE_WAIT sockets held by one process on one local port (any pod, any node selected). "
             f"Red from {cw}, the threshold of NodesleuthTCPCloseWaitPileUp (server side) and "
             f"NodesleuthTCPCloseWaitClientLeak (local_port (ephemeral): a client pool): the process stopped "
             f"closing connections its peers closed and will run out of descriptors or hang.",
             [Target(f"max(sum by (instance, {CW_GROUP}) ({sel('nodesleuth_tcp_close_wait_sockets', POD)}))",
                     instant=True)],
             "short", red_at(cw), noValue="0",
             links=[tcp_l, runbook_link("NodesleuthTCPCloseWaitPileUp"),
                    runbook_link("NodesleuthTCPCloseWaitClientLeak")]),
        timeseries("CLOSE_WAIT sockets by pod, process and port (top 10)",
                   "CLOSE_WAIT sockets per owning process and local port; `(ephemeral)` is the client side of a "
                   "connection pool, `(other)` the groups beyond the exporter's top N. A line that only rises is a "
                   "leak; the dashed line is the alert threshold.",
                   [Target(f"topk(10, sum by (instance, {CW_GROUP}) "
                           f"({sel('nodesleuth_tcp_close_wait_sockets', POD)}))",
                           "{{namespace}}/{{pod}}/{{container}} {{process}} :{{local_port}} ({{instance}})")],
                   "short", w=20, h=6, thresh=red_at(cw), links=[tcp_l]),
        row("Container output stalled"),
        stat("Longest output stall",
             f"The longest time any thread of a selected node has been blocked writing its stdout/stderr while its "
             f"process wrote nothing. Red from {stall:g} s, the threshold of NodesleuthContainerOutputStalled "
             f"(critical on a terminal: 'stuck writing logs to a terminal: set tty: false'; warning on a pipe). "
             f"Behind it the whole service hangs: CLOSE_WAIT piles up and the liveness probe restarts it. 'none': "
             f"nothing is stalled (the series exist only while a write is stuck).",
             [Target(f"max({sel('nodesleuth_output_stalled_seconds', POD)})", instant=True)],
             "s", red_at(stall), noValue="none",
             links=[tcp_l, runbook_link("NodesleuthContainerOutputStalled")]),
        timeseries("Container output stalled (NodesleuthContainerOutputStalled)",
                   f"How long each process group (namespace, pod, container, process) has been blocked writing "
                   f"its stdout/stderr without progress, and on what: tty (a terminal the runtime stopped reading: "
                   f"set tty: false), pipe (the runtime stopped draining it), file, socket. A line rising one second "
                   f"per second is a stuck writer; the dashed line is the alert threshold ({stall:g} s). "
                   f"(other) holds the stalls beyond the exporter's top N. Lines end when the write completes or "
                   f"the process is killed (often by its liveness probe, before the threshold).",
                   [Target(stalled_groups(),
                           "{{namespace}}/{{pod}}/{{container}} {{process}} [{{target}}] ({{instance}})")],
                   "s", w=20, h=6, thresh=red_at(stall), min=0,
                   links=[tcp_l, runbook_link("NodesleuthContainerOutputStalled")]),
        row("Full accept queues"),
        stat("Fullest accept queue",
             "The highest accept-queue length / limit of any listener (netlink source only; the procfs source "
             "has no limit). At 100% (NodesleuthTCPAcceptQueueFull: length >= limit) the kernel drops new "
             "connections: the process is not calling accept() fast enough.",
             [Target(f"max({sel('nodesleuth_tcp_listen_queue_length', POD)} / "
                     f"{sel('nodesleuth_tcp_listen_queue_limit', POD)})", instant=True)],
             "percentunit", red_at(1), noValue="0",
             links=[tcp_l, runbook_link("NodesleuthTCPAcceptQueueFull"),
                    runbook_link("NodesleuthNodeListenOverflows")]),
        timeseries("Accept-queue fill per listener (top 10)",
                   "Accept-queue length / limit per listening port. 100% means full: SYNs and ACKs are dropped and "
                   "clients see timeouts.",
                   [Target(f"topk(10, {sel('nodesleuth_tcp_listen_queue_length', POD)} / "
                           f"{sel('nodesleuth_tcp_listen_queue_limit', POD)})",
                           "{{namespace}}/{{pod}} :{{local_port}} ({{instance}})")],
                   "percentunit", w=20, h=6, thresh=red_at(1), min=0, links=[tcp_l]),
        row("Client connections IPVS forgot"),
        stat("Orphaned IPVS client connections",
             "ESTABLISHED client sockets to a Service VIP that IPVS has no entry for. Any is red "
             "(NodesleuthIPVSOrphanedConnections): the server's reply will be answered with RST and the client "
             "waits forever. Usually a call idle longer than the IPVS TCP timeout.",
             [Target(f"sum({sel('nodesleuth_ipvs_orphaned_connections', POD)})", instant=True)],
             "short", red_at(1), noValue="0",
             links=[ipvs_l, runbook_link("NodesleuthIPVSOrphanedConnections")]),
        stat("Near expiry",
             "Client connections whose IPVS entry has less than the near-expiry ratio of the TCP timeout left: "
             "tomorrow's orphans. Yellow when any (NodesleuthIPVSConnectionsNearExpiry, info).",
             [Target(f"sum({sel('nodesleuth_ipvs_connections_near_expiry', POD)})", instant=True)],
             "short", thresholds(("green", None), ("yellow", 1)), noValue="0",
             links=[ipvs_l, runbook_link("NodesleuthIPVSConnectionsNearExpiry")]),
        stat("Idle p99 / TCP timeout",
             f"Highest node-wide p{param('NodesleuthIPVSIdleNearTimeout', 'quantile') * 100:g} idle time of "
             f"ESTABLISHED IPVS entries as a share of the IPVS TCP timeout. Red from {idle:.0%} "
             f"(NodesleuthIPVSIdleNearTimeout): long calls come close to being orphaned.",
             [Target(f"max({idle_ratio_expr()})", instant=True)],
             "percentunit", red_at(idle), noValue="no entries",
             links=[ipvs_l, runbook_link("NodesleuthIPVSIdleNearTimeout")]),
        timeseries("Orphaned connections by pod and VIP",
                   "Orphaned client connections per pod and Service VIP. Absent when there are none; a flat line "
                   "above 0 is a client hanging on a dead connection.",
                   [Target(f"sum by (instance, namespace, pod, virtual_address, virtual_port) "
                           f"({sel('nodesleuth_ipvs_orphaned_connections', POD)})",
                           "{{namespace}}/{{pod}} → {{virtual_address}}:{{virtual_port}}")],
                   "short", w=12, h=6, links=[ipvs_l]),
        row("Memory retained by MADV_FREE (LazyFree)"),
        stat("LazyFree-dominated Go groups",
             f"Process groups (namespace, pod, container, process) running a Go runtime without madvdontneed=1 "
             f"whose LazyFree is at least {share:.0%} of RSS and at least {min_bytes >> 20} MiB "
             f"(NodesleuthGoMadvFreeRetention). That RSS is free memory the kernel has not reclaimed yet: it looks "
             f"like a leak and gets pods OOM-scored or restarted. Fix: GODEBUG=madvdontneed=1 or Go >= 1.16.",
             [Target(f"count({lazyfree_alert_expr()})", instant=True)],
             "short", red_at(1), noValue="0", links=[mem_l, runbook_link("NodesleuthGoMadvFreeRetention")]),
        timeseries("LazyFree share of RSS (top 10)",
                   "LazyFree / RSS per group (Go or not). Near 100% means almost all of the group's RSS is memory "
                   "it already gave back; the dashed line is the alert's share.",
                   [Target(f"topk(10, sum by (instance, namespace, pod, container, process) "
                           f"({sel('nodesleuth_process_lazyfree_bytes', POD)}) / sum by (instance, namespace, pod, "
                           f"container, process) ({sel('nodesleuth_process_resident_memory_bytes', POD)}) > 0)",
                           "{{namespace}}/{{pod}}/{{container}} {{process}}")],
                   "percentunit", w=20, h=6, thresh=red_at(share), min=0, max=1, links=[mem_l]),
        row("systemd and D-Bus"),
        stat("systemd cookie headroom",
             f"Days until systemd's D-Bus reply serial (its 32-bit message cookie) reaches 2^32 at the rate of the "
             f"last {COOKIE_FORECAST_WINDOW}, on the selected node closest to it. Orange below {warn_d} days, red "
             f"below {crit_d} (NodesleuthSystemdCookieExhaustion warning/critical): an unpatched systemd then "
             f"stops answering and the node goes NotReady. 'no growth' while the serial does not rise.",
             [Target(f"min({cookie_days()})", instant=True)],
             "d", thresholds(("red", None), ("orange", crit_d), ("green", warn_d)), noValue="no growth",
             links=[sd_l, runbook_link("NodesleuthSystemdCookieExhaustion")]),
        stat("Reply serial used",
             f"Highest fraction of the 32-bit cookie space systemd has used on any selected node. Red from "
             f"{crit_ratio:.0%} (NodesleuthSystemdCookieExhaustion critical). A patched systemd wraps to 50%; an "
             f"unpatched one fails at 100%.",
             [Target(f"max({sel('nodesleuth_systemd_reply_serial_ratio')})", instant=True)],
             "percentunit", red_at(crit_ratio), noValue="no systemd", graph=True,
             links=[sd_l, runbook_link("NodesleuthSystemdCookieExhaustion")]),
        stat("systemd not answering",
             "Nodes where systemd did not answer within the collector's timeout while dbus-daemon did: a hung "
             "PID 1 (NodesleuthSystemdUnresponsive). Container starts and stops hang behind it.",
             [Target(f"count({unresponsive_expr()})", instant=True)],
             "short", red_at(1), noValue="0", links=[sd_l, runbook_link("NodesleuthSystemdUnresponsive")]),
        stat("D-Bus down",
             "Nodes with a D-Bus socket whose dbus-daemon does not answer (NodesleuthDBusDown); nodes without "
             "D-Bus at all (nodesleuth_collector_source_present 0) are not counted.",
             [Target(f"count({dbus_down_expr()})", instant=True)],
             "short", red_at(1), noValue="0", links=[sd_l, runbook_link("NodesleuthDBusDown")]),
        stat("Leaked libcontainer slices",
             f"runc's `libcontainer_*_systemd_test_default.slice` units in memory on the worst selected node. Red "
             f"from {slices} (NodesleuthSystemdLeakedProbeSlices): runc's probe leaks them and each one churns "
             f"systemd's cookie.",
             [Target(f"max({LIBCONTAINER})", instant=True)],
             "short", red_at(slices), noValue="0",
             links=[sd_l, runbook_link("NodesleuthSystemdLeakedProbeSlices")]),
        row("Exporter health"),
        stat("Failing collectors",
             "Collectors that reported nodesleuth_scrape_collector_success 0 in their last scrape "
             "(NodesleuthCollectorFailing; the systemd collector is not counted while systemd itself is down, "
             "that is the systemd row's). Their data is partial or missing. A collector whose source does not "
             "exist on the node (no IPVS, no D-Bus) reports success 1.",
             [Target(f"count({collector_failing_expr()})", instant=True)],
             "short", red_at(1), noValue="0", links=[runbook_link("NodesleuthCollectorFailing")]),
        stat("Exporters up",
             "Scrape targets of the selected job(s) that answered Prometheus' last scrape out of all of them "
             "(NodesleuthExporterDown for each one down). Below 100% a node has no nodesleuth data at all.",
             [Target(f"sum(up{{{NODE}}}) / count(up{{{NODE}}})", instant=True)],
             "percentunit", thresholds(("red", None), ("green", 1)), noValue="no target",
             links=[runbook_link("NodesleuthExporterDown")]),
        timeseries("Collector duration",
                   "Time each collector took per scrape, on the slowest selected node. Close to the scrape "
                   "timeout means scrapes are about to fail.",
                   [Target(f"max by (collector) ({sel('nodesleuth_scrape_collector_duration_seconds')})",
                           "{{collector}} (slowest node)")],
                   "s", w=8, h=6, min=0),
        table("Collectors",
              "Per node and collector: success (1 ok, 0 failing) and whether its source exists on the node "
              "(0: no IPVS loaded / no D-Bus socket, which is not a failure).",
              [Target(f"min by (instance, collector) ({sel('nodesleuth_scrape_collector_success')})",
                      instant=True, fmt="table"),
               Target(f"min by (instance, collector) ({sel('nodesleuth_collector_source_present')})",
                      instant=True, fmt="table")],
              "short", w=8, h=6, rename={"Value #A": "success", "Value #B": "source present"}),
    ]
    return dashboard("nodesleuth-overview", "nodesleuth / node failure modes",
                     "One row per node failure mode nodesleuth detects; each row opens with a stat that turns red "
                     "at its alert's threshold and links to the detail dashboard and the runbook.",
                     ["overview"], items, variables("nodesleuth_tcp_sockets", ctx.multi_cluster, ctx.runbook_base))


def tcp(ctx):
    cw = param("NodesleuthTCPCloseWaitPileUp", "threshold")
    stall = stall_threshold()
    items = [
        row("Socket states per pod network namespace"),
        timeseries("TCP sockets by state (without ESTABLISHED)",
                   "TCP sockets per network namespace and state, ESTABLISHED and LISTEN left out so the rare states "
                   "are visible. CLOSE_WAIT that only grows is a leak; many SYN_RECV is a SYN flood or a slow "
                   "accept; FIN_WAIT2/LAST_ACK pile-ups point at a peer that does not finish closing.",
                   [Target(f"sum by (instance, namespace, pod, netns, state) "
                           f"({RARE_STATES}) > 0",
                           "{{namespace}}/{{pod}} [{{netns}}] {{state}}")],
                   "short", w=12),
        timeseries("ESTABLISHED sockets",
                   "ESTABLISHED TCP sockets per network namespace: the load baseline against which the other "
                   "states are judged. A sudden drop to 0 with CLOSE_WAIT rising is a stuck server.",
                   [Target(f"sum by (instance, namespace, pod, netns) "
                           f"({ESTAB})",
                           "{{namespace}}/{{pod}} [{{netns}}]")],
                   "short", w=12),
        row("CLOSE_WAIT by pod, process and port"),
        table("CLOSE_WAIT groups now (top 20)",
              f"CLOSE_WAIT sockets per owning process and local port. process empty: no process of the namespace "
              f"holds the socket; local_port (ephemeral): the client side of a pool; (other): beyond the exporter's "
              f"top N. Red from {cw} (NodesleuthTCPCloseWaitPileUp).",
              [Target(f"topk(20, sum by (instance, {CW_GROUP}) "
                      f"({sel('nodesleuth_tcp_close_wait_sockets', POD)}))", instant=True, fmt="table")],
              "short", w=24, h=8, sort="CLOSE_WAIT", rename={"Value": "CLOSE_WAIT"},
              thresh=thresholds(("green", None), ("red", cw)), cell="color-text"),
        timeseries("CLOSE_WAIT over time (top 10)",
                   "The same groups over time. A staircase that never comes down is the leak; a saw-tooth that "
                   "resets on restarts is the liveness probe hiding it.",
                   [Target(f"topk(10, sum by (instance, {CW_GROUP}) "
                           f"({sel('nodesleuth_tcp_close_wait_sockets', POD)}))",
                           "{{namespace}}/{{pod}} {{container}} {{process}} :{{local_port}}")],
                   "short", w=24, thresh=thresholds(("green", None), ("red", cw))),
        row("Accept queues"),
        timeseries("Accept queue length and limit per listener",
                   "Connections waiting to be accepted per listening port, with the queue's limit (listen "
                   "backlog; netlink source only). Length reaching the limit means the kernel drops connections.",
                   [Target(f"sum by (instance, namespace, pod, local_port) "
                           f"({sel('nodesleuth_tcp_listen_queue_length', POD)}) > 0",
                           "{{namespace}}/{{pod}} :{{local_port}} length"),
                    Target(f"sum by (instance, namespace, pod, local_port) "
                           f"({sel('nodesleuth_tcp_listen_queue_limit', POD)}) and on(instance, namespace, pod, "
                           f"local_port) sum by (instance, namespace, pod, local_port) "
                           f"({sel('nodesleuth_tcp_listen_queue_length', POD)}) > 0",
                           "{{namespace}}/{{pod}} :{{local_port}} limit")],
                   "short", w=12),
        table("Fullest listeners",
              "Length / limit per listener, fullest first. 100% and above: full (NodesleuthTCPAcceptQueueFull).",
              [Target(f"topk(20, {sel('nodesleuth_tcp_listen_queue_length', POD)} / "
                      f"{sel('nodesleuth_tcp_listen_queue_limit', POD)})", instant=True, fmt="table")],
              "percentunit", w=12, sort="fill", rename={"Value": "fill"}, exclude=("netns",),
              thresh=thresholds(("green", None), ("orange", 0.8),
                                ("red", 1)),
              cell="color-background"),
        row("Container output: writers stuck on stdout/stderr (the hang behind CLOSE_WAIT)"),
        table("Stalled output writers now",
              f"Process groups with a thread blocked writing stdout/stderr while the process wrote nothing: for "
              f"how long, how many threads, and on what (tty: a terminal, set tty: false; pipe: the runtime "
              f"stopped draining it). Red from {stall:g} s (NodesleuthContainerOutputStalled). Empty when "
              f"nothing is stuck.",
              [Target(stalled_groups(), instant=True, fmt="table"),
               Target(f"max by ({OUT_GROUP}) ({sel('nodesleuth_output_stalled_threads', POD)})",
                      instant=True, fmt="table")],
              "s", w=12, sort="stalled", rename={"Value #A": "stalled", "Value #B": "threads"},
              thresh=thresholds(("green", None), ("red", stall)), cell="color-text",
              overrides=[unit_of("threads", "short")],
              links=[runbook_link("NodesleuthContainerOutputStalled")]),
        table("Containers writing to a terminal (tty: true)",
              "Processes per container and stream whose stdout or stderr is a terminal (/dev/pts): containers "
              "run with tty: true. Each is one long log line away from the terminal hang when the runtime's console "
              "reader stops reading (NodesleuthContainerOutputStalled, critical); a service needs no terminal.",
              [Target(f"sum by ({OUT_CONTAINER}, stream) "
                      f"({TTY_WRITERS})",
                      instant=True, fmt="table")],
              "short", w=12, sort="processes", rename={"Value": "processes"}),
        timeseries("Container processes by output target",
                   "Processes of pod containers per node by what their stdout/stderr is: tty (tty: true), pipe "
                   "(the CRI default), file, socket, null. A rise of tty means new pods with tty: true.",
                   [Target(f"sum by (instance, target) ({sel('nodesleuth_container_output_processes', POD)})",
                           "{{instance}} {{target}}")],
                   "short", w=12),
        timeseries("Log age of containers with a stalled or terminal writer",
                   "Seconds since the container's newest log file under the kubelet's pod log directory was "
                   "written, for containers with a stalled writer or a terminal. A log that stops growing while its "
                   "process is blocked on output confirms the stall; quiet services have old logs too.",
                   [Target(f"max by ({OUT_CONTAINER}) ({sel('nodesleuth_container_log_age_seconds', POD)}) "
                           f"and on ({OUT_CONTAINER}) (group by ({OUT_CONTAINER}) "
                           f"({sel('nodesleuth_output_stalled_seconds', POD)}) or group by ({OUT_CONTAINER}) "
                           f"({TTY_WRITERS}))",
                           "{{namespace}}/{{pod}}/{{container}} ({{instance}})")],
                   "s", w=12, min=0),
        timeseries("Partial log lines (lines over 16 KiB)",
                   "CRI partial (P) records in the tail of each container's log: pieces of lines longer than 16 KiB. "
                   "Very long log lines written fast are what triggered the terminal hang of the documented "
                   "incident; on a pipe they only make logs hard to read.",
                   [Target(f"topk(10, max by ({OUT_CONTAINER}) "
                           f"({sel('nodesleuth_container_log_partial_lines', POD)}) > 0)",
                           "{{namespace}}/{{pod}}/{{container}} ({{instance}})")],
                   "short", w=12, min=0),
        timeseries("Output collector: candidate and unreadable threads",
                   "Threads whose syscall the output collector read this scrape (state and wchan made them "
                   "candidates: its cost), and candidates whose syscall it could not read (no ptrace access): "
                   "above 0, stalls of those processes cannot be seen.",
                   [Target(f"max by (instance) ({sel('nodesleuth_output_candidate_threads')})",
                           "{{instance}} candidates"),
                    Target(f"max by (instance) ({sel('nodesleuth_output_unreadable_threads')})",
                           "{{instance}} unreadable")],
                   "short", w=12, min=0),
        row("Kernel counters (node_exporter, host namespace)"),
        timeseries("Listen overflows and drops",
                   "node_exporter's netstat counters (host network namespace only; its default netstat collector "
                   "exports them) on the selected nodes: accept-queue overflows and dropped SYNs per second. Any "
                   "sustained rate means some listener's queue is full (NodesleuthNodeListenOverflows).",
                   [Target(on_selected_hosts("rate(node_netstat_TcpExt_ListenOverflows[$__rate_interval])"),
                           "{{host}} ListenOverflows"),
                    Target(on_selected_hosts("rate(node_netstat_TcpExt_ListenDrops[$__rate_interval])"),
                           "{{host}} ListenDrops")],
                   "pps", w=12, links=[runbook_link("NodesleuthNodeListenOverflows")]),
        timeseries("Retransmitted segments",
                   "node_exporter's TCP retransmissions as a share of sent segments on the selected nodes (host "
                   "namespace). More than about 1% points at loss or an overloaded peer.",
                   [Target(on_selected_hosts("rate(node_netstat_Tcp_RetransSegs[$__rate_interval]) / "
                                             "rate(node_netstat_Tcp_OutSegs[$__rate_interval])"),
                           "{{host}} retransmitted / sent")],
                   "percentunit", w=12, min=0),
        row("Collector cost"),
        timeseries("Namespaces read per source",
                   "Network namespaces the TCP collector read this scrape, per source (netlink or the procfs "
                   "fallback). procfs means no accept-queue limits and a costlier read.",
                   [Target(f"sum by (instance, source) ({sel('nodesleuth_tcp_namespaces')})",
                           "{{instance}} {{source}}")],
                   "short", w=12),
        timeseries("Socket-table walks",
                   "Walks of the kernel's socket table per second (each costs about 15 ms at 100k sockets). "
                   "Several per scrape per namespace means the exact-count path is in use.",
                   [Target(f"rate({sel('nodesleuth_tcp_socket_table_walks_total')}[$__rate_interval])",
                           "{{instance}}")],
                   "ops", w=12),
    ]
    return dashboard("nodesleuth-tcp", "nodesleuth / TCP: CLOSE_WAIT and accept queues",
                     "TCP states per pod network namespace, CLOSE_WAIT by owning process and port, accept queues, "
                     "and the processes stuck writing their output behind a hang.",
                     ["tcp"], items, variables("nodesleuth_tcp_sockets", ctx.multi_cluster, ctx.runbook_base))


def ipvs(ctx):
    svc = "protocol, virtual_address, virtual_port"
    client = "instance, namespace, pod, virtual_address, virtual_port"
    items = [
        row("Client connections IPVS forgot"),
        timeseries("Orphaned client connections by pod and VIP",
                   "ESTABLISHED sockets of a pod to a Service VIP with no IPVS entry: the reply path is gone and "
                   "the client hangs until its own timeout. Absent when 0; anything above 0 is red "
                   "(NodesleuthIPVSOrphanedConnections).",
                   [Target(f"sum by ({client}) ({sel('nodesleuth_ipvs_orphaned_connections', POD)})",
                           "{{namespace}}/{{pod}} → {{virtual_address}}:{{virtual_port}}")],
                   "short", w=12, thresh=thresholds(("green", None), ("red", 1)),
                   links=[runbook_link("NodesleuthIPVSOrphanedConnections")]),
        timeseries("Near-expiry client connections by pod and VIP",
                   "Client connections whose IPVS entry has less than the near-expiry ratio of the TCP timeout "
                   "left: idle calls about to be orphaned. Long calls without TCP keepalive show up here first.",
                   [Target(f"sum by ({client}) ({sel('nodesleuth_ipvs_connections_near_expiry', POD)})",
                           "{{namespace}}/{{pod}} → {{virtual_address}}:{{virtual_port}}")],
                   "short", w=12),
        table("Client connections to VIPs now",
              "Per pod and VIP: ESTABLISHED client connections, of them orphaned and near expiry (empty = 0).",
              [Target(f"sum by ({client}) ({sel('nodesleuth_ipvs_client_connections', POD)})",
                      instant=True, fmt="table"),
               Target(f"sum by ({client}) ({sel('nodesleuth_ipvs_orphaned_connections', POD)})",
                      instant=True, fmt="table"),
               Target(f"sum by ({client}) ({sel('nodesleuth_ipvs_connections_near_expiry', POD)})",
                      instant=True, fmt="table")],
              "short", w=24, sort="orphaned",
              rename={"Value #A": "client connections", "Value #B": "orphaned", "Value #C": "near expiry"}),
        row("Idle time of ESTABLISHED entries against the TCP timeout"),
        heatmap("ESTABLISHED entries by idle time",
                "Node-wide ESTABLISHED TCP entries of the IPVS table by idle time (TCP timeout − expires), one "
                "column per scrape. Cells in the top rows (idle close to the timeout, 900 s by default) are "
                "connections about to be dropped; the panel to the right draws the timeout itself.",
                [Target(idle_buckets(""), "{{le}}",
                        fmt="heatmap")],
                "short", "s", w=12),
        timeseries("Longest idle entry per service vs TCP timeout",
                   "Longest idle ESTABLISHED entry per virtual service, the node-wide p99 idle time, and the IPVS "
                   "TCP timeout. A service line touching the timeout line loses connections to orphaning.",
                   [Target(f"max by ({svc}) ({sel('nodesleuth_ipvs_established_idle_max_seconds')})",
                           "{{protocol}} {{virtual_address}}:{{virtual_port}} longest idle"),
                    Target(f"histogram_quantile(0.99, {idle_buckets('instance, ')})", "{{instance}} p99 idle"),
                    Target(f"max by (instance) ({TCP_TIMEOUT})",
                           "{{instance}} IPVS TCP timeout")],
                   "s", w=12, min=0, overrides=[series_style("C", "red")]),
        row("Connection table"),
        timeseries("Connection-table entries per service and state",
                   "IPVS connection-table entries per virtual service and state (stacked). Growing TIME_WAIT/FIN "
                   "entries are normal churn; ESTABLISHED growing without traffic growth is stuck clients.",
                   [Target(f"sum by ({svc}, state) ({sel('nodesleuth_ipvs_connection_entries')})",
                           "{{protocol}} {{virtual_address}}:{{virtual_port}} {{state}}")],
                   "short", w=12, stack=True),
        timeseries("Entries without a service",
                   "Connection entries whose virtual address is no listed service: firewall-mark traffic or entries "
                   "that outlived a deleted Service. Growth after Service deletions is kube-proxy leaving entries.",
                   [Target(f"sum by (instance) ({sel('nodesleuth_ipvs_connection_entries_without_service')})",
                           "{{instance}}")],
                   "short", w=6),
        stat("Virtual services / real servers",
             "Virtual services and real servers in the IPVS table of the selected nodes. 0 services on a node "
             "that should run kube-proxy in IPVS mode means its table was flushed.",
             [Target(f"sum({sel('nodesleuth_ipvs_virtual_services')})", "virtual services", instant=True),
              Target(f"sum({sel('nodesleuth_ipvs_real_servers')})", "real servers", instant=True)],
             "short", thresholds(("green", None)), w=6, h=8),
        timeseries("Connections scheduled",
                   "New connections IPVS scheduled per second (ip_vs_stats). A drop to 0 while clients still call "
                   "Services means kube-proxy's table is gone.",
                   [Target(f"rate({sel('nodesleuth_ipvs_connections_total')}[$__rate_interval])", "{{instance}}")],
                   "cps", w=12),
        timeseries("Traffic through IPVS",
                   "Bytes per second into and out of IPVS (ip_vs_stats) per node.",
                   [Target(f"rate({sel('nodesleuth_ipvs_incoming_bytes_total')}[$__rate_interval])",
                           "{{instance}} in"),
                    Target(f"rate({sel('nodesleuth_ipvs_outgoing_bytes_total')}[$__rate_interval])",
                           "{{instance}} out")],
                   "Bps", w=12),
        row("Backends (with --collector.ipvs.backend-metrics=true)"),
        table("Real servers",
              "Per real server: active and inactive connections and weight. Only with "
              "--collector.ipvs.backend-metrics=true (off by default); empty otherwise. A weight-0 backend with "
              "active connections is draining; all backends of a service at weight 0 is an outage.",
              [Target(f"sum by ({svc}, real_address, real_port) "
                      f"({sel('nodesleuth_ipvs_backend_connections_active')})", instant=True, fmt="table"),
               Target(f"sum by ({svc}, real_address, real_port) "
                      f"({sel('nodesleuth_ipvs_backend_connections_inactive')})", instant=True, fmt="table"),
               Target(f"max by ({svc}, real_address, real_port) "
                      f"({sel('nodesleuth_ipvs_backend_weight')})", instant=True, fmt="table")],
              "short", w=24, sort="active",
              rename={"Value #A": "active", "Value #B": "inactive", "Value #C": "weight"}),
        row("Timeouts"),
        table("IPVS timeouts",
              "IPVS timeouts per node and where they come from (netlink: the kernel; flag: the exporter's flags "
              "because the kernel's could not be read). Compare tcp with your clients' keepalive interval.",
              [Target(f"max by (instance, timeout, protocol, source) ({sel('nodesleuth_ipvs_timeout_seconds')})",
                      instant=True, fmt="table")],
              "s", w=24, h=6, rename={"Value": "timeout"}),
    ]
    return dashboard("nodesleuth-ipvs", "nodesleuth / IPVS: orphaned client connections",
                     "Client connections IPVS forgot, idle time against the TCP timeout, the connection table.",
                     ["ipvs"], items, variables("nodesleuth_ipvs_client_connections", ctx.multi_cluster,
                                                ctx.runbook_base))


def memory(ctx):
    share, min_bytes = param("NodesleuthGoMadvFreeRetention", "share"), param("NodesleuthGoMadvFreeRetention",
                                                                              "min_bytes")
    grp = "instance, namespace, pod, container"
    kept = sel("nodesleuth_process_resident_memory_minus_lazyfree_bytes", POD)
    lazy = sel("nodesleuth_process_lazyfree_bytes", POD)
    rss = sel("nodesleuth_process_resident_memory_bytes", POD)
    gogrp = "instance, namespace, pod, container, process, go_version, module, madvdontneed"
    goinfo = sel("nodesleuth_process_go_info", POD)
    # Go 1.12-1.15 default to MADV_FREE; any Go with madvdontneed=0 does too.
    need = (f"max by ({gogrp}) ({GO_MADV0} or "
            f"{GO_OLD})")
    cadvisor = 'cluster=~"$cluster", namespace=~"$namespace", pod=~"$pod", container!="", container!="POD"'
    items = [
        row("RSS split: kept vs LazyFree, per container"),
        timeseries("RSS − LazyFree and LazyFree per container (stacked), against the limit",
                   "Per container: what its processes keep under memory pressure (RSS − LazyFree) and, stacked on "
                   "top, memory already returned with MADV_FREE that still counts in RSS (LazyFree), with "
                   "cAdvisor's memory limit where it is set. A tall LazyFree band reaching the limit is the "
                   "'leak that is not a leak'.",
                   [Target(f"sum by ({grp}) ({kept})", "{{namespace}}/{{pod}}/{{container}} RSS − LazyFree"),
                    Target(f"sum by ({grp}) ({lazy})", "{{namespace}}/{{pod}}/{{container}} LazyFree"),
                    Target(f"max by (namespace, pod, container) "
                           f"(container_spec_memory_limit_bytes{{{cadvisor}}}) > 0",
                           "{{namespace}}/{{pod}}/{{container}} limit (cAdvisor)")],
                   "bytes", w=24, h=9, stack=True, overrides=[series_style("C", "red")]),
        table("LazyFree share per group",
              f"Per process group: RSS, LazyFree, RSS − LazyFree and LazyFree / RSS, largest share first. Red from "
              f"{share:.0%} (NodesleuthGoMadvFreeRetention also needs {min_bytes >> 20} MiB of LazyFree and a Go "
              f"runtime without madvdontneed=1).",
              [Target(f"sum by ({grp}, process) ({rss})", instant=True, fmt="table"),
               Target(f"sum by ({grp}, process) ({lazy})", instant=True, fmt="table"),
               Target(f"sum by ({grp}, process) ({kept})", instant=True, fmt="table"),
               Target(f"sum by ({grp}, process) ({lazy}) / sum by ({grp}, process) ({rss}) > 0",
                      instant=True, fmt="table")],
              "bytes", w=24, sort="LazyFree",
              rename={"Value #A": "RSS", "Value #B": "LazyFree", "Value #C": "RSS − LazyFree",
                      "Value #D": "LazyFree / RSS"}),
        row("Go runtimes"),
        table("Go runtimes and madvdontneed",
              "Every Go runtime found (from the binary's build info): version, main module and the effective "
              "madvdontneed setting. 'needs madvdontneed=1' is 1 (red) for Go 1.12–1.15 without "
              "GODEBUG=madvdontneed=1 and for any Go with madvdontneed=0: those return memory with MADV_FREE.",
              [Target(f"({need}) or (0 * max by ({gogrp}) ({goinfo}))", instant=True, fmt="table")],
              "short", w=24, sort="needs madvdontneed=1", rename={"Value": "needs madvdontneed=1"},
              thresh=thresholds(("green", None), ("red", 1)), cell="color-background"),
        row("Processes"),
        timeseries("Processes per group",
                   "Processes per (namespace, pod, container, process) group. A count that only rises is a fork "
                   "leak; (other) collects the groups beyond the exporter's top N.",
                   [Target(f"topk(15, sum by ({grp}, process) ({sel('nodesleuth_processes', POD)}))",
                           "{{namespace}}/{{pod}}/{{container}} {{process}}")],
                   "short", w=8),
        timeseries("Swap per container",
                   "Swapped-out memory per container. Any swap on a Kubernetes node is unusual; growth means real "
                   "memory pressure (then LazyFree is being reclaimed too).",
                   [Target(f"sum by ({grp}) ({sel('nodesleuth_process_swap_bytes', POD)}) > 0",
                           "{{namespace}}/{{pod}}/{{container}}")],
                   "bytes", w=8),
        timeseries("Processes whose /proc reads hang (quarantined)",
                   "Processes the memory collector skips because a read of their smaps_rollup, environ or "
                   "executable hung (a fault on a dead NFS or FUSE mount: the 'ps hangs' node). Anything above 0 "
                   "for long is a node to log into; those processes are in no group above.",
                   [Target(f"max by (instance) ({sel('nodesleuth_memory_quarantined_processes')})", "{{instance}}")],
                   "short", w=8),
    ]
    return dashboard("nodesleuth-memory", "nodesleuth / memory: LazyFree and Go runtimes",
                     "RSS split into RSS − LazyFree and LazyFree per container, and the Go runtimes that return "
                     "memory with MADV_FREE.",
                     ["memory"], items, variables("nodesleuth_processes", ctx.multi_cluster, ctx.runbook_base))


def systemd(ctx):
    ck = param("NodesleuthSystemdCookieExhaustion.warning", "horizon") // 86400
    crit = param("NodesleuthSystemdCookieExhaustion.critical", "horizon") // 86400
    ratio = sel("nodesleuth_systemd_reply_serial_ratio")
    updown = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red", "index": 0},
                                            "1": {"text": "UP", "color": "green", "index": 1}}}]
    items = [
        row("Reply serial (D-Bus cookie)"),
        timeseries(f"Reply serial used, with its {ck}-day linear forecast",
                   f"Fraction of systemd's 32-bit D-Bus cookie space used (reply serial / 2^32) and where the "
                   f"linear fit of the last {COOKIE_FORECAST_WINDOW} puts it in {ck} days. The forecast crossing "
                   f"100% is NodesleuthSystemdCookieExhaustion; a drop to ~0 is systemd reconnecting to the bus, a "
                   f"drop to 50% a patched systemd wrapping.",
                   [Target(f"max by (instance) ({ratio})", "{{instance}} used"),
                    Target(f"max by (instance) (predict_linear({ratio}[{COOKIE_FORECAST_WINDOW}], {ck} * 86400))",
                           f"{{{{instance}}}} in {ck} days")],
                   "percentunit", w=12, min=0, thresh=thresholds(("green", None), ("red", 1))),
        table("Predicted overflow",
              f"Per node: the serial, days until it reaches 2^32 at the rate of the last {COOKIE_FORECAST_WINDOW} "
              f"and that date. Orange below {ck} days, red below {crit} (NodesleuthSystemdCookieExhaustion). "
              f"Empty days: the serial is not growing.",
              [Target(f"max by (instance) ({sel('nodesleuth_systemd_reply_serial')})", instant=True, fmt="table"),
               Target(f"min by (instance) ({cookie_days()})", instant=True, fmt="table"),
               Target(f"min by (instance) (time() + {cookie_days()} * 86400) * 1000", instant=True, fmt="table")],
              "d", w=12, sort="days left",
              rename={"Value #A": "reply serial", "Value #B": "days left", "Value #C": "overflow date"},
              thresh=thresholds(("red", None), ("orange", crit), ("green", ck)), cell="color-text"),
        row("systemd and D-Bus up"),
        stat("systemd up",
             "Whether systemd answered within the collector's timeout, per node. DOWN with D-Bus UP is a hung "
             "PID 1 (NodesleuthSystemdUnresponsive); both DOWN on a node without D-Bus is expected (see source "
             "present on the overview).",
             [Target(f"min by (instance) ({sel('nodesleuth_systemd_up')})", "{{instance}}", instant=True)],
             "short", thresholds(("red", None), ("green", 1)), w=6, h=5, mappings=updown,
             links=[runbook_link("NodesleuthSystemdUnresponsive")]),
        stat("D-Bus up",
             "Whether dbus-daemon answered, per node (NodesleuthDBusDown when the socket exists but it does not).",
             [Target(f"min by (instance) ({sel('nodesleuth_dbus_up')})", "{{instance}}", instant=True)],
             "short", thresholds(("red", None), ("green", 1)), w=6, h=5, mappings=updown,
             links=[runbook_link("NodesleuthDBusDown")]),
        timeseries("Call latency",
                   "Round trip of this scrape's calls to systemd per method. Seconds instead of milliseconds means "
                   "PID 1 is busy or stuck; at the collector's timeout it counts as down.",
                   [Target(f"max by (instance, method) ({sel('nodesleuth_systemd_call_duration_seconds')})",
                           "{{instance}} {{method}}")],
                   "s", w=12, h=5),
        row("Transient-unit churn"),
        timeseries("Jobs installed and failed",
                   "Jobs systemd installs per second (every transient unit, e.g. a container scope, is one) and "
                   "failed jobs. Each job costs cookies; high churn shortens the time to overflow.",
                   [Target(f"rate({sel('nodesleuth_systemd_installed_jobs_total')}[$__rate_interval])",
                           "{{instance}} installed"),
                    Target(f"rate({sel('nodesleuth_systemd_failed_jobs_total')}[$__rate_interval])",
                           "{{instance}} failed")],
                   "ops", w=12),
        timeseries("Units matching the watched patterns",
                   "Loaded units per --collector.systemd.unit-patterns pattern. libcontainer_*_systemd_test_default"
                   ".slice should be 0: a growing count is runc's leaked probe slices.",
                   [Target(f"max by (instance, pattern) ({sel('nodesleuth_systemd_pattern_units')})",
                           "{{instance}} {{pattern}}")],
                   "short", w=12),
        timeseries("Failed units, queued jobs, names",
                   "Units in the failed state, jobs queued, and unit names in memory. Queued jobs that do not drain "
                   "mean systemd is stuck; names growing without bound mean leaked units.",
                   [Target(f"max by (instance) ({sel('nodesleuth_systemd_failed_units')})", "{{instance}} failed units"),
                    Target(f"max by (instance) ({sel('nodesleuth_systemd_jobs')})", "{{instance}} queued jobs"),
                    Target(f"max by (instance) ({sel('nodesleuth_systemd_names')})", "{{instance}} names")],
                   "short", w=12),
        table("Key units",
              "Active state of the key units (kubelet, container runtime, dbus) per node, and restarts in the "
              "range. failed or many restarts: the node's container stack is flapping.",
              [Target(f"max by (instance, unit, state) ({sel('nodesleuth_systemd_unit_state')}) == 1",
                      instant=True, fmt="table"),
               Target(f"max by (instance, unit) (increase({sel('nodesleuth_systemd_unit_restarts_total')}"
                      f"[$__range]))", instant=True, fmt="table")],
              "short", w=12, rename={"Value #A": "active (1)", "Value #B": "restarts in range"}),
        row("dbus-daemon"),
        timeseries("Connections and match rules",
                   "dbus-daemon's active connections and match rules. Match rules growing without bound is a "
                   "client leaking subscriptions, which slows every signal systemd sends.",
                   [Target(f"max by (instance) ({sel('nodesleuth_dbus_active_connections')})",
                           "{{instance}} connections"),
                    Target(f"max by (instance) ({sel('nodesleuth_dbus_match_rules')})", "{{instance}} match rules"),
                    Target(f"max by (instance) ({sel('nodesleuth_dbus_bus_names')})", "{{instance}} bus names")],
                   "short", w=12),
        timeseries("New bus connections",
                   "Connections dbus-daemon accepted per second (from the highest unique name). A steady high rate "
                   "is a client reconnecting in a loop.",
                   [Target(f"rate({sel('nodesleuth_dbus_connections_total')}[$__rate_interval])", "{{instance}}")],
                   "cps", w=12),
    ]
    return dashboard("nodesleuth-systemd", "nodesleuth / systemd and D-Bus",
                     "systemd's D-Bus reply serial and its overflow forecast, systemd and D-Bus health, "
                     "transient-unit churn and dbus-daemon statistics.",
                     ["systemd"], items, variables(None, ctx.multi_cluster, ctx.runbook_base))


# ---------------------------------------------------------------------------------------------------------------------
# Text picture of each dashboard, rendered from the generated JSON (no Grafana can run where this is built)

COL = 4  # characters per grid column


def ascii_layout(d):
    panels = d["panels"]
    cuts = sorted({p["gridPos"]["y"] for p in panels} | {p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels})
    rows_at = {p["gridPos"]["y"] for p in panels if p["type"] == "row"}
    line = {cuts[0]: 0}
    for a, b in zip(cuts, cuts[1:]):
        line[b] = line[a] + (1 if a in rows_at and b == a + 1 else max(3, -(-(b - a) * 3 // 5)))
    width = 24 * COL + 1
    canvas = [[" "] * width for _ in range(line[cuts[-1]] + 1)]

    def put(y, x, text, limit):
        for i, ch in enumerate(text[:limit]):
            canvas[y][x + i] = ch

    for p in panels:
        g = p["gridPos"]
        x0, x1 = g["x"] * COL, (g["x"] + g["w"]) * COL
        y0, y1 = line[g["y"]], line[g["y"] + g["h"]]
        if p["type"] == "row":
            put(y0, 0, f"== {p['title']} ".ljust(width, "="), width)
            continue
        for x in range(x0, x1 + 1):
            for y in (y0, y1):
                canvas[y][x] = "+" if x in (x0, x1) else ("-" if canvas[y][x] in " -" else canvas[y][x])
        for y in range(y0 + 1, y1):
            canvas[y][x0] = canvas[y][x1] = "|"
        inner = x1 - x0 - 2
        words, lines_, cur = p["title"].split(), [], ""
        for w in words:
            if cur and len(cur) + 1 + len(w) > inner:
                lines_.append(cur)
                cur = w
            else:
                cur = f"{cur} {w}".strip()
        lines_.append(cur)
        lines_.append(f"[{p['type']}, {p['fieldConfig']['defaults']['unit']}]")
        avail = y1 - y0 - 1
        if len(lines_) > avail:
            lines_ = lines_[:avail - 1] + [lines_[-1]]
        for i, text in enumerate(lines_):
            put(y0 + 1 + i, x0 + 1, text, inner)
    return "\n".join("".join(r).rstrip() for r in canvas)


def layout_md(texts):
    out = ["# nodesleuth dashboards: panel layout", "",
           "Generated by `python3 dashboards/generate.py` from the JSON in `dist/` (do not edit). Each box is a "
           "panel at its grid position (24 columns, 4 characters each; heights compressed), with its type and "
           "unit; `==` lines are rows. No Grafana runs where this project is built and tested, so this is the "
           "picture instead of a screenshot.", ""]
    for name, text in texts.items():
        d = json.loads(text)
        n = sum(1 for p in d["panels"] if p["type"] != "row")
        out += [f"## {d['title']}", "", f"`dist/{name}.json`, uid `{d['uid']}`, {n} panels.", "", "```",
                ascii_layout(d), "```", ""]
    return "\n".join(out)


DASHBOARDS = {"overview": overview, "tcp": tcp, "ipvs": ipvs, "memory": memory, "systemd": systemd}


def render(ctx):
    """{relative path under dashboards/: text}"""
    texts = {name: json.dumps(fn(ctx), indent=2, ensure_ascii=False) + "\n" for name, fn in DASHBOARDS.items()}
    out = {f"dist/{name}.json": text for name, text in texts.items()}
    out["LAYOUT.md"] = layout_md(texts)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runbook-base-url", default=RUNBOOK_BASE,
                    help=f"where docs/runbooks/<AlertName>.md is served (default: {RUNBOOK_BASE})")
    ap.add_argument("--multi-cluster", action="store_true", help="show the cluster variable")
    ap.add_argument("--out", type=Path, default=HERE, help="directory holding dist/ and LAYOUT.md (default dashboards/)")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    ctx = ap.parse_args(argv)
    ctx.runbook_base = ctx.runbook_base_url.rstrip("/")
    out = render(ctx)
    present = {f"dist/{p.name}" for p in (ctx.out / "dist").glob("*.json")}
    if ctx.check:
        stale = sorted(n for n, text in out.items() if not (ctx.out / n).is_file() or (ctx.out / n).read_text() != text)
        extra = sorted(present - set(out))
        if stale or extra:
            print(f"out of date: {stale + extra}; run python3 dashboards/generate.py", file=sys.stderr)
            return 1
        return 0
    (ctx.out / "dist").mkdir(parents=True, exist_ok=True)
    for name, text in out.items():
        (ctx.out / name).write_text(text)
    for extra in present - set(out):
        (ctx.out / extra).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

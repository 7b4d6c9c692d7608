#!/usr/bin/env python3
"""Inhibition with the real Alertmanager 0.25 (Debian prometheus-alertmanager).

    inhibit_test.py INHIBIT_RULES_YAML

Starts Alertmanager on loopback with the shipped inhibit rules and a plain webhook receiver written here, posts root
causes together with their symptoms (and look-alikes on other nodes/pods that must NOT be inhibited) through the API,
and checks that exactly the expected alerts are notified and that the others are reported as suppressed by
Alertmanager itself (status.inhibitedBy), not merely late.
"""
import http.server
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
import tempfile
import threading
import time
import urllib.request

AM = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "bench"))
from benchlib import free_port  # noqa: E402  (one free-port helper for every Python test and benchmark)


received = []
lock = threading.Lock()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            for a in body["alerts"]:
                if a["status"] == "firing":
                    received.append(a["labels"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def key(labels):
    where = f'{labels.get("node", "")}|{labels.get("namespace", "")}/{labels.get("pod", "")}'
    return (labels["alertname"], labels["severity"], where)


def alert(name, severity, **labels):
    return {"labels": {"alertname": name, "severity": severity, "cluster": "c1", **labels},
            "annotations": {"summary": name}}


# (alert, expected to be notified?)
CASES = [
    # systemd hung on n1: PLEG and NotReady of n1 (ours and kubernetes-mixin's) are symptoms
    (alert("NodesleuthSystemdUnresponsive", "critical", node="n1", instance="10.0.0.1:9741"), True),
    (alert("NodesleuthKubeletPLEGSlow", "warning", node="n1", instance="10.0.0.1:10250"), False),
    (alert("NodesleuthNodeNotReady", "warning", node="n1"), False),
    (alert("KubeNodeNotReady", "warning", node="n1"), False),
    (alert("NodesleuthNodeNotReady", "warning", node="n2"), True),  # another node: not inhibited
    # D-Bus down on n8 inhibits n8's PLEG alert
    (alert("NodesleuthDBusDown", "critical", node="n8", instance="10.0.0.8:9741"), True),
    (alert("KubeletPlegDurationHigh", "warning", node="n8"), False),
    # hung container: its own liveness-restart noise is inhibited, another pod's is not
    (alert("NodesleuthContainerHungRestarting", "critical", namespace="shop", pod="api-0", container="api"), True),
    (alert("NodesleuthContainerLivenessRestarting", "warning", namespace="shop", pod="api-0", container="api"), False),
    (alert("KubePodCrashLooping", "warning", namespace="shop", pod="api-0", container="api"), False),
    (alert("NodesleuthContainerLivenessRestarting", "warning", namespace="shop", pod="web-0", container="web"), True),
    # a process of shop/api-1 stuck writing to its terminal (critical): its pod's restarts, CLOSE_WAIT and full
    # accept queue are symptoms, the hung-container alert too (it would only repeat the cause)
    (alert("NodesleuthContainerOutputStalled", "critical", node="n1", instance="10.0.0.1:9741", namespace="shop",
           pod="api-1", container="api", process="api", target="tty"), True),
    (alert("NodesleuthContainerLivenessRestarting", "warning", namespace="shop", pod="api-1", container="api"), False),
    (alert("KubePodCrashLooping", "warning", namespace="shop", pod="api-1", container="api"), False),
    (alert("NodesleuthContainerHungRestarting", "critical", namespace="shop", pod="api-1", container="api"), False),
    (alert("NodesleuthTCPCloseWaitPileUp", "warning", node="n1", instance="10.0.0.1:9741", namespace="shop",
           pod="api-1", container="api", process="api", local_port="8080", netns="4026532010"), False),
    (alert("NodesleuthTCPAcceptQueueFull", "warning", node="n1", instance="10.0.0.1:9741", namespace="shop",
           pod="api-1", local_port="8080", netns="4026532010"), False),
    # the pile-up of another pod on the same node is not
    (alert("NodesleuthTCPCloseWaitPileUp", "warning", node="n1", instance="10.0.0.1:9741", namespace="shop",
           pod="web-1", container="web", process="nginx", local_port="80", netns="4026532011"), True),
    # a stalled stdout pipe (warning) silences the warnings of shop/log-1 but never pages down its critical
    # hung-container alert
    (alert("NodesleuthContainerOutputStalled", "warning", node="n1", instance="10.0.0.1:9741", namespace="shop",
           pod="log-1", container="shipper", process="shipper", target="pipe"), True),
    (alert("NodesleuthContainerLivenessRestarting", "warning", namespace="shop", pod="log-1", container="shipper"),
     False),
    (alert("NodesleuthContainerHungRestarting", "critical", namespace="shop", pod="log-1", container="shipper"), True),
    # stalls without a pod (the exporter's (other) group, a host process) inhibit nothing: their empty pod would
    # otherwise "equal" the pod-less alerts of every node
    (alert("NodesleuthContainerOutputStalled", "warning", node="n6", instance="10.0.0.6:9741", process="(other)"),
     True),
    (alert("NodesleuthTCPCloseWaitPileUp", "warning", node="n6", instance="10.0.0.6:9741", process="haproxy",
           local_port="443", netns="host"), True),
    (alert("NodesleuthTCPCloseWaitPileUp", "warning", node="n4", instance="10.0.0.4:9741", process="haproxy",
           local_port="443", netns="host"), True),
    # conntrack drops on n3 explain CoreDNS latency on n3, not on n4
    (alert("NodesleuthNodeConntrackDropping", "critical", node="n3", instance="10.0.0.3:9100"), True),
    (alert("NodesleuthCoreDNSLatencyHigh", "warning", node="n3", instance="10.1.0.5:9153"), False),
    (alert("NodesleuthCoreDNSLatencyHigh", "warning", node="n4", instance="10.1.0.6:9153"), True),
    # cookie: critical hides the warning of the same node; a warning alone does not inhibit PLEG
    (alert("NodesleuthSystemdCookieExhaustion", "critical", node="n5", instance="10.0.0.5:9741"), True),
    (alert("NodesleuthSystemdCookieExhaustion", "warning", node="n5", instance="10.0.0.5:9741"), False),
    (alert("NodesleuthKubeletPLEGSlow", "warning", node="n5", instance="10.0.0.5:10250"), False),
    (alert("NodesleuthSystemdCookieExhaustion", "warning", node="n7", instance="10.0.0.7:9741"), True),
    (alert("NodesleuthKubeletPLEGSlow", "warning", node="n7", instance="10.0.0.7:10250"), True),
]


def main():
    if not AM:
        print("FAIL - prometheus-alertmanager not installed (Debian package prometheus-alertmanager)")
        sys.exit(1)
    work = tempfile.mkdtemp(prefix="ns-inhibit.")
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with open(sys.argv[1]) as f:
        inhibit = f.read()
    cfg = os.path.join(work, "am.yml")
    with open(cfg, "w") as f:
        f.write(
            "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 1s\n  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{hook.server_port}/\n"
            "        send_resolved: false\n" + inhibit
        )
    port = free_port()
    proc = subprocess.Popen(
        [AM, f"--config.file={cfg}", f"--storage.path={work}/data", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "am.log"), "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/-/ready", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("alertmanager exited: " + open(os.path.join(work, "am.log")).read())
                time.sleep(0.1)
        else:
            raise SystemExit("alertmanager did not become ready")
        body = json.dumps([a for a, _ in CASES]).encode()
        req = urllib.request.Request(base + "/api/v2/alerts", data=body, headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5)

        want = {key(a["labels"]) for a, notify in CASES if notify}
        silenced = {key(a["labels"]) for a, notify in CASES if not notify}
        # wait until every expected notification arrived (bounded), then a few more group intervals
        for _ in range(300):
            with lock:
                got = {key(l) for l in received}
            if want <= got:
                break
            time.sleep(0.1)
        time.sleep(4)
        with lock:
            got = {key(l) for l in received}
        errors = []
        if got != want:
            errors.append(f"notified {sorted(got)}\n  expected {sorted(want)}\n  missing {sorted(want - got)}\n"
                          f"  unexpected {sorted(got - want)}")
        # Alertmanager's own view: the symptoms are suppressed *by inhibition*
        state = json.load(urllib.request.urlopen(base + "/api/v2/alerts", timeout=5))
        inhibited = {key(a["labels"]) for a in state if a["status"]["inhibitedBy"]}
        if inhibited != silenced:
            errors.append(f"inhibitedBy set {sorted(inhibited)} != expected {sorted(silenced)}")
        if errors:
            print("FAIL - " + "\n".join(errors))
            sys.exit(1)
        print(f"ok - Alertmanager notified {len(want)} root causes / unrelated alerts and inhibited "
              f"{len(silenced)} symptoms")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        hook.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

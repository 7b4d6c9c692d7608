#!/usr/bin/env python3
"""Series-count benchmark: how many series one node exports, with defaults and with each opt-in flag.

    python3 tests/bench/series_bench.py [--exporter PATH]      # default: $NODESLEUTH_BIN, else target/release

Writes a node-scale fixture tree into a temporary directory (tests/fixtures/make_node_fixture.py: 3,000 ClusterIP
Services, 500 NodePorts on 3 node addresses, 20,000 real servers, ~2,000 IPVS connection entries, 110 pods each in
its own network namespace with pause and app processes, CLOSE_WAIT in 20 of them, ~40 host processes), runs the
exporter on it (tcp, ipvs and memory on the tree; systemd pointed at a socket that does not exist, so it reports
its source absent), scrapes /metrics twice and counts the second scrape's series: in total, per metric family, and
what each opt-in flag adds. Prints markdown tables for the README.

Exits non-zero when a collector reports `nodesleuth_scrape_collector_success 0`, or when the exporter's reading of
the tree disagrees with what the generator wrote (namespaces, services, real servers, entries, processes): either
means the fixture is wrong, and the counts would be meaningless. Target with defaults: <= 3,000 series.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests/fixtures"))
import make_node_fixture  # noqa: E402
from benchlib import (default_exporter, free_port, help_text, parse_samples, print_machine, scrape,  # noqa: E402
                      supports, total, wait_up)

TARGET = 3000
OPT_IN = [
    "--collector.ipvs.backend-metrics=true",
    "--collector.memory.detailed",
    "--collector.memory.heap-mapping",
    "--collector.memory.top-n=0",
    "--collector.tcp.close-wait-top-n=100",
    "--collector.tcp.listen-ports-max=1000",
]


class Run:
    """One exporter process on the tree: two scrapes, the second one kept."""

    def __init__(self, exporter, tree, extra, log):
        port = free_port()
        cmd = [exporter, f"--web.listen-address=127.0.0.1:{port}", f"--path.procfs={tree}/proc",
               f"--path.rootfs={tree}", f"--path.pod-logs={tree}/var/log/pods",
               f"--path.container-logs={tree}/var/log/containers", "--collector.tcp.source=procfs",
               f"--collector.systemd.address=unix:path={tree}/absent/system_bus_socket", "--log.level=warn", *extra]
        with open(log, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_up(port, self.proc, "nodesleuth")
            self.first_seconds, first = scrape(port)
            self.seconds, self.text = scrape(port)
        finally:
            self.proc.kill()
            self.proc.wait()
        self.first = parse_samples(first)
        self.samples = parse_samples(self.text)
        self.log = Path(log).read_text()

    def families(self):
        out = {}
        for fam, *_ in self.samples:
            out[fam] = out.get(fam, 0) + 1
        return out


def check(run, expect):
    """What the exporter read must be what the generator wrote. Returns a list of failures."""
    s = run.samples
    bad = []
    for scrape_no, samples in ((1, run.first), (2, s)):
        for _, name, labels, value in samples:
            if name == "nodesleuth_scrape_collector_success" and value == 0:
                bad.append(f"scrape {scrape_no}: collector {labels.get('collector')} reports "
                           "nodesleuth_scrape_collector_success 0")

    def want(what, got, exp):
        if got is None:
            print(f"  check {what}: not exported by this binary (skipped)")
        elif abs(got - exp) > 1e-9:
            bad.append(f"{what}: exporter read {got:g}, the fixture holds {exp}")
        else:
            print(f"  check {what}: {got:g} = fixture")

    ns = total(s, "nodesleuth_tcp_namespaces", source="procfs")
    if ns is None:   # contract v1: one scan_source series per namespace
        ns = len({l.get("netns") for _, n, l, _ in s if n == "nodesleuth_tcp_sockets"}) or None
    want("network namespaces read", ns, expect["namespaces"])
    want("CLOSE_WAIT sockets", total(s, "nodesleuth_tcp_sockets", state="close_wait"), expect["close_wait"])
    for proto, n in expect["virtual_services"].items():
        got = total(s, "nodesleuth_ipvs_virtual_services", protocol=proto)
        want(f"IPVS {proto} virtual services", got, n)
    want("IPVS real servers", total(s, "nodesleuth_ipvs_real_servers"), expect["real_servers"])
    entries = total(s, "nodesleuth_ipvs_connection_entries")
    without = total(s, "nodesleuth_ipvs_connection_entries_without_service") or 0
    want("IPVS connection entries", None if entries is None else entries + without, expect["conn_rows"])
    want("client sockets to Service VIPs", total(s, "nodesleuth_ipvs_client_connections"), expect["client_sockets"])
    want("processes read by the memory collector", total(s, "nodesleuth_processes"),
         expect["processes"])
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exporter", default=default_exporter(ROOT))
    ap.add_argument("--keep", action="store_true", help="keep the fixture tree (prints its path)")
    args = ap.parse_args()
    if not shutil.which(args.exporter) and not Path(args.exporter).is_file():
        sys.exit(f"exporter {args.exporter} not found (cargo build --release -p nodesleuth, or --exporter PATH)")
    print_machine(args.exporter)
    helptxt = help_text(args.exporter)
    tmp = Path(tempfile.mkdtemp(prefix="series-bench-"))
    try:
        t0 = time.time()
        tree = tmp / "node"
        tree.mkdir()
        expect = make_node_fixture.build(tree)
        print(f"fixture: {expect['pods']} pods in {expect['namespaces'] - 1} network namespaces + host; "
              f"{expect['processes']} processes (+{expect['kernel_threads']} kernel threads); IPVS "
              f"{sum(expect['virtual_services'].values())} virtual services "
              f"({expect['virtual_services']}), {expect['real_servers']} real servers, {expect['conn_rows']} "
              f"connection entries to {expect['services_with_entries']} services; {expect['client_sockets']} pod "
              f"sockets to VIPs; {expect['close_wait']} CLOSE_WAIT sockets in {expect['cw_pods']} pods "
              f"(written in {time.time() - t0:.1f}s)")

        base = Run(args.exporter, tree, [], tmp / "defaults.log")
        print(f"\ndefaults: scrape {base.seconds * 1000:.0f} ms (first {base.first_seconds * 1000:.0f} ms)")
        failures = check(base, expect)
        fams = base.families()
        n = len(base.samples)
        if len(base.first) != n:
            print(f"  note: first scrape had {len(base.first)} series, second {n}")
        warn = [l for l in base.log.splitlines() if l.strip()]
        if warn:
            print("  exporter log (warn and above):")
            for l in warn[:20]:
                print("    " + l)

        print(f"\n## Series with defaults: {n} (target <= {TARGET}: {'met' if n <= TARGET else 'NOT met'})\n")
        print("| metric family | series |")
        print("|---|---:|")
        for fam, c in sorted(fams.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"| `{fam}` | {c} |")
        print(f"| **total** | **{n}** |")
        print("\n| collector | series | collection time (2nd scrape) |")
        print("|---|---:|---:|")
        by = {}
        for fam, c in fams.items():
            by[collector_of(fam)] = by.get(collector_of(fam), 0) + c
        for col, c in sorted(by.items(), key=lambda kv: -kv[1]):
            d = total(base.samples, "nodesleuth_scrape_collector_duration_seconds", collector=col)
            print(f"| {col} | {c} | {'' if d is None else f'{d * 1000:.0f} ms'} |")

        rows = []
        all_flags = []
        for flag in OPT_IN:
            if not supports(helptxt, flag):
                rows.append((flag, None, None, "not supported by this binary"))
                continue
            all_flags.append(flag)
            r = Run(args.exporter, tree, [flag], tmp / "flag.log")
            failures += [f"with {flag}: {b}" for b in check_quiet(r, expect)]
            f2 = r.families()
            delta = {k: f2.get(k, 0) - fams.get(k, 0) for k in set(f2) | set(fams)}
            what = ", ".join(f"`{k}` {v:+d}" for k, v in sorted(delta.items(), key=lambda kv: -abs(kv[1])) if v)
            rows.append((flag, len(r.samples), len(r.samples) - n, what or "nothing on this node"))
        if len(all_flags) > 1:
            r = Run(args.exporter, tree, all_flags, tmp / "all.log")
            rows.append(("all of the above", len(r.samples), len(r.samples) - n, ""))

        print("\n## What each opt-in flag adds (same node)\n")
        print("| flags | series | added | where |")
        print("|---|---:|---:|---|")
        print(f"| defaults | {n} | | |")
        for flag, c, d, what in rows:
            if c is None:
                print(f"| `{flag}` | | | {what} |")
            else:
                print(f"| {flag if flag.startswith('all') else '`' + flag + '`'} | {c} | {d:+d} | {what} |")
        print("\nold contract (v1) series count: not measured here (no old binary is built by this script).")

        if failures:
            print("\nFAILED: the fixture or the exporter is wrong, so the counts above are not meaningful:")
            for f in failures:
                print("  - " + f)
            sys.exit(1)
    finally:
        if args.keep:
            print(f"fixture kept at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def collector_of(family):
    """The collector a family belongs to, by its name (exporter-wide series: `(exporter)`)."""
    for prefix, col in [("nodesleuth_tcp_", "tcp"), ("nodesleuth_ipvs_", "ipvs"), ("nodesleuth_process", "memory"),
                        ("nodesleuth_memory_", "memory"), ("nodesleuth_systemd_", "systemd"),
                        ("nodesleuth_dbus_", "systemd"), ("nodesleuth_output_", "output"),
                        ("nodesleuth_container_", "output")]:
        if family.startswith(prefix):
            return col
    return "(exporter)"


def check_quiet(run, expect):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return check(run, expect)


if __name__ == "__main__":
    main()

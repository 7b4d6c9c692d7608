#!/usr/bin/env python3
"""Memory collector benchmark: nodesleuth vs process-exporter 0.7.10 (Debian), side by side on the same processes.

    sudo python3 tests/bench/memory_bench.py [--processes 2000] [--names 200] [--rounds 15] [--runs idle,busy]

Two runs, each on PROCESSES worker processes exec'd through NAMES differently named links (so that they form NAMES
groups, as a node's containers do):
  idle  `sleep`: they never run between scrapes, so nodesleuth reuses their figures (`--collector.memory.idle-reuse`);
  busy  a tiny C loop built here with `cc`: each wakes every 100 ms, spins briefly and writes to its memory, so every
        process has run between two scrapes and nodesleuth reads each one in full every scrape (no idle reuse).
Per run, fresh exporters: nodesleuth (memory collector only, release build, default flags) and process-exporter
(`-gather-smaps=true`, one group per process: `{{.Comm}}-{{.PID}}`), scraped alternately after two warm-up scrapes
each. Both read every process of the machine. Prints each one's median scrape time, their ratio and each
exporter's peak RSS (VmHWM), per run. It is a benchmark, not a test: nothing is asserted about time.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import free_port, hwm_kib, scrape, wait_up  # noqa: E402

# A busy worker: wakes every PERIOD ms (at a random phase), spins for a few microseconds touching its memory, sleeps.
BUSY_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 100;
    static volatile char page[4096];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    srand(getpid());
    usleep((useconds_t)(rand() % ms) * 1000);
    struct timespec period = {ms / 1000, (ms % 1000) * 1000000L};
    for (;;) {
        for (int i = 0; i < 2000; i++) page[i & 4095]++;
        nanosleep(&period, NULL);
    }
}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--names", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", default="idle,busy", help="comma-separated: idle, busy")
    ap.add_argument("--idle-reuse", default=None,
                    help="passed as --collector.memory.idle-reuse (0s: read every process in full every scrape)")
    args = ap.parse_args()
    runs = [r for r in args.runs.split(",") if r]
    if not set(runs) <= {"idle", "busy"}:
        sys.exit(f"--runs: unknown run in {args.runs!r} (idle, busy)")
    if os.geteuid() != 0:
        sys.exit("run as root: both exporters must read every process's smaps_rollup")
    pe_bin = shutil.which("prometheus-process-exporter")
    if not pe_bin:
        sys.exit("prometheus-process-exporter is missing: apt-get install -y prometheus-process-exporter")
    version = subprocess.run([pe_bin, "-version"], capture_output=True, text=True)
    print("process-exporter:", (version.stdout + version.stderr).splitlines()[0])
    ns_bin = ROOT / "target/release/nodesleuth"
    if os.environ.get("CARGO_TARGET_DIR"):
        ns_bin = Path(os.environ["CARGO_TARGET_DIR"]) / "release/nodesleuth"
    if not ns_bin.exists():
        sys.exit(f"{ns_bin} missing: run `cargo build --release -p nodesleuth` first")

    tmp = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    try:
        workers = {"idle": ([shutil.which("sleep"), "3600"])}
        if "busy" in runs:
            cc = shutil.which("cc")
            if not cc:
                sys.exit("cc is missing (the busy run builds its worker): apt-get install -y gcc")
            (tmp / "busy.c").write_text(BUSY_C)
            subprocess.run([cc, "-O2", "-o", str(tmp / "busy"), str(tmp / "busy.c")], check=True)
            workers["busy"] = [str(tmp / "busy"), "100"]
        results = {}
        for run in runs:
            results[run] = one_run(run, workers[run], args, tmp, ns_bin, pe_bin)
        print()
        print(f"{'run':<6}{'exporter':<18}{'median scrape':>15}{'min':>11}{'max':>11}{'peak RSS':>12}")
        for run, (times, rss) in results.items():
            for k in times:
                print(f"{run:<6}{k:<18}{statistics.median(times[k]) * 1000:>12.1f} ms"
                      f"{min(times[k]) * 1000:>8.1f} ms{max(times[k]) * 1000:>8.1f} ms{rss[k] / 1024:>9.1f} MB")
        for run, (times, rss) in results.items():
            ratio = statistics.median(times["nodesleuth"]) / statistics.median(times["process-exporter"])
            print(f"{run}: ratio nodesleuth / process-exporter (median) {ratio:.3f}; "
                  f"nodesleuth peak RSS {rss['nodesleuth'] / 1024:.1f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def one_run(run, worker, args, tmp, ns_bin, pe_bin):
    """Starts the workers and both exporters, scrapes, stops them all: (times per exporter, peak RSS in KiB)."""
    links = tmp / f"{run}-links"
    links.mkdir()
    for i in range(args.names):
        os.symlink(worker[0], links / f"w{i:03d}")
    workers, procs = [], []
    try:
        for i in range(args.processes):
            workers.append(subprocess.Popen([str(links / f"w{i % args.names:03d}"), *worker[1:]],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        total = sum(1 for p in os.listdir("/proc") if p.isdigit())
        print(f"[{run}] {args.processes} worker processes in {args.names} names; {total} processes on the machine")
        config = tmp / "process-exporter.yml"
        config.write_text('process_names:\n  - name: "{{.Comm}}-{{.PID}}"\n    cmdline: [".+"]\n')
        ns_port, pe_port = free_port(), free_port()
        ns = subprocess.Popen([str(ns_bin), f"--web.listen-address=127.0.0.1:{ns_port}", "--collector.timeout=60s"]
                              + only_memory(ns_bin)
                              + ([f"--collector.memory.idle-reuse={args.idle_reuse}"] if args.idle_reuse else []),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ns)
        pe = subprocess.Popen([pe_bin, f"-web.listen-address=127.0.0.1:{pe_port}", f"-config.path={config}",
                               "-gather-smaps=true"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(pe)
        wait_up(ns_port, ns, "nodesleuth")
        wait_up(pe_port, pe, "process-exporter")
        # Warm-up: the first scrape of each pays for one-time work (nodesleuth: pod and Go detection per process).
        for _ in range(2):
            _, text = scrape(ns_port)
            scrape(pe_port)
        groups = sum(1 for line in text.splitlines() if line.startswith("nodesleuth_processes{"))
        times = {"nodesleuth": [], "process-exporter": []}
        for _ in range(args.rounds):
            t, text = scrape(ns_port)
            times["nodesleuth"].append(t)
            t, pe_text = scrape(pe_port)
            times["process-exporter"].append(t)
        ok = [line for line in text.splitlines()
              if line.startswith('nodesleuth_scrape_collector_success{collector="memory"}')]
        pe_groups = sum(1 for line in pe_text.splitlines() if line.startswith("namedprocess_namegroup_num_procs{"))
        rss = {"nodesleuth": hwm_kib(ns.pid), "process-exporter": hwm_kib(pe.pid)}
        print(f"[{run}] nodesleuth groups exported: {groups} ({ok[0] if ok else 'no success line'}); "
              f"process-exporter groups: {pe_groups}")
        return times, rss
    finally:
        for p in procs + workers:
            p.kill()
        for p in procs + workers:
            p.wait()


def only_memory(ns_bin):
    """--no-collector.X for every collector but memory, read from --help."""
    help_text = subprocess.run([str(ns_bin), "--help"], capture_output=True, text=True).stdout
    names = {w.split("--no-collector.")[1].rstrip(".,") for w in help_text.split() if w.startswith("--no-collector.")}
    return [f"--no-collector.{n}" for n in sorted(names) if n != "memory" and "." not in n]


if __name__ == "__main__":
    main()

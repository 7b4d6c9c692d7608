#!/usr/bin/env python3
"""Output collector benchmark: its scrape time and RSS on a node-sized process table, beside the memory collector's.

    sudo python3 tests/bench/output_bench.py [--processes 2000] [--threads 10] [--rounds 15]

Starts PROCESSES worker processes (a tiny C program built here with `cc`) of THREADS threads each, laid out as a
node's containers are: groups of 10 share one stdout pipe that the benchmark drains (as a runtime does); most are
idle (every thread in pause()), 20 write a short line every 10 ms (healthy writers), 20 idle ones have a terminal as
stdout (tty: true containers; their threads are always looked at), and 3 write to a pipe and 3 to a terminal that
nobody reads (stalled). Then two exporters (release build, `--collector.timeout=60s`): one with only the output
collector, one with only the memory collector, scraped alternately after two warm-up scrapes each. Prints each
one's median/min/max scrape time and peak RSS (VmHWM), and the output collector's series. `--threads 1` on the
same processes shows whether RSS grows with threads. It is a benchmark, not a test: nothing is asserted about time.
"""
import argparse
import os
import pty
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (default_exporter, free_port, hwm_kib, only_collectors, parse_samples,  # noqa: E402
                      print_machine, scrape, wait_up)

WORKER_C = r"""
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
static void *idle(void *a) { for (;;) pause(); return a; }
int main(int argc, char **argv) {
    int threads = atoi(argv[1]);
    int mode = argv[2][0];  /* i: idle, w: write a line every 10 ms, s: write ever longer lines (stalls) */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 64 * 1024);
    for (int i = 1; i < threads; i++) { pthread_t t; pthread_create(&t, &at, idle, 0); }
    static char line[1 << 20];
    size_t n = 1;
    for (;;) {
        if (mode == 'i') { pause(); continue; }
        size_t len = mode == 'w' ? 40 : (n < sizeof line ? n++ : n);
        memset(line, 'a', len);
        line[len - 1] = '\n';
        if (write(1, line, len) < 0) _exit(3);
        if (mode == 'w') usleep(10000);
    }
}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the exporters read every process's files")
    cc = shutil.which("cc")
    if not cc:
        sys.exit("cc is missing: apt-get install -y gcc")
    exporter = default_exporter(ROOT)
    if os.environ.get("CARGO_TARGET_DIR") and not os.environ.get("NODESLEUTH_BIN"):
        exporter = str(Path(os.environ["CARGO_TARGET_DIR"]) / "release/nodesleuth")
    if not Path(exporter).exists():
        sys.exit(f"{exporter} missing: run `cargo build --release -p nodesleuth` first")
    print_machine(exporter)
    tmp = Path(tempfile.mkdtemp(prefix="output-bench-"))
    workers, keep, procs = [], [], []
    try:
        (tmp / "worker.c").write_text(WORKER_C)
        subprocess.run([cc, "-O2", "-pthread", "-o", str(tmp / "nsbworker"), str(tmp / "worker.c")], check=True)
        bin_ = str(tmp / "nsbworker")
        sel = selectors.DefaultSelector()

        def start(mode, stdout):
            workers.append(subprocess.Popen([bin_, str(args.threads), mode], stdin=subprocess.DEVNULL,
                                            stdout=stdout, stderr=stdout))

        # Containers of 10 processes sharing one drained pipe; the first 20 processes write, the rest idle.
        n_idle_pipe = args.processes - 20 - 6
        for first in range(0, n_idle_pipe, 10):
            r, w = os.pipe()
            for i in range(first, min(first + 10, n_idle_pipe)):
                start("w" if i < 20 else "i", w)
            os.close(w)
            os.set_blocking(r, False)
            sel.register(r, selectors.EVENT_READ)
        # 20 idle processes on terminals (drained), of which none write.
        for _ in range(20 // 10):
            m, s = pty.openpty()
            for _ in range(10):
                start("i", s)
            os.close(s)
            os.set_blocking(m, False)
            sel.register(m, selectors.EVENT_READ)
        # 3 stalled on a pipe nobody reads, 3 on a terminal nobody reads.
        for _ in range(3):
            r, w = os.pipe()
            start("s", w)
            os.close(w)
            keep.append(r)
            m, s = pty.openpty()
            start("s", s)
            os.close(s)
            keep.append(m)
        stop = threading.Event()

        def drain():
            while not stop.is_set():
                for key, _ in sel.select(0.2):
                    try:
                        os.read(key.fd, 1 << 16)
                    except OSError:
                        pass
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        threads = sum(len(os.listdir(f"/proc/{p}/task")) for p in os.listdir("/proc") if p.isdigit()
                      and os.path.exists(f"/proc/{p}/task"))
        total = sum(1 for p in os.listdir("/proc") if p.isdigit())
        print(f"{len(workers)} workers of {args.threads} threads; machine: {total} processes, ~{threads} threads")

        results = {}
        ports = {}
        for name in ("output", "memory"):
            port = free_port()
            p = subprocess.Popen([exporter, f"--web.listen-address=127.0.0.1:{port}", "--collector.timeout=60s"]
                                 + only_collectors(exporter, [name]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_up(port, p, name, path="/healthz")  # the first scrape is timed
            ports[name] = (port, p)
            results[name] = []
        first = {}
        for name, (port, _) in ports.items():
            first[name] = scrape(port)[0]
            scrape(port)
        texts = {}
        for _ in range(args.rounds):
            for name, (port, _) in ports.items():
                sec, texts[name] = scrape(port)
                results[name].append(sec)
        out = parse_samples(texts["output"])
        ours = [s for s in out if s[1].startswith(("nodesleuth_output_", "nodesleuth_container_"))]
        stalled = [(s[2].get("process"), s[2].get("target"), s[3]) for s in out
                   if s[1] == "nodesleuth_output_stalled_threads"]
        cand = [s[3] for s in out if s[1] == "nodesleuth_output_candidate_threads"]
        print(f"output series: {len(ours)}; stalled groups (process, target, threads): {stalled}; "
              f"candidate threads: {cand}")
        print()
        print(f"{'collector':<10}{'median scrape':>15}{'min':>11}{'max':>11}{'first':>11}{'peak RSS':>12}")
        for name, times in results.items():
            print(f"{name:<10}{statistics.median(times) * 1000:>12.1f} ms{min(times) * 1000:>8.1f} ms"
                  f"{max(times) * 1000:>8.1f} ms{first[name] * 1000:>8.1f} ms"
                  f"{hwm_kib(ports[name][1].pid) / 1024:>9.1f} MB")
        stop.set()
        t.join()
    finally:
        for p in procs + workers:
            p.kill()
        for p in procs + workers:
            p.wait()
        for fd in keep:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

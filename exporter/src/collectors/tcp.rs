//! TCP sockets in every network namespace on the node.
//!
//! **What it catches.** Services that stop closing connections (CLOSE_WAIT piling up until the process hangs and
//! its liveness probe restarts it, destroying the evidence) and listeners whose accept queue fills up. Both are
//! usually diagnosed by running `ss` inside the right container at the right moment; node_exporter's `tcpstat`
//! sees only its own namespace and has no per-process or per-port view.
//!
//! **What it reads.** The shared socket scan of every network namespace (see [`crate::sockets`]: netlink
//! `sock_diag` with kernel counters, or `/proc/<pid>/net/tcp{,6}`). CLOSE_WAIT sockets are attributed to the
//! process holding them (socket inode → `/proc/<pid>/fd`, remembered across scrapes), then to its container via
//! the cgroup.
//!
//! **What it exports.** `nodesleuth_tcp_sockets` (`established`, `close_wait` and `listen` always, the other
//! states when non-zero), `nodesleuth_tcp_close_wait_sockets` (top-N groups per namespace, with hysteresis, plus
//! one `(other)` group, so the sum equals the exact total), `nodesleuth_tcp_listen_queue_length` / `_limit` per
//! listening port, and the cost of reading: namespaces per source and socket-table walks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use nodesleuth_parse::tcp_state::TcpState;

use crate::metrics::Sink;
use crate::pods::{PodInfo, PodResolver};
use crate::procfs::{self, ProcFs};
use crate::registry::{CollectError, Collector, ScrapeContext};
use crate::sockets::{NsScan, NsSockets, SocketScanner};

pub use crate::sockets::TcpSource;

/// Flags of the TCP collector (the source flags also steer the shared socket scan).
#[derive(clap::Args, Debug, Clone)]
pub struct TcpArgs {
    /// TCP: how socket tables are read (ebpf: counts kept by an eBPF program on the TCP state-change tracepoint,
    /// no walk per scrape; auto: ebpf where permitted, else netlink where permitted, else procfs text).
    #[arg(long = "collector.tcp.source", value_enum, default_value = "auto")]
    pub source: TcpSource,
    /// TCP: CLOSE_WAIT groups (process, container, port) exported per network namespace; the rest are summed
    /// into one `(other)` series.
    #[arg(long = "collector.tcp.close-wait-top-n", default_value_t = 10)]
    pub close_wait_top_n: usize,
    /// TCP: listening ports exported per network namespace (fullest queues first).
    #[arg(long = "collector.tcp.listen-ports-max", default_value_t = 100)]
    pub listen_ports_max: usize,
    /// TCP: dump every state over netlink instead of taking ESTABLISHED and TIME_WAIT from the kernel's
    /// per-namespace counters (exact at any instant, slower with many connections).
    #[arg(long = "collector.tcp.exact-counts")]
    pub exact_counts: bool,
    /// TCP: a namespace with at most this many ESTABLISHED sockets that must be searched for IPVS client sockets
    /// gets them in the same socket-table walk as the rare states (copying them) instead of a second,
    /// kernel-filtered walk; 0 always takes the second walk.
    #[arg(long = "collector.tcp.one-walk-max-established", default_value_t = 4096)]
    pub one_walk_max_established: u64,
    /// TCP: time one scrape may spend walking /proc/<pid>/fd to find CLOSE_WAIT owners; the rest are found in
    /// later scrapes (a first scrape on a node with a million descriptors needs seconds).
    #[arg(long = "collector.tcp.owner-search-budget", default_value = "2s", value_parser = crate::cli::parse_duration)]
    pub owner_search_budget: std::time::Duration,
    /// TCP, eBPF source: each namespace's counts are re-checked against its sockets (one walk) once per this
    /// interval, one namespace at a time, spread evenly.
    #[arg(long = "collector.tcp.ebpf-resync-interval", default_value = "10m", value_parser = crate::cli::parse_duration)]
    pub ebpf_resync_interval: std::time::Duration,
}

/// The `tcp` collector: on by default.
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "tcp",
    enabled_by_default: true,
    help: "TCP sockets per network namespace: states, CLOSE_WAIT owners, accept queues",
    build: |args, shared| build(&args.tcp, shared),
};

/// Builds the collector from its flags.
pub fn build(args: &TcpArgs, shared: &super::Shared) -> Arc<dyn Collector> {
    Arc::new(TcpCollector {
        close_wait_top_n: args.close_wait_top_n,
        listen_ports_max: args.listen_ports_max,
        owner_search_budget: args.owner_search_budget,
        pods: shared.pods.clone(),
        scanner: shared.sockets.clone(),
        state: Mutex::new(State::default()),
    })
}

pub struct TcpCollector {
    close_wait_top_n: usize,
    listen_ports_max: usize,
    owner_search_budget: std::time::Duration,
    pods: Arc<PodResolver>,
    scanner: Arc<SocketScanner>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Socket inode → who held it when last checked.
    owners: HashMap<u64, Owner>,
    /// Inodes no process of their namespace held, with the scrape number of the last full fd scan for them.
    unowned: HashMap<u64, u64>,
    scrape: u64,
    /// When every cached owner was last re-checked fd by fd.
    last_full_check: Option<std::time::Instant>,
    /// Whether this scrape re-checks owners fd by fd.
    full_check: bool,
    /// When this scrape's fd walks must stop (`--collector.tcp.owner-search-budget`). A node with hundreds of
    /// thousands of descriptors needs seconds for the first walk after start-up; instead of overrunning the scrape
    /// deadline (and losing every TCP series with it) the walk stops, the sockets not yet found stay unattributed
    /// (`process=""`) for this scrape, and the next scrape resumes where this one stopped.
    walk_deadline: Option<std::time::Instant>,
    /// Per namespace label: the pid an interrupted fd walk resumes from.
    walk_cursor: HashMap<String, u32>,
    /// Namespaces whose interrupted walk has been logged.
    walk_logged: HashSet<String>,
    /// Per namespace label: the CLOSE_WAIT groups exported last scrape (for the top-N hysteresis).
    close_wait_kept: HashMap<String, HashSet<GroupKey>>,
}

/// A CLOSE_WAIT group: owner's pod, process name, and listening port (`None`: ephemeral, client side).
type GroupKey = (PodInfo, String, Option<u16>);

#[derive(Debug, Clone, Copy)]
struct Owner {
    pid: u32,
    fd: u32,
    /// Start time of the process (clock ticks since boot): tells a live owner from a recycled pid. Without it
    /// (unreadable `stat`) the owner is re-checked fd by fd every scrape.
    start: Option<u64>,
}

/// Between full checks, a cached owner counts as still holding its CLOSE_WAIT socket while that socket still
/// exists (same inode, still CLOSE_WAIT) and the owner process is still the same process (pid and start time).
/// That costs one small read per owner process instead of one readlink per socket (5,000 sockets: ~20 ms → <1 ms).
/// It can only be wrong if the fd was handed to another process and closed by the owner, and then only until the
/// next full check.
const OWNER_FULL_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Re-scan for a socket nobody in its namespace owns (held from another namespace, or passed over a unix
/// socket) at most this often, so one such socket does not cost a full fd walk every scrape.
const UNOWNED_RESCAN_EVERY: u64 = 10;

impl Collector for TcpCollector {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
        let scan = self.scanner.scan(ctx);
        for p in &scan.problems {
            sink.problem(p.clone());
        }
        if scan.namespaces.is_empty() {
            return Err(CollectError::Other(scan.problems.first().cloned().unwrap_or_else(|| "no namespaces".into())));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.scrape += 1;
        state.full_check = state.last_full_check.is_none_or(|t| t.elapsed() >= OWNER_FULL_CHECK_EVERY);
        if state.full_check {
            state.last_full_check = Some(std::time::Instant::now());
        }
        // Never past the scrape's own deadline (less a margin to export), or every TCP series would be lost.
        let mut budget = self.owner_search_budget;
        if let Some(left) = ctx.time_left() {
            budget = budget.min(left.saturating_sub(std::time::Duration::from_millis(500)));
        }
        state.walk_deadline = Some(std::time::Instant::now() + budget);
        let mut seen_inodes = HashSet::new();
        let mut per_source: Vec<(&'static str, u64)> = Vec::new();
        for ns in &scan.namespaces {
            let Some(sockets) = &ns.sockets else { continue };
            let base = [("namespace", &*ns.pod.namespace), ("pod", &*ns.pod.pod), ("netns", ns.label.as_str())];
            for s in TcpState::ALL {
                let n = sockets.counts[s.index()];
                // The states alerts and graphs follow are always there; the rest only when present, which keeps a
                // node with a hundred pod namespaces at a few series each instead of eleven.
                if n == 0 && !ALWAYS_EXPORTED.contains(&s) {
                    continue;
                }
                let labels = [base[0], base[1], base[2], ("state", s.label())];
                sink.gauge("nodesleuth_tcp_sockets", HELP_SOCKETS, &labels, n as f64);
            }
            match per_source.iter_mut().find(|(src, _)| *src == sockets.source) {
                Some(c) => c.1 += 1,
                None => per_source.push((sockets.source, 1)),
            }
            self.export_listeners(sink, &base, sockets);
            seen_inodes.extend(sockets.close_wait.iter().map(|(i, _)| *i));
            self.export_close_wait(ctx, ns, sockets, &mut state, sink);
        }
        for (source, n) in per_source {
            sink.gauge("nodesleuth_tcp_namespaces", HELP_NAMESPACES, &[("source", source)], n as f64);
        }
        sink.counter("nodesleuth_tcp_socket_table_walks_total", HELP_WALKS, &[], self.scanner.walks_total() as f64);
        if let Some(ebpf) = self.scanner.ebpf_stats() {
            sink.counter("nodesleuth_tcp_ebpf_resyncs_total", HELP_RESYNCS, &[], ebpf.resyncs as f64);
            sink.counter("nodesleuth_tcp_ebpf_reseeds_total", HELP_RESEEDS, &[], ebpf.reseeds as f64);
            sink.counter("nodesleuth_tcp_ebpf_missed_events_total", HELP_MISSED, &[], ebpf.missed_events as f64);
            sink.counter(
                "nodesleuth_tcp_ebpf_resync_corrections_total",
                HELP_CORRECTIONS,
                &[],
                ebpf.corrections as f64,
            );
            let o = ebpf.overflows;
            for (map, n) in [
                ("namespaces", o.namespaces),
                ("close_wait", o.close_wait),
                ("socket_storage", o.socket_storage),
                ("ipvs_clients", o.ipvs_clients),
            ] {
                sink.counter("nodesleuth_tcp_ebpf_map_full_total", HELP_MAP_FULL, &[("map", map)], n as f64);
            }
            sink.gauge("nodesleuth_tcp_ebpf_map_memory_bytes", HELP_MAP_MEMORY, &[], ebpf.map_memory as f64);
        }
        // Forget sockets and namespaces that are gone.
        state.owners.retain(|inode, _| seen_inodes.contains(inode));
        state.unowned.retain(|inode, _| seen_inodes.contains(inode));
        let live: HashSet<&str> = scan.namespaces.iter().map(|ns| ns.label.as_str()).collect();
        state.walk_cursor.retain(|label, _| live.contains(label.as_str()));
        state.walk_logged.retain(|label| live.contains(label.as_str()));
        state.close_wait_kept.retain(|label, _| live.contains(label.as_str()));
        Ok(())
    }
}

const HELP_SOCKETS: &str = "TCP sockets (IPv4 and IPv6) per network namespace and state.";
const HELP_CLOSE_WAIT: &str =
    "CLOSE_WAIT sockets by owning process and local port: top groups per network namespace plus one (other) group.";
const HELP_QUEUE_LEN: &str = "Connections waiting in the accept queue of the listeners on a local port.";
const HELP_QUEUE_LIMIT: &str =
    "Accept-queue limit (listen backlog) of the listeners on a local port; netlink source only.";
const HELP_NAMESPACES: &str = "Network namespaces whose sockets were read this scrape, per data path.";
const HELP_RESYNCS: &str = "eBPF source: periodic re-checks of one namespace's counts against its sockets since start.";
const HELP_RESEEDS: &str =
    "eBPF source: of those re-checks, the ones that seeded their namespace again because the program missed events.";
const HELP_MISSED: &str =
    "eBPF source: TCP state changes the kernel skipped the program for (recursion_misses), since it was loaded.";
const HELP_CORRECTIONS: &str =
    "eBPF source: sockets the periodic re-check found counted in the wrong state or not at all (drift), since start.";
const HELP_MAP_FULL: &str =
    "eBPF source: entries the program could not create because the map was full (those are walked instead).";
const HELP_MAP_MEMORY: &str = "eBPF source: kernel memory of the program's maps.";
const HELP_WALKS: &str = "Walks of the kernel's socket tables (netlink dumps, procfs files) since start.";

/// States exported even at zero.
const ALWAYS_EXPORTED: [TcpState; 3] = [TcpState::Established, TcpState::CloseWait, TcpState::Listen];

impl TcpCollector {
    fn export_listeners(&self, sink: &mut Sink, base: &[(&'static str, &str); 3], scan: &NsSockets) {
        let mut ports: Vec<(&u16, &(u64, u64))> = scan.listeners.iter().collect();
        if ports.len() > self.listen_ports_max {
            // Keep the fullest queues: those are the ones an alert needs.
            ports.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
            ports.truncate(self.listen_ports_max);
        }
        for (port, (len, limit)) in ports {
            let port = port.to_string();
            let labels = [base[0], base[1], base[2], ("local_port", port.as_str())];
            sink.gauge("nodesleuth_tcp_listen_queue_length", HELP_QUEUE_LEN, &labels, *len as f64);
            if scan.limits_known {
                sink.gauge("nodesleuth_tcp_listen_queue_limit", HELP_QUEUE_LIMIT, &labels, *limit as f64);
            }
        }
    }

    fn export_close_wait(
        &self,
        ctx: &ScrapeContext,
        ns: &NsScan,
        scan: &NsSockets,
        state: &mut State,
        sink: &mut Sink,
    ) {
        if scan.close_wait.is_empty() {
            state.close_wait_kept.remove(&ns.label);
            return;
        }
        let owners = attribute(&ctx.proc, &ns.label, &ns.pids, &scan.close_wait, state);
        // Group by (owner pod, container, process, port). Only listening ports are kept: a client-side CLOSE_WAIT
        // (a pool whose server closed idle connections) has a random ephemeral port, and one series per socket
        // would be unbounded; those are grouped as `(ephemeral)`.
        let mut who: HashMap<u32, (PodInfo, String)> = HashMap::new();
        let mut groups: HashMap<GroupKey, u64> = HashMap::new();
        for (inode, port) in &scan.close_wait {
            let (pod, process) = match owners.get(inode) {
                Some(&pid) => who
                    .entry(pid)
                    .or_insert_with(|| {
                        let pod = self.pods.resolve(&ctx.proc, pid);
                        let pod = if pod.is_pod() { pod } else { PodInfo { container: "".into(), ..ns.pod.clone() } };
                        (pod, ctx.proc.comm(pid).unwrap_or_default())
                    })
                    .clone(),
                None => (PodInfo { container: "".into(), ..ns.pod.clone() }, String::new()),
            };
            let port = scan.listeners.contains_key(port).then_some(*port);
            *groups.entry((pod, process, port)).or_default() += 1;
        }
        let empty = HashSet::new();
        let kept = state.close_wait_kept.get(&ns.label).unwrap_or(&empty);
        let (top, rest) = crate::topn::top_n_sticky(groups.into_iter().collect(), self.close_wait_top_n, kept, |n| *n);
        let rest: u64 = rest.iter().map(|g| g.1).sum();
        state.close_wait_kept.insert(ns.label.clone(), top.iter().map(|g| g.0.clone()).collect());
        for ((pod, process, port), count) in &top {
            let port = port.map_or_else(|| "(ephemeral)".to_string(), |p| p.to_string());
            let labels = [
                ("namespace", &*pod.namespace),
                ("pod", &*pod.pod),
                ("container", &*pod.container),
                ("process", process.as_str()),
                ("local_port", port.as_str()),
                ("netns", ns.label.as_str()),
            ];
            sink.gauge("nodesleuth_tcp_close_wait_sockets", HELP_CLOSE_WAIT, &labels, *count as f64);
        }
        if rest > 0 {
            let labels = [
                ("namespace", &*ns.pod.namespace),
                ("pod", &*ns.pod.pod),
                ("container", ""),
                ("process", "(other)"),
                ("local_port", "(other)"),
                ("netns", ns.label.as_str()),
            ];
            sink.gauge("nodesleuth_tcp_close_wait_sockets", HELP_CLOSE_WAIT, &labels, rest as f64);
        }
    }
}

/// Finds the process holding each CLOSE_WAIT socket. Cached owners are re-validated with one readlink; the rest
/// trigger a walk of the namespace's processes' fd tables that stops as soon as every socket is found.
fn attribute(proc: &ProcFs, netns: &str, pids: &[u32], sockets: &[(u64, u16)], state: &mut State) -> HashMap<u64, u32> {
    let mut found = HashMap::with_capacity(sockets.len());
    let mut missing: HashSet<u64> = HashSet::new();
    let mut alive: HashMap<u32, Option<u64>> = HashMap::new();
    for (inode, _) in sockets {
        // Inode 0: a connection still in a listener's accept queue that its client already closed. No process
        // holds it, so no fd walk can find it.
        if *inode == 0 {
            continue;
        }
        if let Some(owner) = state.owners.get(inode).copied() {
            let still = match owner.start {
                Some(start) if !state.full_check => {
                    *alive.entry(owner.pid).or_insert_with(|| proc.start_time(owner.pid)) == Some(start)
                }
                _ => socket_inode_of(proc, owner.pid, owner.fd) == Some(*inode),
            };
            if still {
                found.insert(*inode, owner.pid);
                continue;
            }
            state.owners.remove(inode);
        }
        missing.insert(*inode);
    }
    let scrape = state.scrape;
    let need_scan =
        missing.iter().any(|i| state.unowned.get(i).is_none_or(|last| scrape - last >= UNOWNED_RESCAN_EVERY));
    if !need_scan {
        return found;
    }
    // Resume an interrupted walk where it stopped, wrapping around.
    let start = state.walk_cursor.remove(netns).map_or(0, |c| pids.partition_point(|p| *p < c));
    let deadline = state.walk_deadline;
    let mut interrupted = false;
    'procs: for &pid in pids[start..].iter().chain(&pids[..start]) {
        let Ok(dir) = std::fs::read_dir(proc.pid_path(pid, "fd")) else { continue };
        for entry in dir.flatten() {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                state.walk_cursor.insert(netns.to_string(), pid);
                interrupted = true;
                break 'procs;
            }
            let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(inode) = socket_inode_of(proc, pid, fd)
                && missing.remove(&inode)
            {
                let start = *alive.entry(pid).or_insert_with(|| proc.start_time(pid));
                state.owners.insert(inode, Owner { pid, fd, start });
                state.unowned.remove(&inode);
                found.insert(inode, pid);
                if missing.is_empty() {
                    break 'procs;
                }
            }
        }
    }
    if interrupted {
        // Logged when a walk first runs out of time, not on every scrape that continues it.
        if state.walk_logged.insert(netns.to_string()) {
            tracing::info!(
                netns,
                unattributed = missing.len(),
                "tcp: CLOSE_WAIT owner search hit its time budget; resuming next scrape"
            );
        }
        return found;
    }
    state.walk_logged.remove(netns);
    for inode in missing {
        state.unowned.insert(inode, scrape);
    }
    found
}

fn socket_inode_of(proc: &ProcFs, pid: u32, fd: u32) -> Option<u64> {
    let mut path = proc.pid_path(pid, "fd");
    path.push(fd.to_string());
    let target = std::fs::read_link(path).ok()?;
    procfs::parse_ns_link(target.to_str()?, "socket")
}

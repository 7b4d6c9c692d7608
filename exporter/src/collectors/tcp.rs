//! TCP sockets in every network namespace on the node.
//!
//! **What it catches.** Services that stop closing connections (CLOSE_WAIT piling up until the process hangs and
//! its liveness probe restarts it, destroying the evidence) and listeners whose accept queue fills up. Both are
//! usually diagnosed by running `ss` inside the right container at the right moment; node_exporter's `tcpstat`
//! sees only its own namespace and has no per-process or per-port view.
//!
//! **What it reads.** Namespaces are found through `/proc/<pid>/ns/net` (deduplicated by inode) and each is read
//! once per scrape through one of its processes:
//! - *netlink* (default where permitted): a `sock_diag` socket created inside the namespace (setns on a private
//!   thread) dumps only the states that are rare: everything but ESTABLISHED and TIME_WAIT, which come from the
//!   namespace's O(1) counters (`net/snmp` CurrEstab, `net/sockstat` tw) once a start-up self-test in a throwaway
//!   namespace has shown what those counters mean on this kernel. Listeners report queue length and limit.
//! - *procfs* (fallback, fixtures, `--collector.tcp.source=procfs`): `/proc/<pid>/net/tcp` and `tcp6`, streamed
//!   through a reused buffer. No accept-queue limit (the kernel does not print it there).
//!
//! CLOSE_WAIT sockets are attributed to the process holding them (socket inode → `/proc/<pid>/fd`, remembered
//! across scrapes and re-validated with one readlink each), then to its container via the cgroup.
//!
//! **What it exports.** `nodesleuth_tcp_sockets` (all eleven states, zeros included),
//! `nodesleuth_tcp_close_wait_sockets` (top-N groups per namespace plus one `(other)` group, so the sum equals the
//! exact total), `nodesleuth_tcp_listen_queue_length` / `_limit` per listening port, and
//! `nodesleuth_tcp_scan_source` (which path read each namespace).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use nodesleuth_parse::inet_diag;
use nodesleuth_parse::netstat;
use nodesleuth_parse::proc_net_tcp;
use nodesleuth_parse::tcp_state::TcpState;

use crate::metrics::Sink;
use crate::netns;
use crate::pods::{PodInfo, PodResolver};
use crate::procfs::{self, ProcFs};
use crate::registry::{CollectError, Collector, ScrapeContext};
use crate::sock_diag;

/// How socket tables are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TcpSource {
    /// Netlink where permitted, procfs text elsewhere.
    Auto,
    /// Netlink only; a namespace that cannot be entered is reported as a failure.
    Netlink,
    /// procfs text only.
    Procfs,
}

/// Flags of the TCP collector.
#[derive(clap::Args, Debug, Clone)]
pub struct TcpArgs {
    /// TCP: how socket tables are read (auto: netlink where permitted, else procfs text).
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
}

/// Builds the collector from its flags.
pub fn build(args: &TcpArgs, shared: &super::Shared) -> Arc<dyn Collector> {
    TcpCollector::new(
        TcpConfig {
            source: args.source,
            close_wait_top_n: args.close_wait_top_n,
            listen_ports_max: args.listen_ports_max,
            exact_dump: args.exact_counts,
        },
        shared.pods.clone(),
    )
}

#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub source: TcpSource,
    /// CLOSE_WAIT groups kept per namespace; the rest are summed into one `(other)` series.
    pub close_wait_top_n: usize,
    /// Listening ports exported per namespace (fullest queues first).
    pub listen_ports_max: usize,
    /// Count every state by dumping it, instead of trusting the kernel's ESTABLISHED/TIME_WAIT counters.
    pub exact_dump: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig { source: TcpSource::Auto, close_wait_top_n: 10, listen_ports_max: 100, exact_dump: false }
    }
}

pub struct TcpCollector {
    cfg: TcpConfig,
    pods: Arc<PodResolver>,
    state: Mutex<State>,
    counters: OnceLock<CounterSemantics>,
}

/// What this kernel's O(1) counters count, established by [`probe_counter_semantics`]. `None` means the counter
/// cannot stand in for a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterSemantics {
    /// `Some(true)`: `CurrEstab` is ESTABLISHED + CLOSE_WAIT (Linux ≥ 6.10 and back-ports); `Some(false)`:
    /// ESTABLISHED only.
    pub curr_estab_includes_close_wait: Option<bool>,
    /// `Some(true)`: `sockstat` `tw` is TIME_WAIT plus the orphaned FIN_WAIT2 sockets the kernel keeps as timewait
    /// minisockets (which the dump reports as FIN_WAIT2 with the TIME_WAIT timer); `Some(false)`: TIME_WAIT only.
    pub tw_includes_fin_wait2_minisocks: Option<bool>,
}

#[derive(Default)]
struct State {
    /// Socket inode → who held it when last checked.
    owners: HashMap<u64, Owner>,
    /// When every cached owner was last re-checked fd by fd.
    last_full_check: Option<std::time::Instant>,
    /// Whether this scrape re-checks owners fd by fd.
    full_check: bool,
    /// Inodes no process of their namespace held, with the scrape number of the last full fd scan for them.
    unowned: HashMap<u64, u64>,
    scrape: u64,
    line_buf: Vec<u8>,
    diag_buf: Vec<u8>,
    netlink_warned: bool,
}

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

/// The sockets of one namespace, reduced to what is exported.
#[derive(Debug, Default)]
struct NsSockets {
    counts: [u64; 11],
    /// (inode, local port) of each CLOSE_WAIT socket.
    close_wait: Vec<(u64, u16)>,
    /// Local port → (queue length, queue limit), summed over listeners on that port (v4 + v6, reuseport groups).
    listeners: BTreeMap<u16, (u64, u64)>,
    limits_known: bool,
    /// FIN_WAIT2 entries that are timewait minisockets (counted in `sockstat` `tw`).
    fin_wait2_minisocks: u64,
    source: &'static str,
}

impl NsSockets {
    fn add(&mut self, state: TcpState, local_port: u16, inode: u64, queue_len: u32, queue_limit: u32, timer: u8) {
        self.counts[state.index()] += 1;
        match state {
            TcpState::FinWait2 if timer == TIMER_TIME_WAIT => self.fin_wait2_minisocks += 1,
            TcpState::CloseWait => self.close_wait.push((inode, local_port)),
            TcpState::Listen => {
                let e = self.listeners.entry(local_port).or_default();
                e.0 += u64::from(queue_len);
                e.1 += u64::from(queue_limit);
            }
            _ => {}
        }
    }
}

/// `tr` / `idiag_timer` value of a timewait minisocket.
const TIMER_TIME_WAIT: u8 = 3;

/// One namespace to scan: its inode, its processes, and how it is labelled.
struct Namespace {
    pids: Vec<u32>,
    label: String,
    pod: PodInfo,
}

impl TcpCollector {
    pub fn new(cfg: TcpConfig, pods: Arc<PodResolver>) -> Arc<Self> {
        let collector =
            Arc::new(TcpCollector { cfg, pods, state: Mutex::new(State::default()), counters: OnceLock::new() });
        if collector.cfg.source != TcpSource::Procfs && !collector.cfg.exact_dump {
            // Run the self-test at start-up rather than in the first scrape; a scrape that needs it meanwhile waits.
            let c = collector.clone();
            std::thread::spawn(move || c.counter_semantics());
        }
        collector
    }

    fn counter_semantics(&self) -> Option<CounterSemantics> {
        if self.cfg.exact_dump {
            return None;
        }
        let s = self.counters.get_or_init(|| match probe_counter_semantics() {
            Ok(s) => {
                tracing::info!(
                    curr_estab_includes_close_wait = ?s.curr_estab_includes_close_wait,
                    tw_includes_fin_wait2_minisocks = ?s.tw_includes_fin_wait2_minisocks,
                    "tcp: kernel counter self-test done"
                );
                s
            }
            Err(e) => {
                tracing::info!(error = %e, "tcp: counter self-test not possible; dumping every state instead");
                CounterSemantics::default()
            }
        });
        Some(*s)
    }
}

impl Collector for TcpCollector {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
        let table = ctx.processes();
        if table.by_netns.is_empty() {
            return Err(CollectError::Other(format!(
                "no readable /proc/<pid>/ns/net under {}",
                ctx.proc.root().display()
            )));
        }
        let names = netns::named_namespaces(&ctx.host.rootfs);
        tracing::debug!(host = ?table.host_netns, namespaces = table.by_netns.len(), named = names.len(), "tcp: namespaces");
        let namespaces: Vec<Namespace> = table
            .by_netns
            .iter()
            .map(|(&inode, pids)| {
                let is_host = Some(inode) == table.host_netns;
                let label = if is_host {
                    "host".to_string()
                } else {
                    names.get(&inode).cloned().unwrap_or_else(|| inode.to_string())
                };
                let pod = if is_host {
                    PodInfo::default()
                } else {
                    pids.iter().map(|&p| self.pods.resolve(&ctx.proc, p)).find(PodInfo::is_pod).unwrap_or_default()
                };
                Namespace { pids: pids.clone(), label, pod }
            })
            .collect();

        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.scrape += 1;
        state.full_check = state.last_full_check.is_none_or(|t| t.elapsed() >= OWNER_FULL_CHECK_EVERY);
        if state.full_check {
            state.last_full_check = Some(std::time::Instant::now());
        }
        let t_scan = std::time::Instant::now();
        let scans = self.scan(ctx, &namespaces, &mut state, sink);
        let scan_time = t_scan.elapsed();
        let t_export = std::time::Instant::now();

        let mut seen_inodes = HashSet::new();
        for (ns, scan) in namespaces.iter().zip(scans) {
            let Some(scan) = scan else { continue };
            let base = [("namespace", &*ns.pod.namespace), ("pod", &*ns.pod.pod), ("netns", ns.label.as_str())];
            for s in TcpState::ALL {
                let labels = [base[0], base[1], base[2], ("state", s.label())];
                sink.gauge("nodesleuth_tcp_sockets", HELP_SOCKETS, &labels, scan.counts[s.index()] as f64);
            }
            sink.gauge(
                "nodesleuth_tcp_scan_source",
                HELP_SOURCE,
                &[base[0], base[1], base[2], ("source", scan.source)],
                1.0,
            );
            self.export_listeners(sink, &base, &scan);
            seen_inodes.extend(scan.close_wait.iter().map(|(i, _)| *i));
            self.export_close_wait(ctx, ns, &scan, &mut state, sink);
        }
        tracing::debug!(scan = ?scan_time, export = ?t_export.elapsed(), "tcp: timings");
        // Forget sockets that are gone.
        state.owners.retain(|inode, _| seen_inodes.contains(inode));
        state.unowned.retain(|inode, _| seen_inodes.contains(inode));
        Ok(())
    }
}

const HELP_SOCKETS: &str = "TCP sockets (IPv4 and IPv6) per network namespace and state.";
const HELP_CLOSE_WAIT: &str =
    "CLOSE_WAIT sockets by owning process and local port: top groups per network namespace plus one (other) group.";
const HELP_QUEUE_LEN: &str = "Connections waiting in the accept queue of the listeners on a local port.";
const HELP_QUEUE_LIMIT: &str =
    "Accept-queue limit (listen backlog) of the listeners on a local port; netlink source only.";
const HELP_SOURCE: &str =
    "Which data path read this network namespace's sockets this scrape (netlink or procfs); always 1.";

impl TcpCollector {
    /// Reads every namespace; `None` for namespaces whose processes all vanished meanwhile.
    fn scan(
        &self,
        ctx: &ScrapeContext,
        namespaces: &[Namespace],
        state: &mut State,
        sink: &mut Sink,
    ) -> Vec<Option<NsSockets>> {
        let mut netlink: Vec<Option<std::os::fd::OwnedFd>> = namespaces.iter().map(|_| None).collect();
        if self.cfg.source != TcpSource::Procfs {
            let paths: Vec<PathBuf> = namespaces.iter().map(|ns| ctx.proc.pid_path(ns.pids[0], "ns/net")).collect();
            let opened = netns::sockets_in(&paths, libc::AF_NETLINK, libc::SOCK_RAW, inet_diag::NETLINK_SOCK_DIAG);
            for (i, r) in opened.into_iter().enumerate() {
                match r {
                    Ok(fd) => netlink[i] = Some(fd),
                    Err(e) if self.cfg.source == TcpSource::Netlink => {
                        sink.problem(format!("netns {}: cannot open netlink socket inside: {e}", namespaces[i].label));
                    }
                    Err(e) => {
                        if !state.netlink_warned {
                            state.netlink_warned = true;
                            tracing::info!(netns = %namespaces[i].label, error = %e, "tcp: netlink not available, reading procfs text instead");
                        }
                    }
                }
            }
        }
        let semantics = if netlink.iter().any(Option::is_some) { self.counter_semantics() } else { None };
        let mut out = Vec::with_capacity(namespaces.len());
        for (ns, fd) in namespaces.iter().zip(netlink) {
            let result = match fd {
                Some(fd) => self.scan_netlink(ctx, ns, &fd, semantics, state, sink),
                None if self.cfg.source == TcpSource::Netlink => None,
                None => scan_procfs(&ctx.proc, ns, &mut state.line_buf, sink),
            };
            out.push(result);
        }
        out
    }

    fn scan_netlink(
        &self,
        ctx: &ScrapeContext,
        ns: &Namespace,
        fd: &std::os::fd::OwnedFd,
        semantics: Option<CounterSemantics>,
        state: &mut State,
        sink: &mut Sink,
    ) -> Option<NsSockets> {
        // Counters first: if they cannot be read, dump everything.
        let sem = semantics.unwrap_or_default();
        let counters = if sem == CounterSemantics::default() { None } else { read_counters(&ctx.proc, ns) };
        let mut skip: Vec<TcpState> = Vec::new();
        if counters.is_some() {
            if sem.curr_estab_includes_close_wait.is_some() {
                skip.push(TcpState::Established);
            }
            if sem.tw_includes_fin_wait2_minisocks.is_some() {
                skip.push(TcpState::TimeWait);
            }
        }
        let wanted: Vec<TcpState> = TcpState::ALL.into_iter().filter(|s| !skip.contains(s)).collect();
        let mask = inet_diag::states_mask(&wanted);
        let mut scan = NsSockets { limits_known: true, source: "netlink", ..NsSockets::default() };
        let dumped = sock_diag::dump_tcp(fd, mask, &mut state.diag_buf, |s| {
            scan.add(s.state, s.local_port, s.inode, s.rqueue, s.wqueue, s.timer)
        });
        if let Err(e) = dumped {
            sink.problem(format!("netns {}: sock_diag dump: {e}", ns.label));
            return None;
        }
        if let Some((curr_estab, tw)) = counters {
            if let Some(includes_cw) = sem.curr_estab_includes_close_wait {
                let cw = scan.counts[TcpState::CloseWait.index()];
                scan.counts[TcpState::Established.index()] =
                    if includes_cw { curr_estab.saturating_sub(cw) } else { curr_estab };
            }
            if let Some(includes_fw2) = sem.tw_includes_fin_wait2_minisocks {
                let minisocks = if includes_fw2 { scan.fin_wait2_minisocks } else { 0 };
                scan.counts[TcpState::TimeWait.index()] = tw.saturating_sub(minisocks);
            }
        }
        Some(scan)
    }

    fn export_listeners(&self, sink: &mut Sink, base: &[(&'static str, &str); 3], scan: &NsSockets) {
        let mut ports: Vec<(&u16, &(u64, u64))> = scan.listeners.iter().collect();
        if ports.len() > self.cfg.listen_ports_max {
            // Keep the fullest queues: those are the ones an alert needs.
            ports.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
            ports.truncate(self.cfg.listen_ports_max);
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
        ns: &Namespace,
        scan: &NsSockets,
        state: &mut State,
        sink: &mut Sink,
    ) {
        if scan.close_wait.is_empty() {
            return;
        }
        let owners = attribute(&ctx.proc, &ns.pids, &scan.close_wait, state);
        // Group by (owner pod, container, process, port).
        let mut who: HashMap<u32, (PodInfo, String)> = HashMap::new();
        let mut groups: HashMap<(PodInfo, String, u16), u64> = HashMap::new();
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
            *groups.entry((pod, process, *port)).or_default() += 1;
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let rest: u64 = groups.iter().skip(self.cfg.close_wait_top_n).map(|g| g.1).sum();
        for ((pod, process, port), count) in groups.iter().take(self.cfg.close_wait_top_n) {
            let port = port.to_string();
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

/// `CurrEstab` and `tw` of one namespace, read through any of its processes.
fn read_counters(proc: &ProcFs, ns: &Namespace) -> Option<(u64, u64)> {
    for &pid in &ns.pids {
        let snmp = proc.read_string(&proc.pid_path(pid, "net/snmp"));
        let sockstat = proc.read_string(&proc.pid_path(pid, "net/sockstat"));
        if let (Ok(snmp), Ok(sockstat)) = (snmp, sockstat) {
            return Some((netstat::snmp_tcp_curr_estab(&snmp)?, netstat::sockstat_tcp_tw(&sockstat)?));
        }
    }
    None
}

/// Reads `net/tcp` and `net/tcp6` through the first process of the namespace that still exists.
fn scan_procfs(proc: &ProcFs, ns: &Namespace, buf: &mut Vec<u8>, sink: &mut Sink) -> Option<NsSockets> {
    for &pid in &ns.pids {
        let mut scan = NsSockets { source: "procfs", ..NsSockets::default() };
        let mut bad = BadLines::default();
        let v4 = proc.pid_path(pid, "net/tcp");
        if let Err(e) = read_tcp_file(&v4, buf, &mut scan, &mut bad) {
            if !proc.pid_path(pid, "").exists() {
                continue; // the process exited mid-scan: try another of the namespace
            }
            sink.problem(format!("{}: {e}", v4.display()));
            return None;
        }
        let v6 = proc.pid_path(pid, "net/tcp6");
        match read_tcp_file(&v6, buf, &mut scan, &mut bad) {
            Ok(()) => {}
            // No tcp6 file: IPv6 is disabled on this kernel.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && proc.pid_path(pid, "").exists() => {}
            Err(e) => sink.problem(format!("{}: {e}", v6.display())),
        }
        if let Some((path, line, err)) = bad.first {
            sink.problem(format!("{path}: {} malformed line(s) skipped, first at line {line}: {err}", bad.count));
        }
        return Some(scan);
    }
    None
}

#[derive(Default)]
struct BadLines {
    count: u64,
    first: Option<(String, u64, proc_net_tcp::LineError)>,
}

fn read_tcp_file(
    path: &std::path::Path,
    buf: &mut Vec<u8>,
    scan: &mut NsSockets,
    bad: &mut BadLines,
) -> std::io::Result<()> {
    let mut line_no = 0u64;
    procfs::for_each_line(path, buf, |line| {
        line_no += 1;
        match proc_net_tcp::parse_line(line) {
            Ok(Some(row)) => scan.add(row.state, row.local_port, row.inode, row.rx_queue, 0, row.timer),
            Ok(None) => {}
            Err(e) => {
                bad.count += 1;
                if bad.first.is_none() {
                    bad.first = Some((path.display().to_string(), line_no, e));
                }
            }
        }
    })
}

/// Finds the process holding each CLOSE_WAIT socket. Cached owners are re-validated with one readlink; the rest
/// trigger a walk of the namespace's processes' fd tables that stops as soon as every socket is found.
fn attribute(proc: &ProcFs, pids: &[u32], sockets: &[(u64, u16)], state: &mut State) -> HashMap<u64, u32> {
    let mut found = HashMap::with_capacity(sockets.len());
    let mut missing: HashSet<u64> = HashSet::new();
    let mut alive: HashMap<u32, Option<u64>> = HashMap::new();
    for (inode, _) in sockets {
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
    'procs: for &pid in pids {
        let Ok(dir) = std::fs::read_dir(proc.pid_path(pid, "fd")) else { continue };
        for entry in dir.flatten() {
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

/// Establishes what this kernel's per-namespace counters mean by building known sockets in a throwaway network
/// namespace: one connection whose server side sits in CLOSE_WAIT and one whose client side sits in TIME_WAIT.
/// Needs CAP_SYS_ADMIN; the namespace disappears with the thread.
pub fn probe_counter_semantics() -> Result<CounterSemantics, String> {
    std::thread::Builder::new()
        .name("nodesleuth-probe".into())
        .spawn(probe_in_private_namespace)
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "probe thread panicked".to_string())?
}

fn probe_in_private_namespace() -> Result<CounterSemantics, String> {
    use std::net::{TcpListener, TcpStream};
    // SAFETY: unshare(2) of this thread's network namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
    }
    loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    let read = |file: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).map_err(|e| e.to_string());
    // Counts per state from the text table, plus FIN_WAIT2 timewait minisockets in slot 0 of a second array.
    let count_states = || -> Result<([u64; 11], u64), String> {
        let mut counts = [0u64; 11];
        let mut minisocks = 0;
        for file in ["tcp", "tcp6"] {
            for line in read(file).unwrap_or_default().lines() {
                if let Ok(Some(row)) = proc_net_tcp::parse_line(line.as_bytes()) {
                    counts[row.state.index()] += 1;
                    if row.state == TcpState::FinWait2 && row.timer == TIMER_TIME_WAIT {
                        minisocks += 1;
                    }
                }
            }
        }
        Ok((counts, minisocks))
    };
    let wait_for = |pred: &dyn Fn(&[u64; 11]) -> bool| -> Result<([u64; 11], u64), String> {
        for _ in 0..400 {
            let c = count_states()?;
            if pred(&c.0) {
                return Ok(c);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err("sockets did not reach the expected states".into())
    };
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Connection A: the client closes, the server keeps its end → server CLOSE_WAIT (client: orphaned FIN_WAIT2).
    let client_a = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let (server_a, _) = listener.accept().map_err(|e| e.to_string())?;
    drop(client_a);
    let (counts, _) = wait_for(&|c| c[TcpState::CloseWait.index()] == 1)?;
    let curr = netstat::snmp_tcp_curr_estab(&read("snmp")?).ok_or("no CurrEstab in snmp")?;
    let est = counts[TcpState::Established.index()];
    let includes_cw = match curr {
        c if c == est + 1 => Some(true),
        c if c == est => Some(false),
        _ => None,
    };
    // Connection B: the server closes first, then the client → server TIME_WAIT.
    let client_b = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let (server_b, _) = listener.accept().map_err(|e| e.to_string())?;
    drop(server_b);
    wait_for(&|c| c[TcpState::CloseWait.index()] == 2)?;
    drop(client_b);
    let (counts, minisocks) = wait_for(&|c| c[TcpState::TimeWait.index()] >= 1)?;
    let tw = netstat::sockstat_tcp_tw(&read("sockstat")?).ok_or("no tw in sockstat")?;
    let time_wait = counts[TcpState::TimeWait.index()];
    let includes_fw2 = match tw {
        t if minisocks > 0 && t == time_wait + minisocks => Some(true),
        t if t == time_wait => Some(false),
        _ => None,
    };
    drop(server_a);
    Ok(CounterSemantics { curr_estab_includes_close_wait: includes_cw, tw_includes_fin_wait2_minisocks: includes_fw2 })
}

fn loopback_up() -> std::io::Result<()> {
    // SAFETY: ioctl(SIOCGIFFLAGS/SIOCSIFFLAGS) on a datagram socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 { Err(err) } else { Ok(()) }
    }
}

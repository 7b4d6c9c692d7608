//! The per-scrape socket scan of every network namespace, shared by the collectors that need sockets (`tcp`
//! counts and attributes them, `ipvs` joins client connections with the IPVS table), so each namespace's socket
//! table is read once per scrape however many collectors use it.
//!
//! Namespaces are found through `/proc/<pid>/ns/net` (deduplicated by inode) and read through one of their
//! processes:
//! - *netlink* (default where permitted): a `sock_diag` socket created inside the namespace (setns on a private
//!   thread) dumps only the states that are rare, IPv4 and IPv6 in one walk of the kernel's socket hash.
//!   ESTABLISHED and TIME_WAIT, the bulk on a busy node, come from the namespace's O(1) counters (`net/snmp`
//!   CurrEstab, `net/sockstat` tw) once a start-up self-test in a throwaway namespace has shown what those counters
//!   mean on this kernel. Listeners report queue length and limit. ESTABLISHED sockets to IPVS virtual services
//!   are fetched with a kernel-side filter, so they cost a walk, not a copy of every socket.
//! - *procfs* (fallback, fixture trees, `--collector.tcp.source=procfs`): `/proc/<pid>/net/tcp` and `tcp6`,
//!   streamed through a reused buffer. No accept-queue limit (the kernel does not print it there).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nodesleuth_parse::inet_diag;
use nodesleuth_parse::ipvs;
use nodesleuth_parse::netstat;
use nodesleuth_parse::proc_net_tcp;
use nodesleuth_parse::tcp_state::TcpState;

use crate::netns;
use crate::pods::{PodInfo, PodResolver};
use crate::procfs::{self, ProcFs};
use crate::registry::ScrapeContext;
use crate::sock_diag;

/// How socket tables are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TcpSource {
    /// eBPF where permitted, else netlink where permitted, else procfs text (`--collector.tcp.exact-counts`:
    /// netlink or procfs).
    Auto,
    /// State counts and CLOSE_WAIT sockets kept current by an eBPF program on the TCP state-change tracepoint
    /// (see [`crate::bpf`]); a scrape reads maps instead of walking socket tables. Fails (reported) where BPF is
    /// not permitted.
    Ebpf,
    /// Netlink only; a namespace that cannot be entered is reported as a failure.
    Netlink,
    /// procfs text only.
    Procfs,
}

#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub source: TcpSource,
    /// Count every state by dumping it, instead of trusting the kernel's ESTABLISHED/TIME_WAIT counters.
    pub exact_dump: bool,
    /// Also collect ESTABLISHED sockets whose remote endpoint is an IPVS TCP virtual service.
    pub ipvs_clients: bool,
    /// See [`scan_netlink`]: up to this many ESTABLISHED sockets, IPVS client sockets come from the same walk.
    pub one_walk_max_established: u64,
    /// eBPF source: every namespace's counts are re-checked against its sockets once per this interval, one
    /// namespace at a time, spread evenly over it.
    pub ebpf_resync_interval: std::time::Duration,
    /// `--path.procfs` is a procfs mount (the host's), not a fixture tree: only then does `auto` load the eBPF
    /// source.
    pub procfs_is_kernel: bool,
}

/// Whether `path` is a mounted procfs (statfs magic `PROC_SUPER_MAGIC`).
pub fn is_procfs_mount(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs(2) with a NUL-terminated path and a zeroed out-struct of the right type.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::PROC_SUPER_MAGIC
    }
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

/// The sockets of one namespace, reduced to what collectors use.
#[derive(Debug, Default)]
pub struct NsSockets {
    pub counts: [u64; 11],
    /// (inode, local port) of each CLOSE_WAIT socket.
    pub close_wait: Vec<(u64, u16)>,
    /// Local port → (queue length, queue limit), summed over listeners on that port (v4 + v6, reuseport groups).
    pub listeners: BTreeMap<u16, (u64, u64)>,
    pub limits_known: bool,
    /// FIN_WAIT2 entries that are timewait minisockets (counted in `sockstat` `tw`).
    pub(crate) fin_wait2_minisocks: u64,
    /// `ebpf`, `netlink` or `procfs`.
    pub source: &'static str,
    /// ESTABLISHED sockets whose remote endpoint is an IPVS virtual service: (local, remote).
    pub to_virtual_services: Vec<(SocketAddr, SocketAddr)>,
}

impl NsSockets {
    pub(crate) fn add(
        &mut self,
        state: TcpState,
        local_port: u16,
        inode: u64,
        queue_len: u32,
        queue_limit: u32,
        timer: u8,
    ) {
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

/// One namespace: its processes, how it is labelled, and its sockets (`None` when its processes all vanished
/// meanwhile or it could not be read; the reason is in [`NetScan::problems`]).
#[derive(Debug)]
pub struct NsScan {
    pub pids: Vec<u32>,
    pub label: String,
    pub pod: PodInfo,
    pub sockets: Option<NsSockets>,
}

/// One scrape's view of every namespace's sockets.
#[derive(Debug, Default)]
pub struct NetScan {
    pub namespaces: Vec<NsScan>,
    /// What went wrong (malformed lines, unreadable namespaces); the data read around it is still here.
    pub problems: Vec<String>,
    /// The IPVS TCP virtual services the scan looked for (empty unless asked for).
    pub virtual_services: HashSet<SocketAddr>,
    /// Walks of the kernel's socket tables this scan made (one per netlink dump or procfs file).
    pub walks: u64,
}

/// Reads every namespace's sockets, at most once per scrape.
pub struct SocketScanner {
    cfg: ScanConfig,
    pods: Arc<PodResolver>,
    counters: OnceLock<CounterSemantics>,
    buffers: Mutex<(Vec<u8>, Vec<u8>)>,
    netlink_warned: AtomicBool,
    /// Socket-table walks since start (see [`NetScan::walks`]).
    walks_total: AtomicU64,
    /// The eBPF source, when loaded.
    ebpf: Option<Arc<crate::bpf_source::EbpfSource>>,
    /// Why the eBPF source could not be loaded (`--collector.tcp.source=ebpf` reports it every scrape).
    ebpf_error: Option<String>,
}

impl SocketScanner {
    pub fn new(cfg: ScanConfig, pods: Arc<PodResolver>) -> Arc<Self> {
        let (ebpf, ebpf_error) = match cfg.source {
            TcpSource::Ebpf => match crate::bpf_source::EbpfSource::start(cfg.ebpf_resync_interval) {
                Ok(s) => {
                    tracing::info!("tcp: eBPF source loaded");
                    (Some(s), None)
                }
                Err(e) => {
                    tracing::error!(error = %e, "tcp: eBPF source cannot be loaded");
                    (None, Some(e))
                }
            },
            // Not on a fixture tree (`--path.procfs` that is not a procfs mount): the maps describe the kernel.
            TcpSource::Auto if !cfg.exact_dump && cfg.procfs_is_kernel => {
                match crate::bpf_source::EbpfSource::start(cfg.ebpf_resync_interval) {
                    Ok(s) => {
                        tracing::info!("tcp: eBPF source loaded");
                        (Some(s), None)
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "tcp: eBPF not permitted or not available; walking socket tables instead");
                        (None, None)
                    }
                }
            }
            _ => (None, None),
        };
        let scanner = Arc::new(SocketScanner {
            cfg,
            pods,
            counters: OnceLock::new(),
            buffers: Mutex::new((Vec::new(), Vec::new())),
            netlink_warned: AtomicBool::new(false),
            walks_total: AtomicU64::new(0),
            ebpf,
            ebpf_error,
        });
        if scanner.cfg.source != TcpSource::Procfs && !scanner.cfg.exact_dump {
            // Run the self-test at start-up rather than in the first scrape; a scrape that needs it meanwhile waits.
            let s = scanner.clone();
            std::thread::spawn(move || s.counter_semantics());
        }
        scanner
    }

    /// This scrape's scan: the first caller reads, later callers of the same scrape get the same result.
    pub fn scan(&self, ctx: &ScrapeContext) -> Arc<NetScan> {
        ctx.once(|| {
            let scan = self.read_all(ctx);
            self.walks_total.fetch_add(scan.walks, Ordering::Relaxed);
            scan
        })
    }

    /// Walks of the kernel's socket tables since start: each costs a pass over the whole (global) established
    /// hash, whatever the namespace holds, unless `net.ipv4.tcp_child_ehash_entries` gave namespaces their own.
    pub fn walks_total(&self) -> u64 {
        self.walks_total.load(Ordering::Relaxed) + self.ebpf_stats().map_or(0, |s| s.walks)
    }

    /// Logs, once, that a namespace could not be entered for netlink and is read from procfs text instead.
    pub(crate) fn note_netlink_unavailable(&self, label: &str, e: &std::io::Error) {
        if !self.netlink_warned.swap(true, Ordering::Relaxed) {
            tracing::info!(netns = %label, error = %e, "tcp: netlink not available, reading procfs text instead");
        }
    }

    pub fn config(&self) -> &ScanConfig {
        &self.cfg
    }

    /// The eBPF source's own figures (`None` when it is not in use).
    pub fn ebpf_stats(&self) -> Option<crate::bpf_source::EbpfStats> {
        self.ebpf.as_ref().map(|e| e.stats())
    }

    /// The self-test's verdict on this kernel's counters (runs it if it has not run yet); `None` with
    /// `--collector.tcp.exact-counts`.
    pub fn kernel_counters(&self) -> Option<CounterSemantics> {
        self.counter_semantics()
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

    fn read_all(&self, ctx: &ScrapeContext) -> NetScan {
        let mut out = NetScan::default();
        let table = ctx.processes();
        if table.by_netns.is_empty() {
            out.problems.push(format!("no readable /proc/<pid>/ns/net under {}", ctx.proc.root().display()));
            return out;
        }
        let names = netns::named_namespaces(&ctx.host.rootfs);
        if self.cfg.ipvs_clients
            && let Ok(bytes) = &ip_vs_table(ctx).bytes
        {
            out.virtual_services = tcp_virtual_services(bytes);
        }
        out.namespaces = table
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
                NsScan { pids: pids.clone(), label, pod, sockets: None }
            })
            .collect();

        if self.cfg.source == TcpSource::Ebpf || self.ebpf.is_some() {
            let Some(ebpf) = &self.ebpf else {
                let e = self.ebpf_error.clone().unwrap_or_default();
                out.problems.push(format!("eBPF source not available: {e}"));
                return out;
            };
            let inodes: Vec<u64> = table.by_netns.keys().copied().collect();
            let semantics = self.counter_semantics();
            let mut bufs = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
            out.walks = ebpf.read(self, ctx, &inodes, semantics, &mut out, &mut bufs.1);
            return out;
        }
        let mut netlink: Vec<Option<std::os::fd::OwnedFd>> = out.namespaces.iter().map(|_| None).collect();
        if self.cfg.source != TcpSource::Procfs {
            let paths: Vec<PathBuf> = out.namespaces.iter().map(|ns| ctx.proc.pid_path(ns.pids[0], "ns/net")).collect();
            let opened = netns::sockets_in(&paths, libc::AF_NETLINK, libc::SOCK_RAW, inet_diag::NETLINK_SOCK_DIAG);
            for (i, r) in opened.into_iter().enumerate() {
                match r {
                    Ok(fd) => netlink[i] = Some(fd),
                    Err(e) if self.cfg.source == TcpSource::Netlink => {
                        let label = &out.namespaces[i].label;
                        out.problems.push(format!("netns {label}: cannot open netlink socket inside: {e}"));
                    }
                    Err(e) => {
                        if !self.netlink_warned.swap(true, Ordering::Relaxed) {
                            tracing::info!(netns = %out.namespaces[i].label, error = %e, "tcp: netlink not available, reading procfs text instead");
                        }
                    }
                }
            }
        }
        let semantics = if netlink.iter().any(Option::is_some) { self.counter_semantics() } else { None };
        let mut bufs = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let (line_buf, diag_buf) = &mut *bufs;
        let mut walks = 0u64;
        for (ns, fd) in out.namespaces.iter_mut().zip(netlink) {
            ns.sockets = match fd {
                Some(fd) => scan_netlink(
                    &self.cfg,
                    &ctx.proc,
                    ns,
                    &fd,
                    semantics,
                    &out.virtual_services,
                    diag_buf,
                    &mut out.problems,
                    &mut walks,
                ),
                None if self.cfg.source == TcpSource::Netlink => None,
                None => {
                    walks += 2; // net/tcp and net/tcp6
                    scan_procfs(&ctx.proc, ns, &out.virtual_services, line_buf, &mut out.problems)
                }
            };
        }
        out.walks = walks;
        out
    }
}

/// The host's IPVS service table (`net/ip_vs`), read once per scrape: the socket scan needs its virtual services,
/// the ipvs collector all of it.
pub fn ip_vs_table(ctx: &ScrapeContext) -> Arc<IpVsTable> {
    ctx.once(|| {
        let Some(pid) = ctx.processes().host_pid() else {
            return IpVsTable {
                path: ctx.proc.root().join("net/ip_vs"),
                bytes: Err(std::io::ErrorKind::NotFound.into()),
            };
        };
        let path = ctx.proc.pid_path(pid, "net/ip_vs");
        let bytes = std::fs::read(&path);
        IpVsTable { path, bytes }
    })
}

/// The host's `net/ip_vs`, with where it was read from.
#[derive(Debug)]
pub struct IpVsTable {
    pub path: PathBuf,
    pub bytes: std::io::Result<Vec<u8>>,
}

/// TCP virtual services of the host's IPVS table (`net/ip_vs`); a malformed table is the ipvs collector's to
/// report, here it just yields what parses.
fn tcp_virtual_services(ip_vs: &[u8]) -> HashSet<SocketAddr> {
    let Ok(services) = ipvs::parse_services(ip_vs) else { return HashSet::new() };
    services
        .filter_map(Result::ok)
        .filter_map(|s| match s.virtual_service {
            ipvs::VirtualService::Socket { protocol, addr } if protocol == ipvs::Protocol::TCP => {
                Some(canonical_socket(addr))
            }
            _ => None,
        })
        .collect()
}

/// `canonical` for a socket address.
pub fn canonical_socket(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

/// Reads one namespace over netlink. IPVS client sockets: up to `cfg.one_walk_max_established` ESTABLISHED
/// sockets (by the namespace's counter), they are copied in the same walk as the rare states, instead of a second,
/// kernel-filtered walk: a walk costs a pass over the global socket hash (~25 ms at 100,000 sockets on the node),
/// copying a socket about a microsecond. Pod namespaces hold few sockets; the host namespace of a busy node keeps
/// the filtered walk.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_netlink(
    cfg: &ScanConfig,
    proc: &ProcFs,
    ns: &NsScan,
    fd: &std::os::fd::OwnedFd,
    semantics: Option<CounterSemantics>,
    virtual_services: &HashSet<SocketAddr>,
    buf: &mut Vec<u8>,
    problems: &mut Vec<String>,
    walks: &mut u64,
) -> Option<NsSockets> {
    // Counters first: if they cannot be read, dump everything.
    let sem = semantics.unwrap_or_default();
    let counters = if sem == CounterSemantics::default() { None } else { read_counters(proc, &ns.pids) };
    let mut skip: Vec<TcpState> = Vec::new();
    if let Some((curr_estab, _)) = counters {
        let one_walk = !virtual_services.is_empty() && curr_estab <= cfg.one_walk_max_established;
        if sem.curr_estab_includes_close_wait.is_some() && !one_walk {
            skip.push(TcpState::Established);
        }
        if sem.tw_includes_fin_wait2_minisocks.is_some() {
            skip.push(TcpState::TimeWait);
        }
    }
    let wanted: Vec<TcpState> = TcpState::ALL.into_iter().filter(|s| !skip.contains(s)).collect();
    let mask = inet_diag::states_mask(&wanted);
    let mut scan = NsSockets { limits_known: true, source: "netlink", ..NsSockets::default() };
    *walks += 1;
    let dumped = sock_diag::dump_tcp(fd, mask, buf, |s| {
        scan.add(s.state, s.local_port, s.inode, s.rqueue, s.wqueue, s.timer);
        if s.state == TcpState::Established && !virtual_services.is_empty() {
            let remote = SocketAddr::new(canonical(s.remote_addr), s.remote_port);
            if virtual_services.contains(&remote) {
                scan.to_virtual_services.push((SocketAddr::new(canonical(s.local_addr), s.local_port), remote));
            }
        }
    });
    if let Err(e) = dumped {
        problems.push(format!("netns {}: sock_diag dump: {e}", ns.label));
        return None;
    }
    if skip.contains(&TcpState::Established) && !virtual_services.is_empty() {
        // ESTABLISHED was not dumped: fetch just the ones talking to a virtual service, filtered in the kernel.
        let mut vips: Vec<SocketAddr> = virtual_services.iter().copied().collect();
        vips.sort();
        let per_filter = 1500; // endpoints per filter attribute (well under its 64 KiB limit)
        for chunk in vips.chunks(per_filter) {
            *walks += 1;
            let r = sock_diag::dump_tcp_filtered(fd, TcpState::Established.mask(), chunk, buf, |s| {
                let remote = SocketAddr::new(canonical(s.remote_addr), s.remote_port);
                scan.to_virtual_services.push((SocketAddr::new(canonical(s.local_addr), s.local_port), remote));
            });
            if let Err(e) = r {
                problems.push(format!("netns {}: filtered sock_diag dump: {e}", ns.label));
                break;
            }
        }
    }
    if let Some((curr_estab, tw)) = counters {
        if let Some(includes_cw) = sem.curr_estab_includes_close_wait
            && skip.contains(&TcpState::Established)
        {
            let cw = scan.counts[TcpState::CloseWait.index()];
            scan.counts[TcpState::Established.index()] =
                if includes_cw { curr_estab.saturating_sub(cw) } else { curr_estab };
        }
        if let Some(includes_fw2) = sem.tw_includes_fin_wait2_minisocks
            && skip.contains(&TcpState::TimeWait)
        {
            let minisocks = if includes_fw2 { scan.fin_wait2_minisocks } else { 0 };
            scan.counts[TcpState::TimeWait.index()] = tw.saturating_sub(minisocks);
        }
    }
    Some(scan)
}

/// IPv4-mapped IPv6 addresses as plain IPv4, so a dual-stack socket matches an IPv4 virtual service.
pub fn canonical(addr: std::net::IpAddr) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// `CurrEstab` and `tw` of one namespace, read through any of its processes.
pub(crate) fn read_counters(proc: &ProcFs, pids: &[u32]) -> Option<(u64, u64)> {
    for &pid in pids {
        let snmp = proc.read_string(&proc.pid_path(pid, "net/snmp"));
        let sockstat = proc.read_string(&proc.pid_path(pid, "net/sockstat"));
        if let (Ok(snmp), Ok(sockstat)) = (snmp, sockstat) {
            return Some((netstat::snmp_tcp_curr_estab(&snmp)?, netstat::sockstat_tcp_tw(&sockstat)?));
        }
    }
    None
}

/// Reads `net/tcp` and `net/tcp6` through the first process of the namespace that still exists.
pub(crate) fn scan_procfs(
    proc: &ProcFs,
    ns: &NsScan,
    virtual_services: &HashSet<SocketAddr>,
    buf: &mut Vec<u8>,
    problems: &mut Vec<String>,
) -> Option<NsSockets> {
    for &pid in &ns.pids {
        let mut scan = NsSockets { source: "procfs", ..NsSockets::default() };
        let mut bad = BadLines::default();
        let v4 = proc.pid_path(pid, "net/tcp");
        if let Err(e) = read_tcp_file(&v4, buf, &mut scan, virtual_services, &mut bad) {
            if !proc.pid_path(pid, "").exists() {
                continue; // the process exited mid-scan: try another of the namespace
            }
            problems.push(format!("{}: {e}", v4.display()));
            return None;
        }
        let v6 = proc.pid_path(pid, "net/tcp6");
        match read_tcp_file(&v6, buf, &mut scan, virtual_services, &mut bad) {
            Ok(()) => {}
            // No tcp6 file: IPv6 is disabled on this kernel.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && proc.pid_path(pid, "").exists() => {}
            Err(e) => problems.push(format!("{}: {e}", v6.display())),
        }
        if let Some((path, line, err)) = bad.first {
            problems.push(format!("{path}: {} malformed line(s) skipped, first at line {line}: {err}", bad.count));
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
    virtual_services: &HashSet<SocketAddr>,
    bad: &mut BadLines,
) -> std::io::Result<()> {
    let mut line_no = 0u64;
    procfs::for_each_line(path, buf, |line| {
        line_no += 1;
        match proc_net_tcp::parse_line(line) {
            Ok(Some(row)) => {
                scan.add(row.state, row.local_port, row.inode, row.rx_queue, 0, row.timer);
                if row.state == TcpState::Established && !virtual_services.is_empty() {
                    let remote = SocketAddr::new(canonical(row.remote_addr), row.remote_port);
                    if virtual_services.contains(&remote) {
                        scan.to_virtual_services
                            .push((SocketAddr::new(canonical(row.local_addr), row.local_port), remote));
                    }
                }
            }
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

/// Establishes what this kernel's per-namespace counters mean by building known sockets and watching the counters:
/// one connection whose server side sits in CLOSE_WAIT and one whose client side sits in TIME_WAIT. Preferably in a
/// throwaway network namespace (needs CAP_SYS_ADMIN to make it and CAP_NET_ADMIN to bring its loopback up; it
/// disappears with the thread); without CAP_NET_ADMIN, in the exporter's own namespace (a DaemonSet pod's, quiet),
/// measured against a baseline and repeated until the readings are not disturbed by other sockets.
pub fn probe_counter_semantics() -> Result<CounterSemantics, String> {
    let private = std::thread::Builder::new()
        .name("nodesleuth-probe".into())
        .spawn(probe_in_private_namespace)
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "probe thread panicked".to_string())?;
    match private {
        Err(ProbeError::NoPrivateLoopback(why)) => {
            tracing::debug!(reason = %why, "tcp: counter self-test in the exporter's own network namespace");
            probe_counter_semantics_here(5)
                .map_err(|e| format!("in a private namespace: {why}; in the exporter's own: {e}"))
        }
        Err(ProbeError::Failed(e)) => Err(e),
        Ok(s) => Ok(s),
    }
}

/// The self-test in the calling thread's current network namespace, tried up to `attempts` times while other
/// sockets disturb it.
pub fn probe_counter_semantics_here(attempts: usize) -> Result<CounterSemantics, String> {
    let mut last = String::from("no attempt");
    for _ in 0..attempts {
        match probe_here() {
            Ok(s) => return Ok(s),
            Err(ProbeError::NoPrivateLoopback(e) | ProbeError::Failed(e)) => last = e,
        }
    }
    Err(last)
}

enum ProbeError {
    /// No private namespace with a working loopback could be made (missing capability): try the current one.
    NoPrivateLoopback(String),
    Failed(String),
}

impl From<String> for ProbeError {
    fn from(e: String) -> Self {
        ProbeError::Failed(e)
    }
}

fn probe_in_private_namespace() -> Result<CounterSemantics, ProbeError> {
    // SAFETY: unshare(2) of this thread's network namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(ProbeError::NoPrivateLoopback(format!("unshare(CLONE_NEWNET): {e}")));
    }
    loopback_up().map_err(|e| ProbeError::NoPrivateLoopback(format!("bringing lo up: {e}")))?;
    probe_here()
}

/// The probe proper, in the calling thread's network namespace. Counts are taken relative to a baseline, and each
/// comparison of the text table with a counter is bracketed by two table reads that must agree, so other sockets
/// of the namespace (a scrape arriving) make the probe fail and be repeated rather than conclude wrongly.
fn probe_here() -> Result<CounterSemantics, ProbeError> {
    use std::net::{TcpListener, TcpStream};
    let read = |file: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).map_err(|e| e.to_string());
    // Counts per state from the text table, and the FIN_WAIT2 timewait minisockets among them.
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
    let base = count_states()?.0;
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
    // A counter read between two identical table reads.
    let steady = |counter: &dyn Fn() -> Result<u64, String>| -> Result<(u64, [u64; 11], u64), String> {
        let (before, minisocks) = count_states()?;
        let value = counter()?;
        if count_states()?.0 != before {
            return Err("other sockets changed state during the probe".into());
        }
        Ok((value, before, minisocks))
    };
    let cw = TcpState::CloseWait.index();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Connection A: the client closes, the server keeps its end → server CLOSE_WAIT (client: orphaned FIN_WAIT2).
    let client_a = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let (server_a, _) = listener.accept().map_err(|e| e.to_string())?;
    drop(client_a);
    wait_for(&|c| c[cw] == base[cw] + 1)?;
    let curr_estab = || netstat::snmp_tcp_curr_estab(&read("snmp")?).ok_or_else(|| "no CurrEstab in snmp".to_string());
    let (curr, counts, _) = steady(&curr_estab)?;
    let est = counts[TcpState::Established.index()];
    let close_wait = counts[cw];
    let includes_cw = match curr {
        c if close_wait > 0 && c == est + close_wait => Some(true),
        c if c == est => Some(false),
        _ => None,
    };
    // Connection B: the server closes first, then the client → server TIME_WAIT.
    let client_b = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let (server_b, _) = listener.accept().map_err(|e| e.to_string())?;
    drop(server_b);
    wait_for(&|c| c[cw] == base[cw] + 2)?;
    drop(client_b);
    let tw_index = TcpState::TimeWait.index();
    wait_for(&|c| c[tw_index] > base[tw_index])?;
    let tw_counter = || netstat::sockstat_tcp_tw(&read("sockstat")?).ok_or_else(|| "no tw in sockstat".to_string());
    let (tw, counts, minisocks) = steady(&tw_counter)?;
    let time_wait = counts[tw_index];
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

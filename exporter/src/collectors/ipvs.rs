//! IPVS: kube-proxy's virtual services, its connection table, and client connections it has already forgotten.
//!
//! **What it catches.** A client in a pod calls a Service VIP; kube-proxy's IPVS keeps the translation in a
//! connection entry that expires after the TCP timeout (900 s by default) of silence. If the server answers after
//! that, the reply is no longer translated back to the VIP, the client's kernel answers it with RST, the server
//! closes cleanly, and the client waits forever on an ESTABLISHED socket. Nothing else shows this: node_exporter
//! reads only `ip_vs` and `ip_vs_stats`, never the connection table.
//!
//! **What it reads.** From the host namespace (through one of its processes): `net/ip_vs` (services and real
//! servers), `net/ip_vs_stats` (totals), `net/ip_vs_conn` (streamed once per scrape, memory bounded by services,
//! not rows), and the timeouts over generic netlink (`IPVS_CMD_GET_CONFIG`), or from flags where netlink is not
//! available. The client side comes from the shared socket scan ([`crate::sockets`]): every namespace's ESTABLISHED
//! sockets whose remote endpoint is a TCP virtual service, fetched with a kernel-side filter.
//!
//! **What it exports.** Sized for clusters whose service table has thousands of entries on every node: counts of
//! virtual services and real servers; totals as counters; per service only where this node has connection
//! entries (entries per state, longest idle time of an ESTABLISHED entry); a node-wide idle-time distribution;
//! the timeouts; per client pod and service with connections, client connections,
//! `nodesleuth_ipvs_orphaned_connections` (an ESTABLISHED socket to a VIP with no entry for its client address and
//! port) and `nodesleuth_ipvs_connections_near_expiry` (both only when non-zero). Per-real-server series are
//! opt-in (`--collector.ipvs.backend-metrics`).

use std::collections::HashMap;

/// The per-row maps of the connection-table pass: looked up once or twice for each of 100,000 rows, with keys that
/// come from the kernel's own table, so a fast non-keyed hash (FxHash) instead of SipHash: measured in the
/// `ipvs_conn` benchmark.
pub type ServiceMap = rustc_hash::FxHashMap<(Protocol, SocketAddr), ServiceAgg>;
pub type ClientMap = rustc_hash::FxHashMap<(SocketAddr, SocketAddr), ClientSocket>;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nodesleuth_parse::ipvs::{self, ConnState, Connection, Protocol, VirtualService};

use crate::metrics::Sink;
use crate::procfs;
use crate::registry::{CollectError, Collector, ScrapeContext};
use crate::sockets::{SocketScanner, canonical_socket as canonical_addr};

/// Flags of the IPVS collector.
#[derive(clap::Args, Debug, Clone)]
pub struct IpvsArgs {
    /// IPVS: TCP timeout in seconds, used when the kernel's cannot be read over netlink (kernel default 900).
    #[arg(long = "collector.ipvs.timeout-tcp", default_value_t = 900)]
    pub timeout_tcp: u32,
    /// IPVS: TCP FIN timeout in seconds, used when netlink is not available (kernel default 120).
    #[arg(long = "collector.ipvs.timeout-tcpfin", default_value_t = 120)]
    pub timeout_tcp_fin: u32,
    /// IPVS: UDP timeout in seconds, used when netlink is not available (kernel default 300).
    #[arg(long = "collector.ipvs.timeout-udp", default_value_t = 300)]
    pub timeout_udp: u32,
    /// IPVS: an entry of a client connection counts as near expiry when less than this fraction of the TCP
    /// timeout is left.
    #[arg(long = "collector.ipvs.near-expiry-ratio", default_value = "0.1", value_parser = crate::cli::parse_ratio)]
    pub near_expiry_ratio: f64,
    /// IPVS: export per-real-server series (active/inactive connections, weight). Off by default: the service
    /// table is the same on every node, so on a cluster with thousands of endpoints this is tens of thousands of
    /// series per node.
    #[arg(long = "collector.ipvs.backend-metrics", default_value_t = false, action = clap::ArgAction::Set)]
    pub backend_metrics: bool,
}

/// The `ipvs` collector: on by default.
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "ipvs",
    enabled_by_default: true,
    help: "IPVS services, connection table, and client connections IPVS has forgotten (orphaned)",
    build: |args, shared| build(&args.ipvs, shared),
};

pub fn build(args: &IpvsArgs, shared: &super::Shared) -> Arc<dyn Collector> {
    Arc::new(IpvsCollector { args: args.clone(), scanner: shared.sockets.clone(), buf: Mutex::new(Vec::new()) })
}

pub struct IpvsCollector {
    args: IpvsArgs,
    scanner: Arc<SocketScanner>,
    buf: Mutex<Vec<u8>>,
}

/// Upper bounds (seconds) of the node-wide idle-time distribution. Fixed, so series stay comparable when timeouts
/// change; dense near the 900 s default.
const IDLE_BUCKETS: [f64; 12] = [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 750.0, 810.0, 870.0, 900.0, 1800.0];

/// Connection-table aggregate of one virtual service.
#[derive(Default)]
pub struct ServiceAgg {
    /// Entries per state name (few distinct names: linear search, no allocation per row).
    pub states: Vec<(String, u64)>,
    /// Longest idle time of an ESTABLISHED TCP entry (`None` without one).
    pub idle_max: Option<u32>,
}

/// A client socket to a virtual service, and what the connection table says of it.
pub struct ClientSocket {
    /// Index of its namespace in the socket scan.
    pub namespace: usize,
    pub matched: bool,
    pub near_expiry: bool,
}

/// One pass over `ip_vs_conn`, fed line by line (header included): per virtual service entries by state and the
/// longest ESTABLISHED idle time, the node-wide idle distribution, and which client sockets have an entry (and
/// whether it is about to expire). Memory is bounded by services and client sockets, never by rows. Public so
/// that the benchmark (`cargo bench -p nodesleuth --bench ipvs_conn`) times exactly this code.
pub struct ConnTable {
    /// Keyed by (protocol, canonical virtual address); only listed services.
    pub services: ServiceMap,
    /// Keyed by (canonical client address, canonical virtual address).
    pub clients: ClientMap,
    tcp_timeout: u32,
    near_limit: u32,
    pub rows: RowStats,
    pub idle_buckets: [u64; IDLE_BUCKETS.len()],
    pub idle_count: u64,
}

impl ConnTable {
    pub fn new(services: ServiceMap, clients: ClientMap, tcp_timeout: u32, near_expiry_ratio: f64) -> ConnTable {
        ConnTable {
            services,
            clients,
            tcp_timeout,
            near_limit: (near_expiry_ratio * f64::from(tcp_timeout)) as u32,
            rows: RowStats::default(),
            idle_buckets: [0; IDLE_BUCKETS.len()],
            idle_count: 0,
        }
    }

    /// Folds in one line of the file (the first is the header).
    pub fn add_line(&mut self, line: &[u8]) {
        let rows = &mut self.rows;
        rows.lines += 1;
        if rows.lines == 1 {
            if !line.starts_with(b"Pro FromIP") {
                rows.bad_header = true;
            }
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let conn = match Connection::from_row(line) {
            Ok(c) => c,
            Err(e) => {
                rows.malformed += 1;
                rows.first_error.get_or_insert_with(|| format!("line {}: {e}", rows.lines));
                return;
            }
        };
        if conn.is_persistence_template() {
            return;
        }
        let vip = canonical_addr(conn.virtual_addr);
        let established = conn.state == ConnState::Established;
        if let Some(agg) = self.services.get_mut(&(conn.protocol, vip)) {
            let state = conn.state.as_str();
            match agg.states.iter_mut().find(|(s, _)| s == state) {
                Some((_, n)) => *n += 1,
                None => agg.states.push((state.to_string(), 1)),
            }
            if established && conn.protocol == Protocol::TCP {
                let idle = self.tcp_timeout.saturating_sub(conn.expires_secs.min(self.tcp_timeout));
                agg.idle_max = agg.idle_max.max(Some(idle));
                // Cumulative: the first bucket that holds it and every one above.
                if let Some(first) = IDLE_BUCKETS.iter().position(|le| f64::from(idle) <= *le) {
                    for b in &mut self.idle_buckets[first..] {
                        *b += 1;
                    }
                }
                self.idle_count += 1;
            }
        } else {
            rows.unknown_service += 1;
        }
        if conn.protocol == Protocol::TCP
            && let Some(c) = self.clients.get_mut(&(canonical_addr(conn.client), vip))
        {
            c.matched = true;
            if established && conn.expires_secs < self.near_limit {
                c.near_expiry = true;
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Timeouts {
    tcp: u32,
    tcp_fin: u32,
    udp: u32,
    source: &'static str,
}

const HELP_ACTIVE: &str = "Active connections (ActiveConn) of an IPVS real server.";
const HELP_INACTIVE: &str = "Inactive connections (InActConn) of an IPVS real server.";
const HELP_WEIGHT: &str = "Scheduling weight of an IPVS real server.";
const HELP_ENTRIES: &str = "IPVS connection-table entries per virtual service and state.";
const HELP_IDLE_MAX: &str =
    "Longest idle time (TCP timeout minus Expires) of an ESTABLISHED IPVS entry of a virtual service.";
const HELP_IDLE_DIST: &str =
    "ESTABLISHED IPVS TCP entries whose idle time is at most idle_le seconds (a snapshot: no rate()).";
const HELP_TIMEOUT: &str = "IPVS timeout (ipvsadm --set name in timeout); source: kernel (netlink) or the flag.";
const HELP_SERVICES: &str = "IPVS virtual services in the table.";
const HELP_REAL_SERVERS: &str = "IPVS real servers in the table.";
const HELP_CLIENTS: &str =
    "ESTABLISHED client sockets in a network namespace whose remote endpoint is an IPVS TCP virtual service.";
const HELP_ORPHANED: &str =
    "Client sockets to an IPVS virtual service without an IPVS connection entry (the client will hang).";
const HELP_NEAR: &str = "Client sockets to an IPVS virtual service whose entry is about to expire.";

impl Collector for IpvsCollector {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
        let host_pid = ctx
            .processes()
            .host_pid()
            .ok_or_else(|| CollectError::Other("host network namespace not found in the process table".into()))?;
        let ip_vs = crate::sockets::ip_vs_table(ctx);
        let services_path = &ip_vs.path;
        let services_text = match &ip_vs.bytes {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // IPVS not loaded (iptables-mode kube-proxy, or no IPVS in this kernel): nothing to report.
                sink.source_absent(format!("{} does not exist: IPVS is not loaded", services_path.display()));
                return Ok(());
            }
            Err(e) => return Err(CollectError::io(services_path, std::io::Error::new(e.kind(), e.to_string()))),
        };
        let timeouts = self.timeouts(&ctx.proc.pid_path(host_pid, "ns/net"));
        for (name, protocol, value) in
            [("tcp", "tcp", timeouts.tcp), ("tcpfin", "tcp", timeouts.tcp_fin), ("udp", "udp", timeouts.udp)]
        {
            sink.gauge(
                "nodesleuth_ipvs_timeout_seconds",
                HELP_TIMEOUT,
                &[("timeout", name), ("protocol", protocol), ("source", timeouts.source)],
                f64::from(value),
            );
        }

        // Services and real servers.
        let services = ipvs::parse_services(services_text).map_err(|e| CollectError::Other(e.to_string()))?;
        let mut known = ServiceMap::default();
        let mut bad_services = 0usize;
        // Per protocol label: (virtual services, real servers). Few protocols: linear search.
        let mut table_counts: Vec<(String, u64, u64)> = Vec::new();
        for service in services {
            let service = match service {
                Ok(s) => s,
                Err(e) => {
                    bad_services += 1;
                    if bad_services == 1 {
                        sink.problem(format!("{}: {e}", services_path.display()));
                    }
                    continue;
                }
            };
            let (protocol, vaddr, vport) = service_labels(&service.virtual_service);
            match table_counts.iter_mut().find(|(p, _, _)| *p == protocol) {
                Some(c) => {
                    c.1 += 1;
                    c.2 += service.real_servers.len() as u64;
                }
                None => table_counts.push((protocol.clone(), 1, service.real_servers.len() as u64)),
            }
            if let VirtualService::Socket { protocol: p, addr } = service.virtual_service {
                known.entry((p, canonical_addr(addr))).or_default();
            }
            if !self.args.backend_metrics {
                continue;
            }
            for rs in &service.real_servers {
                let (raddr, rport) = (rs.addr.ip().to_string(), rs.addr.port().to_string());
                let labels = [
                    ("protocol", protocol.as_str()),
                    ("virtual_address", vaddr.as_str()),
                    ("virtual_port", vport.as_str()),
                    ("real_address", raddr.as_str()),
                    ("real_port", rport.as_str()),
                ];
                sink.gauge(
                    "nodesleuth_ipvs_backend_connections_active",
                    HELP_ACTIVE,
                    &labels,
                    f64::from(rs.active_conns),
                );
                sink.gauge(
                    "nodesleuth_ipvs_backend_connections_inactive",
                    HELP_INACTIVE,
                    &labels,
                    f64::from(rs.inactive_conns),
                );
                sink.gauge("nodesleuth_ipvs_backend_weight", HELP_WEIGHT, &labels, f64::from(rs.weight));
            }
        }

        for (protocol, services, real_servers) in &table_counts {
            sink.gauge("nodesleuth_ipvs_virtual_services", HELP_SERVICES, &[("protocol", protocol)], *services as f64);
            sink.gauge(
                "nodesleuth_ipvs_real_servers",
                HELP_REAL_SERVERS,
                &[("protocol", protocol)],
                *real_servers as f64,
            );
        }
        self.export_stats(&ctx.proc.pid_path(host_pid, "net/ip_vs_stats"), sink);

        // Client sockets from every namespace (the scan shared with the tcp collector), then one pass over the
        // connection table that aggregates and marks the sockets it has entries for.
        let scan = self.scanner.scan(ctx);
        for p in &scan.problems {
            sink.problem(p.clone());
        }
        let mut clients = ClientMap::default();
        for (i, ns) in scan.namespaces.iter().enumerate() {
            for (local, remote) in ns.sockets.iter().flat_map(|s| s.to_virtual_services.iter()) {
                clients.entry((*local, *remote)).or_insert(ClientSocket {
                    namespace: i,
                    matched: false,
                    near_expiry: false,
                });
            }
        }
        let conn_path = ctx.proc.pid_path(host_pid, "net/ip_vs_conn");
        let mut table = ConnTable::new(known, clients, timeouts.tcp, self.args.near_expiry_ratio);
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let read = procfs::for_each_line(&conn_path, &mut buf, |line| table.add_line(line));
        drop(buf);
        let ConnTable { services: known, clients, rows, idle_buckets, idle_count, .. } = table;
        match read {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => sink.problem(format!("{}: {e}", conn_path.display())),
        }
        if rows.bad_header {
            sink.problem(format!("{}: unexpected header line", conn_path.display()));
        }
        if let Some(first) = &rows.first_error {
            sink.problem(format!(
                "{}: {} malformed row(s) skipped, first at {first}",
                conn_path.display(),
                rows.malformed
            ));
        }

        sink.gauge(
            "nodesleuth_ipvs_connection_entries_without_service",
            "IPVS connection-table entries whose virtual address is not a listed service.",
            &[],
            rows.unknown_service as f64,
        );
        for ((protocol, vip), agg) in &known {
            let (p, a, port) = (protocol_label(*protocol), vip.ip().to_string(), vip.port().to_string());
            let base = [("protocol", p.as_str()), ("virtual_address", a.as_str()), ("virtual_port", port.as_str())];
            for (state, n) in &agg.states {
                sink.gauge(
                    "nodesleuth_ipvs_connection_entries",
                    HELP_ENTRIES,
                    &[base[0], base[1], base[2], ("state", state)],
                    *n as f64,
                );
            }
            if let Some(idle) = agg.idle_max {
                sink.gauge("nodesleuth_ipvs_established_idle_max_seconds", HELP_IDLE_MAX, &base, f64::from(idle));
            }
        }
        // Node-wide, not per service: a distribution per service would be 13 series for each of thousands of
        // services. Typed as a gauge: it is a snapshot that goes down, which a histogram's buckets must not; so its
        // bound is `idle_le`, not `le` (which only histograms may carry); `label_replace` it to `le` for
        // histogram_quantile.
        for (le, n) in IDLE_BUCKETS.iter().zip(idle_buckets) {
            let le = le.to_string();
            let labels = [("idle_le", le.as_str())];
            sink.gauge("nodesleuth_ipvs_established_idle_entries", HELP_IDLE_DIST, &labels, n as f64);
        }
        let labels = [("idle_le", "+Inf")];
        sink.gauge("nodesleuth_ipvs_established_idle_entries", HELP_IDLE_DIST, &labels, idle_count as f64);

        // Per client namespace and service: totals, orphans, near expiry (zeros included while connections exist).
        // Orphaned and near-expiry series only where there are some: they are the exception, and a (pod, VIP) pair
        // with none would otherwise cost two series of zeros.
        let mut per: HashMap<(usize, SocketAddr), [u64; 3]> = HashMap::new();
        for ((_, vip), c) in &clients {
            let e = per.entry((c.namespace, *vip)).or_default();
            e[0] += 1;
            e[1] += u64::from(!c.matched);
            e[2] += u64::from(c.near_expiry);
        }
        for ((ns, vip), [total, orphaned, near]) in per {
            let ns = &scan.namespaces[ns];
            let (a, port) = (vip.ip().to_string(), vip.port().to_string());
            let labels = [
                ("namespace", &*ns.pod.namespace),
                ("pod", &*ns.pod.pod),
                ("netns", ns.label.as_str()),
                ("virtual_address", a.as_str()),
                ("virtual_port", port.as_str()),
            ];
            sink.gauge("nodesleuth_ipvs_client_connections", HELP_CLIENTS, &labels, total as f64);
            if orphaned > 0 {
                sink.gauge("nodesleuth_ipvs_orphaned_connections", HELP_ORPHANED, &labels, orphaned as f64);
            }
            if near > 0 {
                sink.gauge("nodesleuth_ipvs_connections_near_expiry", HELP_NEAR, &labels, near as f64);
            }
        }
        Ok(())
    }
}

/// What a pass over `ip_vs_conn` met besides entries.
#[derive(Default, Debug)]
pub struct RowStats {
    pub lines: u64,
    pub malformed: u64,
    pub unknown_service: u64,
    pub bad_header: bool,
    pub first_error: Option<String>,
}

impl IpvsCollector {
    fn export_stats(&self, path: &Path, sink: &mut Sink) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return sink.problem(format!("{}: {e}", path.display())),
        };
        match ipvs::parse_stats(&bytes) {
            Ok(stats) => {
                let t = stats.totals;
                for (name, help, v) in [
                    (
                        "nodesleuth_ipvs_connections_total",
                        "Connections IPVS has scheduled since it was loaded.",
                        t.connections,
                    ),
                    ("nodesleuth_ipvs_incoming_packets_total", "Packets IPVS received.", t.incoming_packets),
                    ("nodesleuth_ipvs_outgoing_packets_total", "Packets IPVS sent.", t.outgoing_packets),
                    ("nodesleuth_ipvs_incoming_bytes_total", "Bytes IPVS received.", t.incoming_bytes),
                    ("nodesleuth_ipvs_outgoing_bytes_total", "Bytes IPVS sent.", t.outgoing_bytes),
                ] {
                    sink.counter(name, help, &[], v as f64);
                }
            }
            Err(e) => sink.problem(format!("{}: {e}", path.display())),
        }
    }

    /// The kernel's timeouts over generic netlink in the host namespace, else the flags.
    fn timeouts(&self, host_ns: &Path) -> Timeouts {
        let flags = Timeouts {
            tcp: self.args.timeout_tcp,
            tcp_fin: self.args.timeout_tcp_fin,
            udp: self.args.timeout_udp,
            source: "flag",
        };
        match crate::genl::ipvs_timeouts(host_ns) {
            Ok(t) => Timeouts { tcp: t.tcp, tcp_fin: t.tcp_fin, udp: t.udp, source: "netlink" },
            Err(e) => {
                tracing::debug!(error = %e, "ipvs: timeouts not readable over netlink, using flags");
                flags
            }
        }
    }
}

/// The `protocol` label value: the kernel's name in lower case (`tcp`, `udp`, `sctp`), as in the timeout series,
/// so that IPVS series join on it.
fn protocol_label(p: Protocol) -> String {
    p.name().as_str().to_ascii_lowercase()
}

/// (protocol, virtual_address, virtual_port) label values of a service. Firewall-mark services have
/// `protocol="fwm"`, the mark as `virtual_address` and port 0.
fn service_labels(vs: &VirtualService) -> (String, String, String) {
    match vs {
        VirtualService::Socket { protocol, addr } => {
            (protocol_label(*protocol), addr.ip().to_string(), addr.port().to_string())
        }
        VirtualService::FirewallMark(mark) => ("fwm".to_string(), mark.to_string(), "0".to_string()),
    }
}

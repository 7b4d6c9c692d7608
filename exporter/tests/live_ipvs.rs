//! The IPVS join on a real kernel. This kernel has no IPVS, so the IPVS tables are fixture files in the kernel's
//! format, but everything else is real: the test builds a procfs view whose host process carries those files and
//! whose other entries are the real `/proc/<pid>` of a client in a real network namespace. The client's sockets to
//! the "VIP" are found by nodesleuth's netlink dump inside that namespace — in the same walk as the rare states
//! (a namespace with few sockets) or by a second, kernel-filtered walk (forced here with
//! `--collector.tcp.one-walk-max-established=0`) — and joined with the table: one socket has a live entry, one an
//! entry near expiry, one none (orphaned). Both paths must give the same answer; only their walk counts differ.
//!
//! With the eBPF source the client sockets come from the program's map instead (kept by state changes and by the
//! seeding iterator): the same answers as the netlink path while connections open and close, with no walk per
//! steady scrape; a virtual service added after the seeding is dumped (walked) until the iterator ran again, and
//! so is everything while the program's virtual service map is full.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use util::{Exporter, Holder, NetNs, require_root, sample};

const CLIENT: &str = r#"
import socket, sys, time
lst = socket.socket(); lst.bind(("10.96.0.1", 443)); lst.listen(16)
clients = [socket.create_connection(("10.96.0.1", 443)) for _ in range(3)]
servers = [lst.accept()[0] for _ in range(3)]
print("READY " + ",".join(str(c.getsockname()[1]) for c in clients), flush=True)
while True: time.sleep(3600)
"#;

#[test]
fn orphaned_and_near_expiry_client_connections_on_a_real_kernel() {
    // Walks per scrape: one per namespace (host, client) in one-walk mode; plus one filtered walk per namespace
    // (the host has ESTABLISHED sockets to skip too) when forced to take it.
    let one = join_on_a_real_kernel(&[]);
    let two = join_on_a_real_kernel(&["--collector.tcp.one-walk-max-established=0"]);
    assert_eq!(two, one * 2, "the filtered path walks each namespace twice, the one-walk path once");
}

/// Runs the join with extra flags; returns the socket-table walks one scrape made.
fn join_on_a_real_kernel(flags: &[&str]) -> u64 {
    require_root();
    let ns = NetNs::new("ipvs");
    util::run("ip", &["-n", &ns.name, "addr", "add", "10.96.0.1/32", "dev", "lo"]);
    let client = Holder::spawn(ns.command("python3"), CLIENT, &[]);
    let ports: Vec<u16> = client.ready.split(',').map(|p| p.parse().unwrap()).collect();

    // The procfs view: "1" is this test process (host namespace) with the IPVS files beside its real net files;
    // the client's entry is its real /proc directory.
    let dir = tempfile::tempdir().unwrap();
    procfs_view(dir.path(), client.pid(), true, &ports);
    let root = dir.path();

    let procfs = format!("--path.procfs={}", root.display());
    let mut args =
        vec![procfs.as_str(), "--collector.tcp.source=netlink", "--no-collector.memory", "--no-collector.systemd"];
    args.extend_from_slice(flags);
    let e = Exporter::start(&args);
    let m = e.scrape();
    let labels = [("netns", ns.name.as_str()), ("virtual_address", "10.96.0.1"), ("virtual_port", "443")];
    assert_eq!(sample(&m, "nodesleuth_ipvs_client_connections", &labels), Some(3.0), "{m}\n{}", e.log());
    assert_eq!(sample(&m, "nodesleuth_ipvs_orphaned_connections", &labels), Some(1.0), "{m}");
    assert_eq!(sample(&m, "nodesleuth_ipvs_connections_near_expiry", &labels), Some(1.0), "{m}");
    // Both namespaces were read over netlink.
    assert_eq!(sample(&m, "nodesleuth_tcp_namespaces", &[("source", "netlink")]), Some(2.0), "{m}");
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "ipvs")]), Some(1.0), "{}", e.log());
    let walks = |m: &str| sample(m, "nodesleuth_tcp_socket_table_walks_total", &[]).unwrap() as u64;
    let first = walks(&m);
    let second = walks(&e.scrape());
    second - first
}

/// Builds the procfs view under `root`: "1" is this test process (host namespace) with the IPVS files beside its
/// real net files (the TCP service 10.96.0.1:443 only when `service`; connection entries for the first two
/// `ports`: live, then near expiry); the client's entry is its real /proc directory.
fn procfs_view(root: &Path, client: u32, service: bool, ports: &[u16]) {
    let me = std::process::id();
    std::fs::create_dir_all(root.join("1/net")).unwrap();
    symlink(format!("/proc/{me}/ns"), root.join("1/ns")).unwrap();
    for f in ["tcp", "tcp6", "snmp", "sockstat"] {
        symlink(format!("/proc/{me}/net/{f}"), root.join("1/net").join(f)).unwrap();
    }
    std::fs::write(root.join("1/cgroup"), "0::/\n").unwrap();
    write_ip_vs(root, service);
    let row = |port: u16, expires: u32| {
        format!("TCP 0A600001 {port:04X} 0A600001 01BB 0AF4031F 192B ESTABLISHED {expires:>7}\n")
    };
    let conn = format!(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n{}{}",
        row(ports[0], 870),
        row(ports[1], 30)
    );
    std::fs::write(root.join("1/net/ip_vs_conn"), conn).unwrap();
    symlink(format!("/proc/{client}"), root.join(client.to_string())).unwrap();
}

/// The IPVS service table, with or without the TCP virtual service 10.96.0.1:443 (written atomically).
fn write_ip_vs(root: &Path, service: bool) {
    let mut table = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n".to_string();
    if service {
        table.push_str("TCP  0A600001:01BB rr\n  -> 0AF4031F:192B      Masq    1      3          0\n");
    }
    let tmp = root.join("1/net/.ip_vs.tmp");
    std::fs::write(&tmp, table).unwrap();
    std::fs::rename(tmp, root.join("1/net/ip_vs")).unwrap();
}

/// A client in a namespace holding connections to 10.96.0.1:443 (served by its own listener there), driven by
/// commands: `open N` answers the new clients' ports, `close P...` closes those clients. Killed on drop.
const DRIVEN_CLIENT: &str = r#"
import socket, sys
lst = socket.socket(); lst.bind(("10.96.0.1", 443)); lst.listen(64)
clients, servers = {}, []
def open_(n):
    ports = []
    for _ in range(n):
        c = socket.create_connection(("10.96.0.1", 443))
        servers.append(lst.accept()[0])
        clients[c.getsockname()[1]] = c
        ports.append(c.getsockname()[1])
    return ",".join(str(p) for p in ports)
print(open_(3), flush=True)
for line in sys.stdin:
    op, *args = line.split()
    if op == "open":
        print(open_(int(args[0])), flush=True)
    elif op == "close":
        for p in args:
            clients.pop(int(p)).close()
        print("OK", flush=True)
"#;

struct DrivenClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DrivenClient {
    fn start(ns: &NetNs) -> (DrivenClient, Vec<u16>) {
        util::require_tool("python3");
        let mut child = ns
            .command("python3")
            .arg("-c")
            .arg(DRIVEN_CLIENT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut c = DrivenClient { child, stdin, stdout };
        let ports = c.answer();
        (c, ports)
    }

    fn answer(&mut self) -> Vec<u16> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let line = line.trim();
        assert!(!line.is_empty(), "the client died");
        if line == "OK" {
            return Vec::new();
        }
        line.split(',').map(|p| p.parse().unwrap_or_else(|_| panic!("client said {line:?}"))).collect()
    }

    fn open(&mut self, n: usize) -> Vec<u16> {
        writeln!(self.stdin, "open {n}").unwrap();
        self.answer()
    }

    fn close(&mut self, ports: &[u16]) {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        writeln!(self.stdin, "close {}", list.join(" ")).unwrap();
        self.answer();
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DrivenClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (client connections, orphaned, near expiry) of the client namespace's VIP; 0 where the series is absent
/// (orphaned and near-expiry series are exported only above 0).
fn join(m: &str, ns: &NetNs) -> (f64, f64, f64) {
    let labels = [("netns", ns.name.as_str()), ("virtual_address", "10.96.0.1"), ("virtual_port", "443")];
    let v = |name: &str| sample(m, name, &labels).unwrap_or(0.0);
    (
        v("nodesleuth_ipvs_client_connections"),
        v("nodesleuth_ipvs_orphaned_connections"),
        v("nodesleuth_ipvs_connections_near_expiry"),
    )
}

fn walks(m: &str) -> f64 {
    sample(m, "nodesleuth_tcp_socket_table_walks_total", &[]).unwrap()
}

fn exporter(root: &Path, source: &str, resync: &str) -> Exporter {
    let procfs = format!("--path.procfs={}", root.display());
    let source = format!("--collector.tcp.source={source}");
    let resync = format!("--collector.tcp.ebpf-resync-interval={resync}");
    let mut args = util::only_collector("tcp");
    args.retain(|a| a != "--no-collector.ipvs");
    args.extend([procfs, source, resync]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Exporter::start(&args)
}

#[test]
fn ebpf_source_keeps_ipvs_client_sockets_without_a_walk_per_scrape() {
    require_root();
    let ns = NetNs::new("ipvsebpf");
    util::run("ip", &["-n", &ns.name, "addr", "add", "10.96.0.1/32", "dev", "lo"]);
    // Three connections older than the exporter: the seeding iterator finds them.
    let (mut client, ports) = DrivenClient::start(&ns);
    let dir = tempfile::tempdir().unwrap();
    procfs_view(dir.path(), client.pid(), true, &ports);
    let ebpf = exporter(dir.path(), "ebpf", "1h");
    let netlink = exporter(dir.path(), "netlink", "1h");

    let m = ebpf.scrape();
    assert_eq!(join(&m, &ns), (3.0, 1.0, 1.0), "{m}\n{}", ebpf.log());
    assert_eq!(sample(&m, "nodesleuth_tcp_namespaces", &[("source", "ebpf")]), Some(2.0), "{m}");
    assert_eq!(sample(&m, "nodesleuth_tcp_ebpf_map_full_total", &[("map", "ipvs_clients")]), Some(0.0), "{m}");
    assert_eq!(join(&netlink.scrape(), &ns), (3.0, 1.0, 1.0));
    // Steady: the seeding scrape walked each namespace once; from now on no scrape walks.
    let steady = |phase: &str, want: (f64, f64, f64)| {
        let before = walks(&ebpf.scrape());
        let m = ebpf.scrape();
        assert_eq!(join(&m, &ns), want, "{phase}: eBPF\n{m}\n{}", ebpf.log());
        assert_eq!(join(&netlink.scrape(), &ns), want, "{phase}: netlink");
        assert_eq!(walks(&m) - before, 0.0, "{phase}: a steady scrape walked\n{}", ebpf.log());
    };
    steady("seeded", (3.0, 1.0, 1.0));
    // Two connections opened after the seeding (no IPVS entry: orphaned), counted by their state changes.
    let new = client.open(2);
    steady("opened", (5.0, 3.0, 1.0));
    // The orphaned old one and one new one closed; then the near-expiry one.
    client.close(&[ports[2], new[0]]);
    steady("closed", (3.0, 1.0, 1.0));
    client.close(&[ports[1]]);
    steady("closed near expiry", (2.0, 1.0, 0.0));
}

#[test]
fn a_virtual_service_added_after_the_seeding_is_dumped_until_the_iterator_ran_again() {
    require_root();
    let ns = NetNs::new("ipvslate");
    util::run("ip", &["-n", &ns.name, "addr", "add", "10.96.0.1/32", "dev", "lo"]);
    let (mut client, ports) = DrivenClient::start(&ns);
    let dir = tempfile::tempdir().unwrap();
    // No virtual service yet: the connections are established before the program is told of the VIP.
    procfs_view(dir.path(), client.pid(), false, &ports);
    let e = exporter(dir.path(), "ebpf", "2s");
    let m = e.scrape();
    assert_eq!(join(&m, &ns), (0.0, 0.0, 0.0), "{m}");
    assert_eq!(sample(&m, "nodesleuth_tcp_namespaces", &[("source", "ebpf")]), Some(2.0), "{m}");

    // Not in the map (no state change since): the filtered dump finds them, one walk per namespace (besides the
    // background resyncs').
    let before = e.scrape();
    write_ip_vs(dir.path(), true);
    let m = e.scrape();
    assert_eq!(join(&m, &ns), (3.0, 1.0, 1.0), "{m}\n{}", e.log());
    let resyncs = |m: &str| sample(m, "nodesleuth_tcp_ebpf_resyncs_total", &[]).unwrap();
    assert!(walks(&m) - walks(&before) >= 2.0 + (resyncs(&m) - resyncs(&before)), "each namespace dumped\n{}", e.log());
    // Once both namespaces' iterator ran again (resync), the map has them: the only walks left are the resyncs'.
    let mut clean = 0;
    for _ in 0..60 {
        let a = e.scrape();
        let b = e.scrape();
        assert_eq!(join(&b, &ns), (3.0, 1.0, 1.0), "{b}\n{}", e.log());
        clean = if walks(&b) - walks(&a) == resyncs(&b) - resyncs(&a) { clean + 1 } else { 0 };
        if clean == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(clean, 3, "scrapes kept dumping after the resyncs\n{}", e.log());
    // Events keep the map current: one new (orphaned) connection, the live one closed.
    assert_eq!(client.open(1).len(), 1);
    client.close(&[ports[0]]);
    let m = e.scrape();
    assert_eq!(join(&m, &ns), (3.0, 2.0, 1.0), "{m}\n{}", e.log());
}

#[test]
fn a_full_virtual_service_map_falls_back_to_the_dump_without_under_counting() {
    require_root();
    let ns = NetNs::new("ipvsfull");
    util::run("ip", &["-n", &ns.name, "addr", "add", "10.96.0.1/32", "dev", "lo"]);
    let (client, ports) = DrivenClient::start(&ns);
    let dir = tempfile::tempdir().unwrap();
    procfs_view(dir.path(), client.pid(), true, &ports);
    // 65,536 more TCP services (10.97.0.0/16, port 80) than the program's `vips` map holds (VIPS_MAX 65,536): the
    // exporter cannot tell which of them the map lacks, so it dumps every namespace, as the netlink source does.
    let mut table = std::fs::read_to_string(dir.path().join("1/net/ip_vs")).unwrap();
    for i in 0..65_536u32 {
        table.push_str(&format!("TCP  0A61{:04X}:0050 rr\n", i));
    }
    std::fs::write(dir.path().join("1/net/ip_vs"), table).unwrap();
    let e = exporter(dir.path(), "ebpf", "1h");
    let m = e.scrape();
    assert_eq!(join(&m, &ns), (3.0, 1.0, 1.0), "{}", e.log());
    assert_eq!(sample(&m, "nodesleuth_tcp_namespaces", &[("source", "ebpf")]), Some(2.0), "{}", e.log());
    let before = walks(&m);
    let m = e.scrape();
    assert_eq!(join(&m, &ns), (3.0, 1.0, 1.0), "{}", e.log());
    // 65,537 services in chunks of 1,500: 44 filtered dumps per namespace.
    assert_eq!(walks(&m) - before, 88.0, "{}", e.log());
    assert!(e.log().contains("virtual service map full"), "{}", e.log());
}

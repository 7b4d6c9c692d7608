//! The IPVS join on a real kernel. This kernel has no IPVS, so the IPVS tables are fixture files in the kernel's
//! format, but everything else is real: the test builds a procfs view whose host process carries those files and
//! whose other entries are the real `/proc/<pid>` of a client in a real network namespace. The client's sockets to
//! the "VIP" are found by nodesleuth's netlink dump inside that namespace — in the same walk as the rare states
//! (a namespace with few sockets) or by a second, kernel-filtered walk (forced here with
//! `--collector.tcp.one-walk-max-established=0`) — and joined with the table: one socket has a live entry, one an
//! entry near expiry, one none (orphaned). Both paths must give the same answer; only their walk counts differ.

mod util;

use std::os::unix::fs::symlink;

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
    let root = dir.path();
    let me = std::process::id();
    std::fs::create_dir_all(root.join("1/net")).unwrap();
    symlink(format!("/proc/{me}/ns"), root.join("1/ns")).unwrap();
    for f in ["tcp", "tcp6", "snmp", "sockstat"] {
        symlink(format!("/proc/{me}/net/{f}"), root.join("1/net").join(f)).unwrap();
    }
    std::fs::write(root.join("1/cgroup"), "0::/\n").unwrap();
    std::fs::write(
        root.join("1/net/ip_vs"),
        "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  0A600001:01BB rr\n  -> 0AF4031F:192B      Masq    1      3          0\n",
    )
    .unwrap();
    let row = |port: u16, expires: u32| {
        format!("TCP 0A600001 {port:04X} 0A600001 01BB 0AF4031F 192B ESTABLISHED {expires:>7}\n")
    };
    let conn = format!(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n{}{}",
        row(ports[0], 870),
        row(ports[1], 30)
    );
    std::fs::write(root.join("1/net/ip_vs_conn"), conn).unwrap();
    symlink(format!("/proc/{}", client.pid()), root.join(client.pid().to_string())).unwrap();

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

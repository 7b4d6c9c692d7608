//! Real-kernel tests of the TCP collector: real sockets in the host namespace and in network namespaces the tests
//! create, with known counts and owners. Run as root (tests/run-all.sh does).

mod util;

use std::process::Command;
use std::time::Duration;

use util::{Exporter, Holder, NetNs, require_root, sample, samples};

const HOLDER: &str = include_str!("holder.py");

fn holder(
    cmd: Command,
    comm: &str,
    close_wait: u32,
    established: u32,
    time_wait: u32,
    backlog: u32,
    queued: u32,
) -> Holder {
    let args = [
        comm.to_string(),
        close_wait.to_string(),
        established.to_string(),
        time_wait.to_string(),
        backlog.to_string(),
        queued.to_string(),
    ];
    Holder::spawn(cmd, HOLDER, &args)
}

fn port(ready: &str, key: &str) -> String {
    let at = ready.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("{key} in {ready}")) + key.len() + 4;
    ready[at..].chars().take_while(char::is_ascii_digit).collect()
}

#[test]
fn close_wait_in_host_namespace_is_attributed_to_its_process() {
    require_root();
    let h = holder(Command::new("python3"), "cw-host", 5, 0, 0, 16, 0);
    let cw_port = port(&h.ready, "cw_port");
    for source in ["netlink", "procfs"] {
        let e = Exporter::start(&[&format!("--collector.tcp.source={source}")]);
        let m = e.scrape();
        assert_eq!(
            sample(
                &m,
                "nodesleuth_tcp_close_wait_sockets",
                &[("netns", "host"), ("process", "cw-host"), ("local_port", &cw_port)]
            ),
            Some(5.0),
            "{source}: CLOSE_WAIT owner\n{m}"
        );
        assert_eq!(
            sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "tcp")]),
            Some(1.0),
            "{}",
            e.log()
        );
    }
}

#[test]
fn namespace_sockets_queue_and_owner_are_exact() {
    require_root();
    let ns = NetNs::new("exact");
    let h = holder(ns.command("python3"), "cw-netns", 7, 3, 2, 4, 6);
    let (cw_port, q_port) = (port(&h.ready, "cw_port"), port(&h.ready, "queue_port"));
    let e = Exporter::start(&["--collector.tcp.source=netlink"]);
    let m = e.scrape();
    let in_ns = |state: &str| sample(&m, "nodesleuth_tcp_sockets", &[("netns", &ns.name), ("state", state)]);
    assert_eq!(in_ns("close_wait"), Some(7.0), "{m}");
    // 3 pairs plus the 5 handshakes completed into the full accept queue (both ends of each).
    assert_eq!(in_ns("established"), Some(3.0 * 2.0 + 5.0 * 2.0), "{m}");
    assert_eq!(in_ns("time_wait"), Some(2.0), "{m}");
    // Four listeners: close-wait, established, time-wait and queue test listeners.
    assert_eq!(in_ns("listen"), Some(4.0), "{m}");
    // The sixth connect finds the queue full: its SYN is dropped, the client waits in SYN_SENT.
    assert_eq!(in_ns("syn_sent"), Some(1.0), "{m}");
    assert_eq!(
        sample(
            &m,
            "nodesleuth_tcp_close_wait_sockets",
            &[("netns", &ns.name), ("process", "cw-netns"), ("local_port", &cw_port)]
        ),
        Some(7.0)
    );
    // listen(4) accepts backlog + 1 connections before it is full.
    let q = [("netns", ns.name.as_str()), ("local_port", q_port.as_str())];
    assert_eq!(sample(&m, "nodesleuth_tcp_listen_queue_length", &q), Some(5.0), "{m}");
    assert_eq!(sample(&m, "nodesleuth_tcp_listen_queue_limit", &q), Some(4.0), "{m}");
    // Read over netlink: the queue limit above is only known there.
    assert!(sample(&m, "nodesleuth_tcp_namespaces", &[("source", "netlink")]).is_some_and(|n| n >= 2.0), "{m}");
}

#[test]
fn netlink_and_procfs_paths_agree_on_the_same_sockets() {
    require_root();
    let ns = NetNs::new("agree");
    let _h = holder(ns.command("python3"), "agree", 9, 4, 3, 2, 5);
    let netlink = Exporter::start(&["--collector.tcp.source=netlink"]);
    let exact = Exporter::start(&["--collector.tcp.source=netlink", "--collector.tcp.exact-counts"]);
    let procfs = Exporter::start(&["--collector.tcp.source=procfs"]);
    let by_state = |m: &str| {
        let mut v: Vec<(String, f64)> = samples(m, "nodesleuth_tcp_sockets", &[("netns", &ns.name)]);
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (a, b, c) = (by_state(&netlink.scrape()), by_state(&exact.scrape()), by_state(&procfs.scrape()));
    // The holder makes six states; the always-exported ones are there even at zero, the others only when present.
    assert_eq!(a.len(), 6, "{a:?}");
    assert!(a.iter().any(|(_, v)| *v > 0.0));
    assert_eq!(a, c, "netlink with counters vs procfs text");
    assert_eq!(b, c, "netlink full dump vs procfs text");
    let queue = |e: &Exporter| samples(&e.scrape(), "nodesleuth_tcp_listen_queue_length", &[("netns", &ns.name)]);
    assert_eq!(queue(&netlink), queue(&procfs));
}

#[test]
fn vanishing_processes_and_namespaces_never_break_a_scrape() {
    require_root();
    let e = Exporter::start(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Churn: short-lived processes in short-lived namespaces, created and destroyed while scrapes run.
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("unshare").args(["--net", "sh", "-c", "sleep 0.05"]).status();
                let _ = Command::new("true").status();
                n += 1;
            }
            n
        })
    };
    for _ in 0..25 {
        let m = e.scrape();
        assert_eq!(
            sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "tcp")]),
            Some(1.0),
            "log:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0, "the churn thread ran");
    assert!(!e.log().contains("panic"), "{}", e.log());
}

/// The kernel accepts nodesleuth's socket filter (its audit rejects malformed bytecode) and returns exactly the
/// ESTABLISHED sockets whose remote endpoint is listed: how client connections to IPVS virtual services are found
/// without dumping every socket.
#[test]
fn kernel_filter_selects_sockets_by_remote_endpoint() {
    require_root();
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("[::1]:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let _clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(a_addr).unwrap())
        .chain((0..2).map(|_| TcpStream::connect(b_addr).unwrap()))
        .chain((0..4).map(|_| TcpStream::connect(other.local_addr().unwrap()).unwrap()))
        .collect();
    let sock = nodesleuth::sock_diag::open_local().unwrap();
    let mut buf = Vec::new();
    let mut seen: Vec<SocketAddr> = Vec::new();
    let est = nodesleuth_parse::tcp_state::TcpState::Established.mask();
    nodesleuth::sock_diag::dump_tcp_filtered(&sock, est, &[a_addr, b_addr], &mut buf, |s| {
        seen.push(SocketAddr::new(s.remote_addr, s.remote_port))
    })
    .expect("the kernel accepts the filter");
    seen.sort();
    let mut want = vec![a_addr; 3];
    want.extend(vec![b_addr; 2]);
    want.sort();
    assert_eq!(seen, want, "only client sockets whose remote is a listed endpoint");
    // Many endpoints (one filter of ~1,500 entries, as the scanner sends) are accepted too.
    let many: Vec<SocketAddr> = (0..1500u32)
        .map(|i| SocketAddr::from(([10, 96, (i / 250) as u8, (i % 250) as u8], 443)))
        .chain([a_addr])
        .collect();
    let mut n = 0;
    nodesleuth::sock_diag::dump_tcp_filtered(&sock, est, &many, &mut buf, |_| n += 1)
        .expect("a long filter is accepted");
    assert_eq!(n, 3);
}

/// With no time for the fd walk, CLOSE_WAIT sockets are still counted exactly (unattributed, `process=""`) and the
/// scrape succeeds instead of overrunning its deadline; with time, the same sockets are attributed.
#[test]
fn owner_search_budget_keeps_counts_exact_and_the_scrape_alive() {
    require_root();
    let ns = NetNs::new("budget");
    let _h = holder(ns.command("python3"), "cw-budget", 40, 0, 0, 8, 0);
    let starved = Exporter::start(&["--collector.tcp.owner-search-budget=0s"]);
    let m = starved.scrape();
    assert_eq!(sample(&m, "nodesleuth_tcp_sockets", &[("netns", &ns.name), ("state", "close_wait")]), Some(40.0));
    assert_eq!(
        sample(&m, "nodesleuth_tcp_close_wait_sockets", &[("netns", &ns.name), ("process", "")]),
        Some(40.0),
        "{m}"
    );
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "tcp")]), Some(1.0));
    assert!(starved.log().contains("time budget"), "{}", starved.log());
    let m = Exporter::start(&[]).scrape();
    assert_eq!(
        sample(&m, "nodesleuth_tcp_close_wait_sockets", &[("netns", &ns.name), ("process", "cw-budget")]),
        Some(40.0),
        "{m}"
    );
}

/// The fast path (ESTABLISHED and TIME_WAIT from the namespace's O(1) counters instead of a dump) runs only when the
/// start-up self-test can say what the counters mean on this kernel. On the CI kernel it must: otherwise every scrape
/// would silently fall back to dumping every socket, and the benchmark figures would not be what users get.
#[test]
fn kernel_counter_self_test_enables_the_fast_path_on_this_kernel() {
    require_root();
    let s = nodesleuth::sockets::probe_counter_semantics().expect("the self-test runs as root");
    assert!(s.curr_estab_includes_close_wait.is_some(), "CurrEstab's meaning undetermined: {s:?}");
    assert!(s.tw_includes_fin_wait2_minisocks.is_some(), "sockstat tw's meaning undetermined: {s:?}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap(), v.next().unwrap());
    if (major, minor) >= (6, 10) {
        // Linux 6.10 made CurrEstab count CLOSE_WAIT too (tcp_set_state accounting change).
        assert_eq!(s.curr_estab_includes_close_wait, Some(true), "kernel {release}");
    }
}

/// Without CAP_NET_ADMIN (the DaemonSet does not grant it) no private namespace with a working loopback can be made,
/// so the self-test runs in the exporter's own namespace, among other sockets. Measured against a baseline, it must
/// reach the same verdict as in an empty namespace: here in a namespace that already holds a listener, an
/// ESTABLISHED pair, a CLOSE_WAIT and a TIME_WAIT socket of its own.
#[test]
fn counter_self_test_agrees_in_a_namespace_that_is_not_empty() {
    require_root();
    let empty = nodesleuth::sockets::probe_counter_semantics().expect("self-test");
    let busy = std::thread::spawn(|| {
        use std::net::{TcpListener, TcpStream};
        // SAFETY: unshare(2) of this thread's network namespace only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "{}", std::io::Error::last_os_error());
        // A child started from this thread is in its namespace.
        util::run("ip", &["link", "set", "lo", "up"]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _established = (TcpStream::connect(addr).unwrap(), listener.accept().unwrap());
        let (client, server) = (TcpStream::connect(addr).unwrap(), listener.accept().unwrap());
        drop(client); // server side: CLOSE_WAIT
        let (client_tw, server_tw) = (TcpStream::connect(addr).unwrap(), listener.accept().unwrap());
        drop(server_tw);
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(client_tw); // server side: TIME_WAIT
        std::thread::sleep(std::time::Duration::from_millis(100));
        let verdict = nodesleuth::sockets::probe_counter_semantics_here(20);
        drop(server);
        verdict
    });
    let busy = busy.join().unwrap().expect("self-test among other sockets");
    assert_eq!(busy, empty);
}

//! The memory collector on the real kernel: MADV_FREE and MADV_DONTNEED helpers (`tests/helpers/madvise.c`, built
//! here with `cc`), Go detection on Debian's node_exporter (a real Go binary) and on non-Go binaries, a scrape
//! loop under process churn, as root and unprivileged, and processes hung in the kernel with their mmap lock held
//! (`tests/helpers/stuck.c`: a FUSE file system that never answers a read). Needs root, `cc`,
//! `prometheus-node-exporter`, `setpriv` (tests/run-all.sh installs them) and `/dev/fuse` (the kernel's fuse
//! module; no FUSE package: the helper mounts with mount(2)); a missing one fails the test.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use util::{Exporter, require_root, require_tool, sample, samples};

const MIB: f64 = 1024.0 * 1024.0;

/// Held by the tests that read every process of the machine and by the one that makes processes hang, so that
/// the hung processes never show up in another test's exporter (tests of one binary run in parallel).
static WHOLE_MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn whole_machine() -> std::sync::MutexGuard<'static, ()> {
    WHOLE_MACHINE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the helper under `name` (its process name) in `dir`.
fn build_helper(dir: &Path, name: &str) -> PathBuf {
    util::build_c_helper(dir, "madvise.c", name)
}

/// A running helper, killed on drop.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn start(bin: &Path, mode: &str) -> Helper {
        let mut child = Command::new(bin)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start helper");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut h = Helper { child, stdin, stdout };
        h.expect("TOUCHED");
        h
    }

    fn expect(&mut self, word: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), word, "helper did not say {word}");
    }

    fn release(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
        self.expect("RELEASED");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exporter(extra: &[&str]) -> Exporter {
    let mut args = util::only_collector("memory");
    args.extend(extra.iter().map(|s| s.to_string()));
    Exporter::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn host_group(m: &str, metric: &str, process: &str) -> f64 {
    sample(m, metric, &[("pod", ""), ("process", process)]).unwrap_or_else(|| panic!("no {metric} for {process}:\n{m}"))
}

#[test]
fn madv_free_memory_shows_as_lazyfree() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Helper::start(&build_helper(dir.path(), "nsmadvfree"), "free");
    let e = exporter(&["--collector.memory.process-include=nsmadvfree"]);

    let before = e.scrape();
    let rss = host_group(&before, "nodesleuth_process_resident_memory_bytes", "nsmadvfree");
    assert!(rss >= 256.0 * MIB, "touched 256 MiB, RSS {rss}");
    assert!(host_group(&before, "nodesleuth_process_lazyfree_bytes", "nsmadvfree") < 16.0 * MIB);

    helper.release();
    let after = e.scrape();
    let rss = host_group(&after, "nodesleuth_process_resident_memory_bytes", "nsmadvfree");
    let lazy = host_group(&after, "nodesleuth_process_lazyfree_bytes", "nsmadvfree");
    let kept = host_group(&after, "nodesleuth_process_resident_memory_minus_lazyfree_bytes", "nsmadvfree");
    assert!(lazy >= 200.0 * MIB, "LazyFree {lazy} after MADV_FREE of 256 MiB:\n{after}");
    assert!(rss >= 256.0 * MIB, "MADV_FREE pages stay resident until memory pressure: RSS {rss}");
    assert_eq!(kept, rss - lazy);
    assert!(kept < 32.0 * MIB, "RSS - LazyFree should be near zero, is {kept}");
    assert_eq!(host_group(&after, "nodesleuth_processes", "nsmadvfree"), 1.0);
    assert!(samples(&after, "nodesleuth_process_go_info", &[("process", "nsmadvfree")]).is_empty(), "C is not Go");
}

#[test]
fn madv_dontneed_drops_rss() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Helper::start(&build_helper(dir.path(), "nsmadvdontneed"), "dontneed");
    let e = exporter(&["--collector.memory.process-include=nsmadvdontneed"]);
    let before = host_group(&e.scrape(), "nodesleuth_process_resident_memory_bytes", "nsmadvdontneed");
    assert!(before >= 256.0 * MIB, "touched 256 MiB, RSS {before}");
    helper.release();
    let m = e.scrape();
    let after = host_group(&m, "nodesleuth_process_resident_memory_bytes", "nsmadvdontneed");
    assert!(after < 32.0 * MIB, "RSS after MADV_DONTNEED is {after}");
    assert_eq!(host_group(&m, "nodesleuth_process_lazyfree_bytes", "nsmadvdontneed"), 0.0);
}

/// A process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn go_version_of_a_live_go_binary_and_none_for_others() {
    require_root();
    let node_exporter = require_tool("prometheus-node-exporter");
    // The version the binary reports of itself: "  go version:       go1.19.8".
    let out = Command::new(&node_exporter).arg("--version").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("go version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no go version in `prometheus-node-exporter --version`:\n{text}"));
    // A copy under a name of its own, so that a node_exporter already running on the machine is another group.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("nsgoexporter");
    std::fs::copy(&node_exporter, &copy).unwrap();
    let port = util::free_port();
    let _go = Running(
        Command::new(&copy)
            .args([format!("--web.listen-address=127.0.0.1:{port}"), "--collector.disable-defaults".into()])
            .env("GODEBUG", "gctrace=0,madvdontneed=0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _not_go = Running(Command::new("sleep").arg("300").spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while util::http_get(port, "/metrics").is_err() {
        assert!(Instant::now() < deadline, "node_exporter did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = exporter(&["--collector.memory.process-include=nsgoexporter|sleep|nodesleuth"]);
    let m = e.scrape();
    let info = samples(&m, "nodesleuth_process_go_info", &[("process", "nsgoexporter")]);
    assert_eq!(info.len(), 1, "{m}");
    let want = format!("go_version=\"{version}\",module=\"github.com/prometheus/node_exporter\",madvdontneed=\"0\"");
    assert!(info[0].0.contains(&want), "{} lacks {want}", info[0].0);
    // Non-Go binaries: coreutils' sleep (C) and nodesleuth itself (Rust) are counted but have no info series.
    assert!(host_group(&m, "nodesleuth_processes", "sleep") >= 1.0);
    assert!(host_group(&m, "nodesleuth_processes", "nodesleuth") >= 1.0);
    assert!(samples(&m, "nodesleuth_process_go_info", &[("process", "sleep")]).is_empty());
    assert!(samples(&m, "nodesleuth_process_go_info", &[("process", "nodesleuth")]).is_empty());
}

/// Processes exiting mid-scan, and an unprivileged exporter that may not read other users' `environ`, `exe` and
/// `smaps_rollup`: every scrape succeeds, nothing is logged, and root's processes are still measured (from
/// `status`, which everyone may read).
#[test]
fn churn_and_unreadable_files_are_not_noise() {
    require_root();
    let _serial = whole_machine();
    let setpriv = require_tool("setpriv");
    let setpriv = setpriv.to_str().unwrap();
    let root_exporter = exporter(&[]);
    let mut args = util::only_collector("memory");
    args.push("--log.level=debug".into());
    let nobody = Exporter::start_via(
        &[setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut spawned = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && spawned < 5000 {
                let _ = Command::new("true").status();
                spawned += 1;
            }
            spawned
        })
    };
    for _ in 0..8 {
        for e in [&root_exporter, &nobody] {
            let m = e.scrape();
            assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "memory")]), Some(1.0), "{m}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
    // This test process runs as root; the unprivileged exporter still sees its RSS.
    let me = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
    let m = nobody.scrape();
    assert!(host_group(&m, "nodesleuth_process_resident_memory_bytes", &me) > 0.0, "{m}");
    for e in [&root_exporter, &nobody] {
        let log = e.log();
        assert!(!log.contains("collector failed") && !log.contains("level=warn"), "noise in the log:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// A process whose mmap-lock reads hang (`tests/helpers/stuck.c`: a FUSE server that never answers a read, and a
/// victim holding its mmap lock in that read with a writer queued). Always cleaned up: dropping the server's
/// stdin makes it abort the FUSE connection and kill and reap the victim; the server is then killed and reaped.
struct Stuck {
    server: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    victim: u32,
    _dir: tempfile::TempDir,
}

impl Stuck {
    fn start(bin: &Path) -> Stuck {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut server = Command::new(bin)
            .arg(&mnt)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stuck helper");
        let stdin = server.stdin.take();
        let stdout = BufReader::new(server.stdout.take().unwrap());
        let mut s = Stuck { server, stdin, stdout, victim: 0, _dir: dir };
        let line = s.line();
        s.victim = line
            .strip_prefix("STUCK ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("stuck helper said {line:?}, not STUCK <pid>"));
        s
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    /// Answers the pending FUSE read: the victim becomes readable.
    fn release(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "release").unwrap();
        assert_eq!(self.line().trim(), "RELEASED");
    }
}

impl Drop for Stuck {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        // The victim dies with the server (parent-death signal); this is only a safety net.
        if self.victim != 0 && Path::new(&format!("/proc/{}", self.victim)).exists() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(self.victim as i32, libc::SIGKILL) };
        }
    }
}

fn build_stuck(dir: &Path) -> PathBuf {
    util::build_c_helper(dir, "stuck.c", "nsstuck")
}

/// Reads `/proc/<pid>/smaps_rollup` on a thread; returns whether it answered within `limit`, and the thread (it
/// stays blocked while the process is stuck, and returns once it is released or killed).
fn read_returns_within(pid: u32, limit: Duration) -> (bool, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = std::fs::read(format!("/proc/{pid}/smaps_rollup"));
        let _ = tx.send(());
    });
    (rx.recv_timeout(limit).is_ok(), t)
}

/// Issue 9, item 3: a process hung in the kernel with its mmap lock held must not disable the memory collector.
/// With two such processes and a MADV_FREE process beside them, every scrape answers in time with memory
/// success 1, the rest of the node (the MADV_FREE process's LazyFree included) is reported, the two are counted
/// as quarantined and logged once each; after one is released and the other killed, the gauge returns to 0 and
/// the released process is measured again.
#[test]
fn a_hung_process_is_quarantined_and_the_node_still_reported() {
    require_root();
    let _serial = whole_machine();
    assert!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing: load the fuse module (modprobe fuse)");
    let dir = tempfile::tempdir().unwrap();
    let stuck_bin = build_stuck(dir.path());
    let mut madv = Helper::start(&build_helper(dir.path(), "nsmadvbeside"), "free");
    madv.release();
    let mut released = Stuck::start(&stuck_bin);
    let killed = Stuck::start(&stuck_bin);
    // The fixture is real: a read of the victim's smaps_rollup blocks.
    let (answered, blocked_reader) = read_returns_within(released.victim, Duration::from_secs(2));
    assert!(!answered, "smaps_rollup of the stuck victim answered: the helper does not reproduce a hang");

    let e = exporter(&["--collector.memory.read-timeout=500ms", "--log.level=debug"]);
    for round in 0..4 {
        let t0 = Instant::now();
        let m = e.scrape();
        // A bound against hanging, not a timing assertion: the collector timeout is 8 s.
        assert!(t0.elapsed() < Duration::from_secs(8), "scrape {round} took {:?}", t0.elapsed());
        assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "memory")]), Some(1.0), "{m}");
        assert_eq!(sample(&m, "nodesleuth_memory_quarantined_processes", &[]), Some(2.0), "round {round}:\n{m}");
        assert!(host_group(&m, "nodesleuth_process_lazyfree_bytes", "nsmadvbeside") >= 200.0 * MIB, "{m}");
        assert!(host_group(&m, "nodesleuth_processes", "nsstuck") >= 2.0, "the FUSE servers are readable");
        assert!(samples(&m, "nodesleuth_processes", &[("process", "nsstuck-victim")]).is_empty(), "{m}");
    }
    let log = e.log();
    for victim in [released.victim, killed.victim] {
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains("quarantined") && l.contains(&format!("pid={victim}"))).collect();
        assert_eq!(lines.len(), 1, "logged once per process:\n{log}");
        assert!(lines[0].contains("nsstuck-victim"), "{}", lines[0]);
    }

    // Release one and kill the other: the killed one is gone at once, the released one is read again after the
    // back-off (10 s) that follows the return of its stuck read.
    released.release();
    drop(killed);
    blocked_reader.join().unwrap();
    let m = e.scrape();
    assert_eq!(sample(&m, "nodesleuth_memory_quarantined_processes", &[]), Some(1.0), "{m}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let m = e.scrape();
        assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "memory")]), Some(1.0), "{m}");
        if sample(&m, "nodesleuth_memory_quarantined_processes", &[]) == Some(0.0) {
            assert_eq!(host_group(&m, "nodesleuth_processes", "nsstuck-victim"), 1.0, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the released process was never read again:\n{m}\n{}", e.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = e.log();
    assert!(log.contains("returned") && log.contains("readable again"), "{log}");
    assert!(!log.contains("collector failed") && !log.contains("panicked"), "{log}");
}

/// Threads of a process with this name (`/proc/<pid>/task/*/comm`).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|c| c.trim() == name)
        .count()
}

/// Five hung processes: four reader threads are left stuck, never a fifth. Beyond that the scrape still answers,
/// reports partial data (LazyFree cannot be read for the processes not read), and measures the rest from
/// `status`; once the hung processes are gone, the readers return and the collector is whole again.
#[test]
fn never_more_than_four_readers_stuck() {
    require_root();
    let _serial = whole_machine();
    assert!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing: load the fuse module (modprobe fuse)");
    let dir = tempfile::tempdir().unwrap();
    let stuck_bin = build_stuck(dir.path());
    let mut hung: Vec<Stuck> = (0..5).map(|_| Stuck::start(&stuck_bin)).collect();
    let e = exporter(&["--collector.memory.read-timeout=300ms"]);
    for round in 0..3 {
        let m = e.scrape();
        assert_eq!(sample(&m, "nodesleuth_memory_quarantined_processes", &[]), Some(4.0), "round {round}:\n{m}");
        assert_eq!(threads_named(e.pid(), "memory-reader"), 4, "round {round}: stuck reader threads");
        assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "memory")]), Some(0.0), "{m}");
        // The fifth is measured from status; the rest of the node is still there.
        assert_eq!(host_group(&m, "nodesleuth_processes", "nsstuck-victim"), 1.0, "{m}");
        assert!(host_group(&m, "nodesleuth_processes", "nsstuck") >= 5.0, "{m}");
    }
    assert!(e.log().contains("4 reads of hung processes are stuck"), "{}", e.log());
    hung.clear(); // kills them: the stuck reads return
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = e.scrape();
        if sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "memory")]) == Some(1.0) {
            assert_eq!(sample(&m, "nodesleuth_memory_quarantined_processes", &[]), Some(0.0), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the collector never recovered:\n{m}\n{}", e.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A reader thread exits right after its batch: none is left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads_named(e.pid(), "memory-reader") > 0 {
        assert!(Instant::now() < deadline, "reader threads left behind");
        std::thread::sleep(Duration::from_millis(20));
    }
}

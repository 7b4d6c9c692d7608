//! The output collector on the real kernel: writers whose stdout is a pseudo-terminal nobody reads (the issue's
//! shell reproduction) or a pipe nobody reads are reported stalled, with a growing duration, and stop being
//! reported once the other end is drained; healthy writers, a terminal reader and threads waiting on a lock are
//! never reported; processes and threads that come and go mid-scan cause no failure and no log noise. A fixture
//! tree, written here, checks pod attribution, the per-container stdout/stderr kinds, the log age and the CRI
//! partial-line count. Needs root (the exporter reads other processes' `syscall`) and `cc`; a missing one fails
//! the test.

mod util;

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::{Exporter, require_root, require_tool, sample, samples};

const STALLED: &str = "nodesleuth_output_stalled_seconds";
const THREADS: &str = "nodesleuth_output_stalled_threads";

/// A process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// A pseudo-terminal: the master (kept by the test, read or not) and the slave (handed to the child).
fn openpty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the pointed-to ints; the other arguments may be null.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned by nobody else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Copies `src` to `dir/name`, so that the process has a name of its own (`comm`) on this busy machine.
fn named_copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

fn build_helper(dir: &Path, name: &str) -> PathBuf {
    util::build_c_helper(dir, "output.c", name)
}

/// Reads `r` to its end on a thread of its own (the runtime draining a container's output).
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// Waits until some thread of `pid` sleeps in `wchan` (a "did not hang" bound, not a timing assertion).
fn wait_for_wchan(pid: u32, wchan: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        for t in tasks.flatten() {
            if std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w == wchan) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("process {pid} never slept in {wchan}");
}

fn exporter() -> Exporter {
    let args = util::only_collector("output");
    Exporter::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn stalled(m: &str, process: &str) -> Option<f64> {
    sample(m, STALLED, &[("pod", ""), ("process", process)])
}

/// Scrapes `n` times, 300 ms apart, and asserts that `process` is never reported.
fn never_reported(e: &Exporter, process: &str, n: usize) -> String {
    let mut last = String::new();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(300));
        last = e.scrape();
        assert!(samples(&last, STALLED, &[("process", process)]).is_empty(), "{process} reported:\n{last}");
        assert_eq!(sample(&last, "nodesleuth_scrape_collector_success", &[("collector", "output")]), Some(1.0));
    }
    last
}

/// Asserts a stall of `process` on `target` reported within two scrapes and growing, and returns its value.
fn reported_growing(e: &Exporter, process: &str, target: &str) -> f64 {
    let first = e.scrape();
    assert_eq!(stalled(&first, process), None, "a stall is observed, not guessed: absent on first sight");
    std::thread::sleep(Duration::from_millis(700));
    let second = e.scrape();
    let s2 = stalled(&second, process).unwrap_or_else(|| panic!("{process} not reported on the 2nd scrape:\n{second}"));
    assert!(s2 > 0.0, "{s2}");
    assert_eq!(sample(&second, STALLED, &[("process", process), ("target", target)]), Some(s2));
    assert!(sample(&second, "nodesleuth_output_candidate_threads", &[]).unwrap() >= 1.0);
    assert_eq!(sample(&second, "nodesleuth_output_unreadable_threads", &[]), Some(0.0), "root reads every syscall");
    std::thread::sleep(Duration::from_millis(700));
    let third = e.scrape();
    let s3 = stalled(&third, process).unwrap_or_else(|| panic!("{process} not reported on the 3rd scrape:\n{third}"));
    assert!(s3 > s2, "the duration grows: {s2} then {s3}");
    assert_eq!(sample(&third, THREADS, &[("process", process)]), Some(1.0), "{third}");
    s3
}

/// The issue's reproduction: a shell writing ever longer lines to a terminal whose master nobody reads.
#[test]
fn tty_writer_nobody_reads_is_stalled_until_drained() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sh = named_copy(&require_tool("sh"), dir.path(), "nsttywriter");
    let (master, slave) = openpty();
    let child = Command::new(&sh)
        .args(["-c", r#"s="a"; while true; do echo $s | wc -c; echo $s; s="a$s"; done"#])
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let w = Running(child);
    wait_for_wchan(w.pid(), "wait_woken");
    let e = exporter();
    reported_growing(&e, "nsttywriter", "tty");
    // The runtime reads the terminal again: the writer makes progress and is no longer reported.
    let _reader = drain(master);
    never_reported(&e, "nsttywriter", 3);
    drop(w);
}

/// A service whose 4 threads share one logger, its stdout a pipe nobody reads: one thread blocks in write (the
/// stalled one), the others wait on the logger's lock (not counted).
#[test]
fn pipe_writer_nobody_reads_is_stalled_until_drained() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let helper = build_helper(dir.path(), "nspipewriter");
    let mut child = Command::new(&helper).arg("logger").stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let w = Running(child);
    wait_for_wchan(w.pid(), "anon_pipe_write");
    let e = exporter();
    reported_growing(&e, "nspipewriter", "pipe");
    let _reader = drain(out);
    never_reported(&e, "nspipewriter", 3);
}

/// Writers whose output is read, a shell sleeping in read() on a terminal, and a thread waiting on a lock (its
/// stdout a terminal, so that its threads are looked at): never reported.
#[test]
fn healthy_writers_terminal_readers_and_lock_waiters_are_never_reported() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let helper = build_helper(dir.path(), "nshealthy");
    let locker = named_copy(&helper, dir.path(), "nslockwait");
    let sh = named_copy(&require_tool("sh"), dir.path(), "nsttyreader");

    let mut child = Command::new(&helper).arg("logger").stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let _pipe_reader = drain(child.stdout.take().unwrap());
    let _healthy_pipe = Running(child);

    let (master, slave) = openpty();
    let child = Command::new(&helper).arg("logger").stdin(Stdio::null()).stdout(slave).spawn().unwrap();
    let _tty_reader = drain(master);
    let _healthy_tty = Running(child);

    let (_master2, slave2) = openpty();
    let reader = Running(
        Command::new(&sh)
            .args(["-c", "read x"])
            .stdin(slave2.try_clone().unwrap())
            .stdout(slave2.try_clone().unwrap())
            .stderr(slave2)
            .spawn()
            .unwrap(),
    );
    let (_master3, slave3) = openpty();
    let lock = Running(
        Command::new(&locker).arg("lock").stdin(Stdio::null()).stdout(slave3).stderr(Stdio::null()).spawn().unwrap(),
    );
    wait_for_wchan(reader.pid(), "wait_woken");
    wait_for_wchan(lock.pid(), "futex_do_wait");

    let e = exporter();
    let m = never_reported(&e, "nshealthy", 4);
    // The terminal reader sleeps where a terminal writer does (wait_woken): it is a candidate, and only its
    // syscall (read, not write) keeps it out. So the check above could have failed.
    assert!(sample(&m, "nodesleuth_output_candidate_threads", &[]).unwrap() >= 1.0, "{m}");
    for p in ["nsttyreader", "nslockwait"] {
        assert!(samples(&m, STALLED, &[("process", p)]).is_empty(), "{p}:\n{m}");
    }
}

/// Processes and threads that come and go while the exporter scans: every scrape succeeds, nothing is logged.
#[test]
fn processes_and_threads_exiting_mid_scan_are_skipped_quietly() {
    require_root();
    let (master, slave) = openpty();
    let _reader = drain(master);
    // Short-lived subshells and `sleep`s with the terminal as stdout (candidates), forked as fast as possible.
    let churn = Running(
        Command::new(require_tool("sh"))
            .args(["-c", "while true; do (echo x; sleep 0.001 & wait) & echo y; wait; done"])
            .stdin(Stdio::null())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let helper = build_helper(dir.path(), "nschurn");
    let (master2, slave2) = openpty();
    let _reader2 = drain(master2);
    let threads = Running(Command::new(&helper).arg("churn").stdin(Stdio::null()).stdout(slave2).spawn().unwrap());
    let e = exporter();
    for _ in 0..15 {
        let m = e.scrape();
        assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "output")]), Some(1.0), "{m}");
    }
    drop((churn, threads));
    let log = e.log();
    let noise: Vec<&str> = log.lines().filter(|l| !l.contains("level=info")).collect();
    assert!(noise.is_empty(), "log noise:\n{log}");
}

/// A fixture tree: pod attribution of a stall, stdout/stderr kinds per container, log age and CRI partial lines.
#[test]
fn fixture_pod_attribution_log_age_and_partial_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let uid = "0b7c9f3a-6e2d-4c1b-9a8f-2d3e4f5a6b7c";
    let cid = "c".repeat(64);
    let cgroup = format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope\n",
        uid.replace('-', "_")
    );
    let write_nr = if cfg!(target_arch = "aarch64") { 64 } else { 1 };
    let proc = root.join("proc");
    for (pid, comm, out, err) in
        [(100u32, "tty-app", "/dev/pts/3", "/dev/pts/3"), (101, "sidecar", "pipe:[77]", "pipe:[78]")]
    {
        let p = proc.join(pid.to_string());
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::create_dir_all(p.join(format!("task/{pid}"))).unwrap();
        std::fs::write(
            p.join("stat"),
            format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5000 1000 10 0 0 0 0 0 0 0\n"
            ),
        )
        .unwrap();
        std::fs::write(p.join("cgroup"), &cgroup).unwrap();
        std::fs::write(p.join("io"), "rchar: 10\nwchar: 4096\nsyscr: 1\nsyscw: 5\n").unwrap();
        std::os::unix::fs::symlink(out, p.join("fd/1")).unwrap();
        std::os::unix::fs::symlink(err, p.join("fd/2")).unwrap();
        std::fs::write(p.join(format!("task/{pid}/wchan")), "wait_woken").unwrap();
        std::fs::write(p.join(format!("task/{pid}/syscall")), format!("{write_nr} 0x2 0x7f00 0x4000 0x0 0x0 0x0\n"))
            .unwrap();
    }
    let logs = root.join(format!("var/log/pods/shop_cart-7d9f8-abcde_{uid}/cart"));
    std::fs::create_dir_all(&logs).unwrap();
    let mut text = String::new();
    for i in 0..12 {
        let tag = if i % 3 == 2 { "F" } else { "P" };
        text.push_str(&format!("2026-12-01T21:00:{i:02}.000000000Z stdout {tag} {}\n", "x".repeat(200)));
    }
    std::fs::write(logs.join("0.log"), "old\n").unwrap();
    std::fs::write(logs.join("1.log"), &text).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(900);
    File::options().write(true).open(logs.join("0.log")).unwrap().set_modified(old - Duration::from_secs(60)).unwrap();
    File::options().write(true).open(logs.join("1.log")).unwrap().set_modified(old).unwrap();
    let containers = root.join("var/log/containers");
    std::fs::create_dir_all(&containers).unwrap();
    std::fs::write(containers.join(format!("cart-7d9f8-abcde_shop_cart-{cid}.log")), "").unwrap();

    let e = util::start_on_fixture(root, "output", &[]);
    let first = e.scrape();
    let pod = [("namespace", "shop"), ("pod", "cart-7d9f8-abcde"), ("container", "cart")];
    assert_eq!(sample(&first, STALLED, &pod), None);
    // The pipe-backed sidecar is not looked at: its pipe cannot be opened in a fixture (not known to be full).
    assert_eq!(sample(&first, "nodesleuth_output_candidate_threads", &[]), Some(1.0), "{first}");
    let m = e.scrape();
    let stalled = sample(&m, STALLED, &[pod[0], pod[1], pod[2], ("process", "tty-app"), ("target", "tty")]);
    assert!(stalled.is_some_and(|s| s > 0.0), "{m}");
    assert_eq!(sample(&m, THREADS, &pod), Some(1.0));
    let procs = |stream: &str, target: &str| {
        sample(
            &m,
            "nodesleuth_container_output_processes",
            &[pod[0], pod[1], pod[2], ("stream", stream), ("target", target)],
        )
    };
    assert_eq!((procs("stdout", "tty"), procs("stderr", "tty")), (Some(1.0), Some(1.0)));
    assert_eq!((procs("stdout", "pipe"), procs("stderr", "pipe")), (Some(1.0), Some(1.0)));
    assert_eq!(procs("stdout", "file"), None);
    // The newest file (1.log), about 900 s old (a "did not hang" bound above, not a clock assertion).
    let age = sample(&m, "nodesleuth_container_log_age_seconds", &pod).unwrap();
    assert!((900.0..4000.0).contains(&age), "{age}");
    assert_eq!(sample(&m, "nodesleuth_container_log_partial_lines", &pod), Some(8.0));
    util::check_with_promtool(&m);
    // A small tail holds the last records only: partials counted in it alone.
    let e = util::start_on_fixture(root, "output", &["--collector.output.log-tail-bytes=800"]);
    let m = e.scrape();
    assert_eq!(sample(&m, "nodesleuth_container_log_partial_lines", &pod), Some(2.0), "{m}");
    let e = util::start_on_fixture(root, "output", &["--collector.output.log-tail-bytes=0"]);
    let m = e.scrape();
    assert!(samples(&m, "nodesleuth_container_log_partial_lines", &[]).is_empty());
    assert!(sample(&m, "nodesleuth_container_log_age_seconds", &pod).is_some());
}

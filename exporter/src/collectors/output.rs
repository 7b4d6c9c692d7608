//! Container output stalls: a process hung in `write` to its own stdout or stderr because nobody reads the other
//! end (failure mode **ContainerOutputStalled**, issue 12).
//!
//! **What it catches.** A container with `tty: true` writes long log lines quickly; the runtime's console reader
//! stops reading the pseudo-terminal's master (a race in containerd/console), the terminal's buffer fills, the
//! service's next write to stdout blocks forever, and every thread waiting on its logger with it. The service
//! stops answering, clients give up (CLOSE_WAIT rises), the liveness probe restarts it and the evidence is gone.
//! The same hang happens without a terminal when the runtime stops draining the container's stdout pipe. The fix
//! is `tty: false` (or a fixed runtime).
//!
//! **What it reads**, cheapest first, because a node has thousands of processes and tens of thousands of threads
//! and on this 2-core machine every `/proc` file read costs 15–30 µs (measured: reading `wchan` of 20,000
//! threads takes ~300 ms, listing their task directories alone ~60 ms; the bound is 30 ms):
//! - every scrape, the `/proc` listing (pids) only;
//! - once per process lifetime (pid + start time): `stat` (name, start time, kernel-thread flag), the links
//!   `fd/1` and `fd/2` (what stdout and stderr are: `tty`, `pipe`, `file`, `socket`, `null`, `other`) and the
//!   cgroup (pod attribution, `pods.rs`). A known pid's start time is checked again every
//!   [`REVALIDATE_EVERY`] scrapes (spread over the scrapes), and always before a stall is reported, so a reused
//!   pid is re-identified; incomplete pod labels are looked up again then;
//! - per scrape, only for the processes whose stdout/stderr could be stalled: a terminal (always: the kernel
//!   shows no fill level of a pty from the slave side), a socket (always), a pipe only when it is full — checked
//!   once per distinct pipe: the pipe is opened read-only and non-blocking through `/proc/<pid>/fd/<n>` for an
//!   instant (never read) and its queued bytes (`FIONREAD`) compared with its size (`F_GETPIPE_SZ`); a blocked
//!   pipe writer means a full pipe. Regular files, `/dev/null` and other targets are never looked at;
//! - of those processes, each thread's `wchan` (empty for a running thread, so no `stat` is needed), and only for
//!   threads sleeping in one of [`WRITE_WAITS`] their `syscall` (needs ptrace access: `CAP_SYS_PTRACE`), which
//!   must be a write (`write`, `writev`, `pwrite*` per architecture) to fd 1 or 2 or to another fd pointing at
//!   the same terminal, pipe or socket. `wait_woken` is generic (a `read` of a terminal sleeps there too), hence
//!   the syscall check;
//! - for a process with such a thread, `io` (`wchar`, bytes written by calls that returned): progress.
//!
//! A thread is **stalled** when it is seen blocked like that in two scrapes in a row while its process's `wchar`
//! did not move; its duration is observed, counted from the first scrape that saw it (state keyed by pid, start
//! time and tid, evicted when the thread is no longer blocked, has exited or the process wrote). Processes and
//! threads that exit mid-scan, and files the exporter may not read, are skipped silently.
//!
//! **Per container** it also reports how many processes have each kind of stdout/stderr, and for containers with
//! a live process the age of their newest log file under `--path.pod-logs` (`<ns>_<pod>_<uid>/<container>/<n>.log`)
//! plus the CRI partial (`P`) records in its last `--collector.output.log-tail-bytes` (a line longer than 16 KiB is
//! split into `P` pieces; the tail is read again only when the file changed).
//!
//! **What it exports.** `nodesleuth_output_stalled_seconds` and `nodesleuth_output_stalled_threads` per group
//! (namespace, pod, container, process, target): top N by seconds (sticky, [`crate::topn`]) plus one
//! `process="(other)"` group; `nodesleuth_container_output_processes`, `nodesleuth_container_log_age_seconds`,
//! `nodesleuth_container_log_partial_lines`; `nodesleuth_output_candidate_threads` and
//! `nodesleuth_output_unreadable_threads`. Never a pid label.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use nodesleuth_parse::output::{self as parse, Arch, Target};
use nodesleuth_parse::smaps;

use crate::metrics::Sink;
use crate::pods::{PodInfo, PodResolver};
use crate::registry::{CollectError, Collector, ScrapeContext};

/// Flags of the output collector.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output: groups (namespace, pod, container, process, target) with a stalled writer exported, longest stall
    /// first; the rest are folded into one `process="(other)"` group. 0 exports every group.
    #[arg(long = "collector.output.top-n", default_value_t = 10)]
    pub stalled_top_n: usize,
    /// Output: bytes read from the end of each live container's newest log file to count CRI partial (`P`)
    /// records; 0 reads nothing (no `nodesleuth_container_log_partial_lines`).
    #[arg(long = "collector.output.log-tail-bytes", default_value_t = 65536)]
    pub log_tail_bytes: u64,
}

/// The `output` collector: on by default (its median scrape time is within the 30 ms bound on 2,000 processes
/// and 20,000 threads: see `tests/bench/output_bench.py` and the README).
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "output",
    enabled_by_default: true,
    help: "processes blocked writing to their stdout/stderr (full terminal or pipe), container log age",
    build: |args, shared| build(&args.output, shared),
};

pub fn build(args: &OutputArgs, shared: &super::Shared) -> Arc<dyn Collector> {
    Arc::new(OutputCollector {
        args: args.clone(),
        pods: shared.pods.clone(),
        pod_logs: None,
        state: Mutex::new(State::default()),
    })
}

/// Kernel functions a thread blocked writing to a terminal, pipe or socket sleeps in (its `wchan`), measured on
/// Linux 6.18 (x86_64) with a shell writing ever longer lines to a pty whose master nobody reads (`wait_woken`,
/// from `n_tty_write`), to a pipe nobody reads (`anon_pipe_write`) and to a unix stream socket nobody reads
/// (`sock_alloc_send_pskb`). Older kernels' names of the pipe wait are kept (`pipe_write` before 6.12,
/// `pipe_wait_writable` 5.8–5.10 builds, `pipe_wait` before 5.8), and the TCP send wait (`sk_stream_wait_memory`).
/// `wait_woken` is also where a terminal reader sleeps: the syscall check tells them apart.
pub const WRITE_WAITS: &[&[u8]] = &[
    b"wait_woken",
    b"anon_pipe_write",
    b"pipe_write",
    b"pipe_wait_writable",
    b"pipe_wait",
    b"sock_alloc_send_pskb",
    b"sk_stream_wait_memory",
];

/// Every known process's start time is checked again once in this many scrapes (1/N of them per scrape).
pub const REVALIDATE_EVERY: u64 = 32;
/// Per-process files are read up to this size.
const SMALL: u64 = 16 * 1024;

struct OutputCollector {
    args: OutputArgs,
    pods: Arc<PodResolver>,
    /// Overrides the host's pod-log directory (tests); `None`: `--path.pod-logs`.
    pod_logs: Option<PathBuf>,
    state: Mutex<State>,
}

/// What stdout or stderr of a process is.
#[derive(Debug, Clone)]
struct Stream {
    target: Target,
    /// Device and inode of what the fd points to (distinct pipes, terminals); `None` when not stat-able.
    id: Option<(u64, u64)>,
}

/// What is remembered about one process for its life.
struct Known {
    start: u64,
    name: Arc<str>,
    pod: PodInfo,
    /// stdout, stderr (`None`: no such fd).
    streams: [Option<Stream>; 2],
    seen: u64,
}

/// A thread seen blocked in a write to its output: since when, and its process's `wchar` then.
#[derive(Debug, Clone, Copy)]
struct Blocked {
    since: Instant,
    wchar: u64,
    seen: u64,
}

/// A container's newest log file as last read.
struct LogFile {
    path: PathBuf,
    /// (inode, size, mtime ns) when the tail was counted.
    sig: (u64, u64, i128),
    partial: u64,
}

#[derive(Default)]
struct State {
    procs: HashMap<u32, Known>,
    /// (pid, start time, tid) → blocked since.
    threads: HashMap<(u32, u64, u32), Blocked>,
    logs: HashMap<ContainerKey, LogFile>,
    exported: HashSet<GroupKey>,
    scrape: u64,
    buf: Vec<u8>,
}

/// (namespace, pod, container)
type ContainerKey = (Arc<str>, Arc<str>, Arc<str>);

/// (namespace, pod, container, process, target)
type GroupKey = (Arc<str>, Arc<str>, Arc<str>, Arc<str>, &'static str);

/// One group's stall: the longest stalled thread's seconds and the number of stalled threads.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stall {
    pub seconds: f64,
    pub threads: u64,
}

/// Counts met in one scrape.
#[derive(Debug, Default)]
struct Counts {
    candidates: u64,
    unreadable: u64,
}

/// A read error that means "gone or not ours to read": skipped without a report.
fn quiet(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH | libc::EACCES | libc::EPERM | libc::ENOTDIR))
}

fn read_small(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.take(SMALL).read_to_end(buf)?;
    Ok(())
}

fn pid_path(root: &Path, pid: u32, rest: &str) -> PathBuf {
    let mut p = root.join(pid.to_string());
    p.push(rest);
    p
}

/// Start time, name and kernel-thread flag from `stat`; `None` when gone or unparsable.
fn read_stat(root: &Path, pid: u32, buf: &mut Vec<u8>) -> Option<(u64, Arc<str>, bool)> {
    read_small(&pid_path(root, pid, "stat"), buf).ok()?;
    let st = smaps::parse_stat(buf)?;
    let dead = matches!(st.state, b'Z' | b'X' | b'x');
    Some((st.start_time, String::from_utf8_lossy(st.comm).into(), st.is_kernel_thread() || dead))
}

/// What `fd` of `pid` points to; `None` when there is no such fd.
fn classify_fd(root: &Path, pid: u32, fd: u32) -> Option<Stream> {
    let path = pid_path(root, pid, &format!("fd/{fd}"));
    let link = std::fs::read_link(&path).ok()?;
    // stat follows the magic link to the pipe, terminal or socket itself (a fixture's dangling link: no id).
    let meta = std::fs::metadata(&path).ok();
    let is_fifo = meta.as_ref().is_some_and(|m| m.file_type().is_fifo());
    let target = parse::classify_fd_link(link.as_os_str().as_bytes(), is_fifo);
    Some(Stream { target, id: meta.map(|m| (m.dev(), m.ino())) })
}

/// Whether the pipe behind `/proc/<pid>/fd/<fd>` is full: opened read-only and non-blocking for an instant
/// (never read from), its queued bytes compared with its size. A writer blocks in `pipe_write` only when no
/// buffer slot is free; small writes merge into the last page, so a pipe that blocks holds more than its size
/// less one page. `None` when it cannot be opened (gone, a fixture's dangling link).
fn pipe_full(root: &Path, pid: u32, fd: u32) -> Option<bool> {
    let path = pid_path(root, pid, &format!("fd/{fd}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.file_type().is_fifo() {
        return None;
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to a live c_int.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FIONREAD, &mut queued) } != 0 {
        return None;
    }
    // SAFETY: F_GETPIPE_SZ takes no argument and returns the pipe's capacity.
    let size = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if size <= 0 {
        return None;
    }
    Some(i64::from(queued) > i64::from(size) - 4096)
}

impl Collector for OutputCollector {
    fn name(&self) -> &'static str {
        "output"
    }

    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
        let root = ctx.proc.root();
        let pids = ctx.proc.pids().map_err(|e| CollectError::io(root, e))?;
        if pids.is_empty() {
            return Err(CollectError::Other(format!("no processes found under {}", root.display())));
        }
        let pod_logs = self.pod_logs.as_deref().unwrap_or(&ctx.host.pod_logs);
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (stalls, counts) = self.scan(&mut guard, root, &pids, Instant::now());
        let state = &mut *guard;
        let (top, other) = select_top(stalls, self.args.stalled_top_n, &state.exported);
        state.exported = top.iter().map(|(k, _)| k.clone()).collect();

        let other_key: GroupKey = ("".into(), "".into(), "".into(), "(other)".into(), "");
        for ((namespace, pod, container, process, target), s) in
            top.iter().map(|(k, s)| (k, s)).chain(other.as_ref().map(|o| (&other_key, o)))
        {
            let labels = [
                ("namespace", &**namespace),
                ("pod", &**pod),
                ("container", &**container),
                ("process", &**process),
                ("target", target),
            ];
            sink.gauge("nodesleuth_output_stalled_seconds", HELP_SECONDS, &labels, s.seconds);
            sink.gauge("nodesleuth_output_stalled_threads", HELP_THREADS, &labels, s.threads as f64);
        }

        // Pod containers: what their processes' stdout and stderr are.
        let mut streams: BTreeMap<(PodInfo, &'static str, &'static str), u64> = BTreeMap::new();
        let mut live: HashSet<ContainerKey> = HashSet::new();
        for k in state.procs.values().filter(|k| k.pod.is_pod() && !k.pod.container.is_empty()) {
            live.insert((k.pod.namespace.clone(), k.pod.pod.clone(), k.pod.container.clone()));
            for (stream, s) in ["stdout", "stderr"].into_iter().zip(&k.streams) {
                let target = s.as_ref().map_or("other", |s| s.target.label());
                *streams.entry((k.pod.clone(), stream, target)).or_default() += 1;
            }
        }
        for ((pod, stream, target), n) in &streams {
            let labels = [
                ("namespace", &*pod.namespace),
                ("pod", &*pod.pod),
                ("container", &*pod.container),
                ("stream", *stream),
                ("target", *target),
            ];
            sink.gauge("nodesleuth_container_output_processes", HELP_PROCESSES, &labels, *n as f64);
        }

        // Log files of the containers with a live process.
        let now = SystemTime::now();
        let logs = newest_logs(pod_logs, &live);
        state.logs.retain(|k, _| logs.contains_key(k));
        let mut sorted: Vec<_> = logs.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, (path, meta)) in sorted {
            let age = now.duration_since(meta.modified().unwrap_or(now)).map_or(0.0, |d| d.as_secs_f64());
            let labels = [("namespace", &*key.0), ("pod", &*key.1), ("container", &*key.2)];
            sink.gauge("nodesleuth_container_log_age_seconds", HELP_LOG_AGE, &labels, age);
            if self.args.log_tail_bytes == 0 {
                continue;
            }
            let sig =
                (meta.ino(), meta.size(), i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()));
            let cached = state.logs.get(&key).filter(|l| l.path == path && l.sig == sig).map(|l| l.partial);
            let partial = match cached {
                Some(p) => p,
                None => match tail_partials(&path, self.args.log_tail_bytes, &mut state.buf) {
                    Ok(p) => {
                        state.logs.insert(key.clone(), LogFile { path, sig, partial: p });
                        p
                    }
                    Err(e) => {
                        if !quiet(&e) {
                            sink.problem(format!("{}: {e}", path.display()));
                        }
                        continue;
                    }
                },
            };
            sink.gauge("nodesleuth_container_log_partial_lines", HELP_PARTIAL, &labels, partial as f64);
        }
        drop(guard);

        sink.gauge("nodesleuth_output_candidate_threads", HELP_CANDIDATES, &[], counts.candidates as f64);
        sink.gauge("nodesleuth_output_unreadable_threads", HELP_UNREADABLE, &[], counts.unreadable as f64);
        Ok(())
    }
}

impl OutputCollector {
    /// One scan at `now` (injectable for tests): updates the remembered processes and blocked threads and returns
    /// the stall of every group with a stalled thread.
    fn scan(&self, state: &mut State, root: &Path, pids: &[u32], now: Instant) -> (HashMap<GroupKey, Stall>, Counts) {
        state.scrape += 1;
        let scrape = state.scrape;
        let mut buf = std::mem::take(&mut state.buf);
        let proc = crate::procfs::ProcFs::new(root);

        // 1. Identify new processes; re-check the start time of 1/REVALIDATE_EVERY of the known ones.
        for &pid in pids {
            let revalidate = (u64::from(pid) + scrape).is_multiple_of(REVALIDATE_EVERY);
            match state.procs.get_mut(&pid) {
                Some(k) if !revalidate => k.seen = scrape,
                known => {
                    let prev_start = known.map(|k| k.start);
                    let Some((start, name, skip)) = read_stat(root, pid, &mut buf) else {
                        state.procs.remove(&pid);
                        continue;
                    };
                    if prev_start == Some(start) {
                        let k = state.procs.get_mut(&pid).expect("known");
                        k.seen = scrape;
                        // Pod labels found incomplete (kubelet's log entries not there yet) are looked up again.
                        if k.pod.is_pod() && (k.pod.namespace.is_empty() || k.pod.container.is_empty()) {
                            k.pod = self.pods.resolve(&proc, pid);
                        }
                        continue;
                    }
                    let k = if skip {
                        Known { start, name, pod: PodInfo::default(), streams: [None, None], seen: scrape }
                    } else {
                        let streams = [classify_fd(root, pid, 1), classify_fd(root, pid, 2)];
                        let pod = if streams.iter().any(Option::is_some) {
                            self.pods.resolve(&proc, pid)
                        } else {
                            PodInfo::default()
                        };
                        Known { start, name, pod, streams, seen: scrape }
                    };
                    state.procs.insert(pid, k);
                }
            }
        }
        state.procs.retain(|_, k| k.seen == scrape);

        // 2. Which processes could be stalled: terminals and sockets always, pipes when full (once per pipe).
        let mut pipes: HashMap<(u64, u64), Option<bool>> = HashMap::new();
        let mut candidates: Vec<u32> = Vec::new();
        let mut sorted: Vec<u32> = state.procs.keys().copied().collect();
        sorted.sort_unstable();
        for pid in sorted {
            let k = &state.procs[&pid];
            let mut look = false;
            for (fd, s) in [1u32, 2].into_iter().zip(&k.streams) {
                let Some(s) = s else { continue };
                look |= match s.target {
                    Target::Tty | Target::Socket => true,
                    Target::Pipe => match s.id {
                        Some(id) => *pipes.entry(id).or_insert_with(|| pipe_full(root, pid, fd)) == Some(true),
                        None => false,
                    },
                    Target::File | Target::Null | Target::Other => false,
                };
            }
            if look {
                candidates.push(pid);
            }
        }

        // 3. Threads of those processes: wchan, then syscall for the ones sleeping in a write wait.
        let arch = Arch::native();
        let mut counts = Counts::default();
        let mut stalls: HashMap<GroupKey, Stall> = HashMap::new();
        for pid in candidates {
            let Ok(dir) = std::fs::read_dir(pid_path(root, pid, "task")) else { continue };
            let mut blocked: Vec<(u32, Target)> = Vec::new();
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
                let task = entry.path();
                if read_small(&task.join("wchan"), &mut buf).is_err() {
                    continue; // exited
                }
                let wchan = buf.strip_suffix(b"\n").unwrap_or(&buf);
                if !WRITE_WAITS.contains(&wchan) {
                    continue;
                }
                counts.candidates += 1;
                match read_small(&task.join("syscall"), &mut buf) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                        counts.unreadable += 1;
                        continue;
                    }
                    Err(_) => continue,
                }
                let Some((nr, fd)) = parse::syscall_nr_arg0(&buf) else { continue };
                if !arch.is_some_and(|a| a.is_write(nr)) {
                    continue;
                }
                let k = &state.procs[&pid];
                let target = match fd {
                    1 | 2 => k.streams[fd as usize - 1].as_ref().map(|s| s.target),
                    _ => classify_fd(root, pid, fd as u32).and_then(|s| {
                        // Another fd on the same terminal, pipe or socket as stdout/stderr (a dup, /dev/stdout).
                        let same = k.streams.iter().flatten().any(|o| o.id.is_some() && o.id == s.id);
                        same.then_some(s.target)
                    }),
                };
                if let Some(target) = target {
                    blocked.push((tid, target));
                }
            }
            if blocked.is_empty() {
                continue;
            }
            // Progress, and the process is still the one identified (pid reuse).
            let Some((start, _, _)) = read_stat(root, pid, &mut buf) else { continue };
            if start != state.procs[&pid].start {
                state.procs.remove(&pid); // identified again next scrape
                continue;
            }
            if read_small(&pid_path(root, pid, "io"), &mut buf).is_err() {
                continue;
            }
            let Some(wchar) = parse::io_wchar(&buf) else { continue };
            let k = &state.procs[&pid];
            for (tid, target) in blocked {
                let fresh = Blocked { since: now, wchar, seen: scrape };
                let b = match state.threads.entry((pid, start, tid)) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(fresh); // first sight: observed from now on
                        continue;
                    }
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                };
                if b.wchar != wchar || b.seen + 1 != scrape {
                    // The process wrote since (progress), or the thread was not blocked in the previous scrape.
                    *b = fresh;
                    continue;
                }
                b.seen = scrape;
                let seconds = now.saturating_duration_since(b.since).as_secs_f64();
                let key = (
                    k.pod.namespace.clone(),
                    k.pod.pod.clone(),
                    k.pod.container.clone(),
                    k.name.clone(),
                    target.label(),
                );
                let g = stalls.entry(key).or_default();
                g.seconds = g.seconds.max(seconds);
                g.threads += 1;
            }
        }
        // Threads no longer blocked, exited, or in processes no longer candidates.
        state.threads.retain(|_, b| b.seen == scrape);
        state.buf = buf;
        (stalls, counts)
    }
}

/// The top N groups by seconds (sticky at the cut) and the rest folded into one: the max of their seconds, the sum
/// of their threads.
fn select_top(
    stalls: HashMap<GroupKey, Stall>,
    top_n: usize,
    prev: &HashSet<GroupKey>,
) -> (Vec<(GroupKey, Stall)>, Option<Stall>) {
    let (top, rest) =
        crate::topn::top_n_sticky(stalls.into_iter().collect(), top_n, prev, |s| (s.seconds * 1000.0) as u64);
    if rest.is_empty() {
        return (top, None);
    }
    let mut other = Stall::default();
    for (_, s) in &rest {
        other.seconds = other.seconds.max(s.seconds);
        other.threads += s.threads;
    }
    (top, Some(other))
}

/// The newest `<n>.log` of each live container under the pod-log directory: (namespace, pod, container) → path and
/// metadata. A pod recreated under the same name has two directories; the newest file wins.
fn newest_logs(pod_logs: &Path, live: &HashSet<ContainerKey>) -> HashMap<ContainerKey, (PathBuf, std::fs::Metadata)> {
    let mut out: HashMap<_, (PathBuf, std::fs::Metadata)> = HashMap::new();
    if live.is_empty() {
        return out;
    }
    let pods: HashSet<(&str, &str)> = live.iter().map(|(ns, pod, _)| (&**ns, &**pod)).collect();
    let Ok(dir) = std::fs::read_dir(pod_logs) else { return out };
    for pod_dir in dir.flatten() {
        let name = pod_dir.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((ns, pod, _uid)) = nodesleuth_parse::cgroup::pod_log_dir(name) else { continue };
        if !pods.contains(&(ns, pod)) {
            continue;
        }
        let Ok(containers) = std::fs::read_dir(pod_dir.path()) else { continue };
        for c in containers.flatten() {
            let cname = c.file_name();
            let Some(cname) = cname.to_str() else { continue };
            let key: ContainerKey = (ns.into(), pod.into(), cname.into());
            if !live.contains(&key) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(c.path()) else { continue };
            for f in files.flatten() {
                let fname = f.file_name();
                let is_log = fname
                    .as_bytes()
                    .strip_suffix(b".log")
                    .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
                if !is_log {
                    continue;
                }
                let Ok(meta) = f.metadata() else { continue };
                let newer = match out.get(&key) {
                    Some((_, m)) => meta.modified().ok() > m.modified().ok(),
                    None => true,
                };
                if newer {
                    out.insert(key.clone(), (f.path(), meta));
                }
            }
        }
    }
    out
}

/// CRI partial records in the last `limit` bytes of a log file (one bounded read through `buf`).
fn tail_partials(path: &Path, limit: u64, buf: &mut Vec<u8>) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let from = len.saturating_sub(limit);
    file.seek(SeekFrom::Start(from))?;
    buf.clear();
    file.take(limit).read_to_end(buf)?;
    // `buf` keeps up to `limit` bytes between scrapes: one buffer, bounded by the flag.
    Ok(parse::cri_tail(buf, from == 0).partial)
}

const HELP_SECONDS: &str = "Seconds the group's longest-stalled thread has been blocked in a write to its stdout or stderr while the process wrote nothing (wchar unchanged), observed across scrapes; target: what the fd is.";
const HELP_THREADS: &str =
    "Threads of the group blocked in a write to stdout or stderr without progress since the previous scrape.";
const HELP_PROCESSES: &str =
    "Processes of a pod container whose stdout or stderr (stream) is a tty, pipe, file, socket, null or other.";
const HELP_LOG_AGE: &str = "Seconds since the container's newest log file under the pod-log directory was modified.";
const HELP_PARTIAL: &str =
    "CRI partial (P) records in the tail of the container's newest log file: pieces of lines longer than 16 KiB.";
const HELP_CANDIDATES: &str =
    "Threads whose syscall was read this scrape (sleeping in a terminal, pipe or socket write wait).";
const HELP_UNREADABLE: &str =
    "Candidate threads whose syscall could not be read (no ptrace access): stalls there cannot be seen.";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fixture tree: one pod process (pid 10) with stdout on a pty and a thread blocked writing to it, one host
    /// process (pid 20) whose thread sleeps in a terminal read.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        let mk = |pid: u32, comm: &str, tids: &[(u32, &str, &str)], wchar: u64, cgroup: &str| {
            let p = proc.join(pid.to_string());
            std::fs::create_dir_all(p.join("fd")).unwrap();
            let stat = format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {} 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
                1000 + pid
            );
            std::fs::write(p.join("stat"), stat).unwrap();
            std::os::unix::fs::symlink("/dev/pts/0", p.join("fd/1")).unwrap();
            std::os::unix::fs::symlink("/dev/null", p.join("fd/2")).unwrap();
            std::fs::write(p.join("io"), format!("rchar: 0\nwchar: {wchar}\n")).unwrap();
            std::fs::write(p.join("cgroup"), cgroup).unwrap();
            for (tid, wchan, syscall) in tids {
                let t = p.join(format!("task/{tid}"));
                std::fs::create_dir_all(&t).unwrap();
                std::fs::write(t.join("wchan"), wchan).unwrap();
                std::fs::write(t.join("syscall"), syscall).unwrap();
            }
        };
        let w = if cfg!(target_arch = "aarch64") { "64 0x1 0x0 0x10" } else { "1 0x1 0x0 0x10" };
        let r = if cfg!(target_arch = "aarch64") { "63 0x0 0x0 0x1" } else { "0 0x0 0x0 0x1" };
        mk(10, "writer", &[(10, "wait_woken", w), (11, "futex_do_wait", "202 0x0")], 500, "0::/\n");
        mk(20, "reader", &[(20, "wait_woken", r)], 0, "0::/\n");
        dir
    }

    fn collector(dir: &Path) -> OutputCollector {
        OutputCollector {
            args: OutputArgs { stalled_top_n: 10, log_tail_bytes: 65536 },
            pods: Arc::new(PodResolver::new(dir.join("pods"), dir.join("containers"))),
            pod_logs: Some(dir.join("pods")),
            state: Mutex::new(State::default()),
        }
    }

    #[test]
    fn a_stall_is_observed_from_the_second_scan_and_ends_with_progress() {
        let dir = tree();
        let root = dir.path().join("proc");
        let c = collector(dir.path());
        let mut st = State::default();
        let t0 = Instant::now();
        let (s, counts) = c.scan(&mut st, &root, &[10, 20], t0);
        assert!(s.is_empty(), "not on first sight: {s:?}");
        assert_eq!((counts.candidates, counts.unreadable), (2, 0), "the writer and the reader are candidates");
        let (s, _) = c.scan(&mut st, &root, &[10, 20], t0 + Duration::from_secs(15));
        let key: GroupKey = ("".into(), "".into(), "".into(), "writer".into(), "tty");
        assert_eq!(s.get(&key), Some(&Stall { seconds: 15.0, threads: 1 }), "{s:?}");
        assert_eq!(s.len(), 1, "the terminal reader is never reported");
        let (s, _) = c.scan(&mut st, &root, &[10, 20], t0 + Duration::from_secs(45));
        assert_eq!(s[&key].seconds, 45.0);
        // The process wrote (wchar moved): not stalled, observed again from now.
        std::fs::write(root.join("10/io"), "wchar: 900\n").unwrap();
        let (s, _) = c.scan(&mut st, &root, &[10, 20], t0 + Duration::from_secs(60));
        assert!(s.is_empty());
        let (s, _) = c.scan(&mut st, &root, &[10, 20], t0 + Duration::from_secs(75));
        assert_eq!(s[&key].seconds, 15.0);
        // The thread leaves the wait: forgotten.
        std::fs::write(root.join("10/task/10/wchan"), "do_select").unwrap();
        let (s, _) = c.scan(&mut st, &root, &[10, 20], t0 + Duration::from_secs(90));
        assert!(s.is_empty() && st.threads.is_empty());
    }

    #[test]
    fn exited_processes_and_threads_are_skipped_and_forgotten() {
        let dir = tree();
        let root = dir.path().join("proc");
        let c = collector(dir.path());
        let mut st = State::default();
        let t0 = Instant::now();
        // pid 30 is listed but gone before it is read.
        c.scan(&mut st, &root, &[10, 20, 30], t0);
        assert_eq!(st.procs.len(), 2);
        assert_eq!(st.threads.len(), 1);
        // The thread exits between the listing of its task directory and the read of its files.
        std::fs::remove_dir_all(root.join("10/task/10")).unwrap();
        let (s, _) = c.scan(&mut st, &root, &[10, 20], t0 + Duration::from_secs(15));
        assert!(s.is_empty() && st.threads.is_empty());
        // The process exits.
        std::fs::remove_dir_all(root.join("10")).unwrap();
        c.scan(&mut st, &root, &[10, 20], t0 + Duration::from_secs(30));
        c.scan(&mut st, &root, &[20], t0 + Duration::from_secs(45));
        assert!(!st.procs.contains_key(&10));
    }

    #[test]
    fn a_reused_pid_is_identified_again_before_a_stall_is_reported() {
        let dir = tree();
        let root = dir.path().join("proc");
        let c = collector(dir.path());
        let mut st = State::default();
        let t0 = Instant::now();
        c.scan(&mut st, &root, &[10], t0);
        // Another process under pid 10 (another start time), blocked the same way.
        let stat = std::fs::read_to_string(root.join("10/stat")).unwrap().replace(" 1010 1000 ", " 5555 1000 ");
        std::fs::write(root.join("10/stat"), stat).unwrap();
        let (s, _) = c.scan(&mut st, &root, &[10], t0 + Duration::from_secs(15));
        assert!(s.is_empty(), "a new process is not stalled since the old one's first sight: {s:?}");
        c.scan(&mut st, &root, &[10], t0 + Duration::from_secs(30));
        let (s, _) = c.scan(&mut st, &root, &[10], t0 + Duration::from_secs(45));
        assert_eq!(s.values().next().map(|s| s.seconds), Some(15.0));
    }

    #[test]
    fn a_full_pipe_is_seen_through_proc_and_never_read() {
        use std::io::Write as _;
        let (mut r, mut w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills the two ints with new fds, owned by the Files below.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
            use std::os::fd::FromRawFd as _;
            unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
        };
        let root = Path::new("/proc");
        let me = std::process::id();
        let wfd = w.as_raw_fd() as u32;
        assert_eq!(pipe_full(root, me, wfd), Some(false), "empty");
        let chunk = [b'x'; 1000];
        let mut written = 0;
        while let Ok(n) = w.write(&chunk) {
            written += n;
        }
        assert_eq!(pipe_full(root, me, wfd), Some(true), "a writer would block now ({written} bytes queued)");
        // Looking did not take anything out of the pipe.
        let mut got = 0;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        assert_eq!(got, written);
        assert_eq!(pipe_full(root, me, wfd), Some(false));
        assert_eq!(pipe_full(root, u32::MAX, wfd), None, "gone");
    }

    #[test]
    fn the_rest_is_one_group_with_the_max() {
        let g = |p: &str, secs: f64| -> (GroupKey, Stall) {
            (("".into(), "".into(), "".into(), p.into(), "pipe"), Stall { seconds: secs, threads: 2 })
        };
        let all: HashMap<_, _> = [g("a", 10.0), g("b", 300.0), g("c", 20.0)].into_iter().collect();
        let (top, other) = select_top(all, 1, &HashSet::new());
        assert_eq!(top[0].0.3.as_ref(), "b");
        assert_eq!(other, Some(Stall { seconds: 20.0, threads: 4 }));
    }

    #[test]
    fn log_tail_counts_partials_and_cuts_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let rec = |tag: &str| format!("2026-12-01T21:00:00.000000001Z stdout {tag} {}\n", "a".repeat(100));
        let text: String = (0..10).map(|i| rec(if i % 2 == 0 { "P" } else { "F" })).collect();
        std::fs::write(&p, &text).unwrap();
        let mut buf = Vec::new();
        assert_eq!(tail_partials(&p, 1 << 20, &mut buf).unwrap(), 5);
        // The last 3 records and a cut piece of the one before: the cut one is not counted.
        let one = rec("P").len() as u64;
        assert_eq!(tail_partials(&p, 3 * one + 10, &mut buf).unwrap(), 1);
    }
}

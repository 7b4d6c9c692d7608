//! Process memory per container: resident memory against what the kernel would keep under pressure, MADV_FREE
//! retention (`LazyFree`), and which Go runtime each process runs.
//!
//! **What it catches.** A service whose RSS climbs far above its heap: a Go 1.12–1.15 runtime (or any runtime
//! with `madvdontneed=0`) returns freed memory with `madvise(MADV_FREE)`, the kernel reclaims those pages only
//! under memory pressure, and RSS stays high, so the pod looks like it leaks (1.5 GB heap, 35 GB RSS) and gets
//! OOM-killed or restarted on memory it does not use. The kernel shows that memory as `LazyFree` in
//! `smaps_rollup`; process-exporter and cAdvisor do not export it. `nodesleuth_process_go_info` says which Go
//! version and `madvdontneed` setting each group runs, so rules can join RSS − LazyFree against
//! `go_memstats_heap_inuse_bytes` and name the fix (`GODEBUG=madvdontneed=1`, or Go ≥ 1.16).
//!
//! **What it reads.** Per process, from the shared per-scrape process table: `/proc/<pid>/stat` (name, state,
//! kernel-thread flag, start time), `smaps_rollup` (Rss, Pss, Anonymous, LazyFree, AnonHugePages, Swap; one
//! kernel walk of the address space, Linux ≥ 4.14) and, with `--collector.memory.detailed` or where
//! `smaps_rollup` is unreadable, `status` (RssFile, RssShmem, VmHWM, and the fallback for RSS/anonymous/swap).
//! Once per process (pid + start time): the cgroup (pod attribution, see `pods.rs`), and for Go detection
//! `/proc/<pid>/exe` (the `.go.buildinfo` section, cached per executable inode) and, for Go binaries only,
//! `GODEBUG` from `/proc/<pid>/environ`. With `--collector.memory.heap-mapping`, also the `[heap]` mapping of
//! non-Go processes from the full `smaps` (one kernel walk of every mapping per process: costly, off by default).
//! A process that has not run since its last full read (CPU ticks from `stat`; exact runtime from `schedstat`
//! when single-threaded) and whose resident and virtual sizes are unchanged keeps its figures for up to
//! `--collector.memory.idle-reuse` (60 s) instead of having its address space walked again: on a node most
//! processes are idle between scrapes, and that walk is two thirds of the cost. Kernel threads and zombies are
//! skipped; processes that exit mid-scan and files the exporter may not read (`environ`, `exe`, `smaps_rollup` of
//! other users without CAP_SYS_PTRACE) are skipped or fall back silently; malformed content is reported as
//! partial data.
//!
//! **Stuck processes.** `smaps_rollup`, `smaps` and `environ` take the target's mmap lock, and a process hung in
//! the kernel holding it (a fault on a dead NFS or FUSE mount) blocks them, possibly forever. Those reads, and Go
//! detection (the executable may sit on a dead network file system), run on a reader thread watched against
//! `--collector.memory.read-timeout` (see `memory/reader.rs`): a process whose
//! read overruns is quarantined (its pid and start time; logged once with its name) and skipped, the stuck
//! thread is left behind, and the scrape goes on with the other processes. A quarantined process is counted in
//! `nodesleuth_memory_quarantined_processes`, not in any group, and is not a collector failure. Once its stuck
//! read has returned, it is read again after a back-off (10 s, doubling each time it hangs again, up to 10 min).
//! At most 4 reader threads are ever left stuck: beyond that, nothing is read that could block, processes keep
//! their last figures (or are measured from `status`, without LazyFree), and the scrape reports partial data.
//!
//! **What it exports.** Sums per group (pods: namespace, pod, container, process name; host processes: process
//! name), the top N groups by RSS plus one `process="(other)"` group holding the rest, so node-wide sums stay
//! exact and series stay bounded: `nodesleuth_processes`, `_resident_memory_bytes`, `_lazyfree_bytes`,
//! `_resident_memory_minus_lazyfree_bytes`, `_swap_bytes` and `nodesleuth_process_go_info` (one series per
//! distinct Go version, module and `madvdontneed` setting in the group, always 1); with
//! `--collector.memory.detailed` also `_anonymous_memory_bytes`, `_proportional_memory_bytes`,
//! `_resident_file_memory_bytes`, `_resident_shmem_memory_bytes`, `_anonymous_hugepages_bytes` and
//! `_peak_resident_memory_bytes`; with `--collector.memory.heap-mapping`, `_heap_mapping_resident_bytes`. The
//! top-N cut has hysteresis: a group exported in the previous scrape keeps its place unless a group outside
//! has more than 1.25 times its RSS (it leaves once its RSS is below 80% of a contender's), so groups near the
//! cut do not flip in and out every scrape. Never a pid label.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodesleuth_parse::gobuildinfo::{self, GoBuild, MadvDontNeed};
use nodesleuth_parse::smaps::{self, Malformed, Rollup, StatusMemory};
use regex::Regex;

use crate::metrics::Sink;
use crate::pods::{PodInfo, PodResolver};
use crate::procfs::ProcFs;
use crate::registry::{CollectError, Collector, ScrapeContext};

mod reader;
use reader::BoundedReader;

/// Flags of the memory collector.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Memory: groups (namespace, pod, container, process) exported, largest RSS first; the rest are summed into
    /// one `process="(other)"` group. 0 exports every group (unbounded). A group already exported keeps its place
    /// until a group outside has more than 1.25 times its RSS.
    #[arg(long = "collector.memory.top-n", default_value_t = 100)]
    pub top_n: usize,
    /// Memory: only processes whose name (`comm`, at most 15 characters) fully matches this regex are read.
    #[arg(long = "collector.memory.process-include", value_parser = name_regex)]
    pub process_include: Option<Regex>,
    /// Memory: processes whose name fully matches this regex are not read (applied after the include).
    #[arg(long = "collector.memory.process-exclude", value_parser = name_regex)]
    pub process_exclude: Option<Regex>,
    /// Memory: also export anonymous, proportional (PSS), resident file, resident shmem, anonymous huge page and
    /// peak resident memory per group (6 more series per group; also reads `/proc/<pid>/status`).
    #[arg(long = "collector.memory.detailed")]
    pub detailed: bool,
    /// Memory: also export the resident size of the `[heap]` (brk) mapping of non-Go processes, read from the
    /// full `/proc/<pid>/smaps` (costly: one walk of every mapping per process and scrape).
    #[arg(long = "collector.memory.heap-mapping")]
    pub heap_mapping: bool,
    /// Memory: a process that has not run and whose resident and virtual size are unchanged since its last full
    /// read (per `/proc/<pid>/stat`) keeps its figures for up to this long instead of walking its address space
    /// again; 0s reads every process in full every scrape.
    #[arg(long = "collector.memory.idle-reuse", default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub idle_reuse: Duration,
    /// Memory: a process whose `smaps_rollup`, `environ` or `smaps` read has not returned after this long (hung
    /// in the kernel, e.g. on a dead NFS or FUSE mount) is quarantined: skipped and counted in
    /// `nodesleuth_memory_quarantined_processes` until the read returns.
    #[arg(long = "collector.memory.read-timeout", default_value = "2s", value_parser = read_timeout)]
    pub read_timeout: Duration,
}

/// Anchors a process-name regex (`java` matches `java`, not `javac`), as node_exporter anchors its
/// include/exclude flags.
fn name_regex(s: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{s})$")).map_err(|e| format!("invalid process name regex {s:?}: {e}"))
}

/// The `memory` collector: on by default.
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "memory",
    enabled_by_default: true,
    help: "process memory per container: RSS, LazyFree (MADV_FREE), swap, Go runtime",
    build: |args, shared| build(&args.memory, shared),
};

/// A per-process read deadline: more than zero (every read would overrun) and at most a minute (a scrape never
/// waits that long).
fn read_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::cli::parse_duration(s)?;
    if d.is_zero() || d > Duration::from_secs(60) {
        return Err(format!("read timeout {s:?} must be above 0s and at most 60s"));
    }
    Ok(d)
}

pub fn build(args: &MemoryArgs, shared: &super::Shared) -> Arc<dyn Collector> {
    Arc::new(MemoryCollector {
        args: args.clone(),
        pods: shared.pods.clone(),
        reader: BoundedReader::new(args.read_timeout, MAX_STUCK_READERS),
        exes: Arc::default(),
        state: Mutex::new(State::default()),
    })
}

struct MemoryCollector {
    args: MemoryArgs,
    pods: Arc<PodResolver>,
    /// Runs the reads that may hang (they take the process's mmap lock, or open its executable), under a deadline.
    reader: BoundedReader<Job>,
    /// Build info per executable: a node runs many processes of few binaries. Filled by the reader threads.
    exes: Arc<Mutex<HashMap<ExeKey, Option<Arc<GoBuild>>>>>,
    state: Mutex<State>,
}

/// Reader threads that may be left stuck in a hung read at any time; with that many, nothing that could block
/// is read until one returns.
const MAX_STUCK_READERS: usize = 4;
/// A quarantined process is read again this long after its stuck read returned; doubled each time it hangs
/// again, up to `QUARANTINE_MAX_BACKOFF`.
const QUARANTINE_BACKOFF: Duration = Duration::from_secs(10);
const QUARANTINE_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Go runtime of one process.
#[derive(Debug, Clone)]
enum Go {
    /// Not a Go executable, or the executable could not be read (permission, kernel thread, exited).
    No,
    Yes {
        build: Arc<GoBuild>,
        madvdontneed: &'static str,
    },
}

/// What is remembered about one process for its whole life (pid + start time).
struct Known {
    start: u64,
    included: bool,
    name: Arc<str>,
    pod: PodInfo,
    /// When the pod labels were last resolved; incomplete ones (no kubelet log entry yet) are retried.
    resolved: Instant,
    go: Go,
    /// Go detection (the executable, and `environ` for Go) not done yet: it is done with the reads that may hang.
    go_pending: bool,
    exe: Option<ExeKey>,
    seen: u64,
    /// The last full read: when, the stat signature then (CPU ticks, virtual size, resident pages), the figures.
    last_full: Option<(Instant, (u64, u64, u64), Sums)>,
}

/// Identity of an executable file: device, inode, size and modification time.
type ExeKey = (u64, u64, u64, i64);

/// A process whose reads hung.
struct Quarantine {
    start: u64,
    /// When the stuck read returned (the process may be read again `backoff` later).
    returned: Option<Instant>,
    backoff: Duration,
    /// Being read again this scrape.
    probing: bool,
}

#[derive(Default)]
struct State {
    procs: HashMap<u32, Known>,
    quarantine: HashMap<u32, Quarantine>,
    /// Groups exported in the previous scrape (the top-N hysteresis).
    exported: HashSet<GroupKey>,
    scrape: u64,
    buf: Vec<u8>,
    path: PathBuf2,
    smaps_rollup_missing_logged: bool,
    readers_exhausted_logged: bool,
}

/// Retry pod labels that were incomplete (pod log directory or container log link not there yet) this often.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// Per-process files are read up to this size (smaps_rollup and status are about 1–2 KiB).
const SMALL_FILE_LIMIT: u64 = 64 * 1024;
/// `environ` is read up to this size (the kernel allows far more; GODEBUG sits among the first entries in
/// practice, and a bounded read keeps memory bounded).
const ENVIRON_LIMIT: u64 = 256 * 1024;

/// `<procfs>/<pid>/<file>` built in a reused buffer, so that no path is allocated per file read.
#[derive(Default)]
struct PathBuf2 {
    bytes: Vec<u8>,
}

impl PathBuf2 {
    fn get(&mut self, root: &Path, pid: u32, file: &str) -> &Path {
        use std::io::Write;
        self.bytes.clear();
        self.bytes.extend_from_slice(root.as_os_str().as_bytes());
        let _ = write!(self.bytes, "/{pid}/{file}");
        Path::new(OsStr::from_bytes(&self.bytes))
    }
}

/// Sums of one group.
#[derive(Debug, Default, Clone)]
struct Sums {
    count: u64,
    rss: u64,
    lazyfree: u64,
    rss_minus_lazyfree: u64,
    anonymous: u64,
    swap: u64,
    pss: u64,
    rss_file: u64,
    rss_shmem: u64,
    anon_huge: u64,
    peak_rss: u64,
    heap: u64,
    /// (go_version, module, madvdontneed) label values of the group's Go processes, each once.
    go: Vec<(Arc<GoBuild>, &'static str)>,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.count += o.count;
        self.rss += o.rss;
        self.lazyfree += o.lazyfree;
        self.rss_minus_lazyfree += o.rss_minus_lazyfree;
        self.anonymous += o.anonymous;
        self.swap += o.swap;
        self.pss += o.pss;
        self.rss_file += o.rss_file;
        self.rss_shmem += o.rss_shmem;
        self.anon_huge += o.anon_huge;
        self.peak_rss += o.peak_rss;
        self.heap += o.heap;
    }
}

type GroupKey = (Arc<str>, Arc<str>, Arc<str>, Arc<str>);

fn group_key(k: &Known) -> GroupKey {
    (k.pod.namespace.clone(), k.pod.pod.clone(), k.pod.container.clone(), k.name.clone())
}

/// Problems met in one scrape, reported as one message per kind.
#[derive(Default)]
struct Problems {
    malformed: u32,
    first_malformed: Option<String>,
    io: u32,
    first_io: Option<String>,
    unread: u32,
}

impl Problems {
    fn malformed(&mut self, path: &Path, what: impl std::fmt::Display) {
        self.malformed += 1;
        if self.first_malformed.is_none() {
            self.first_malformed = Some(format!("{}: {what}", path.display()));
        }
    }
    fn io(&mut self, path: &Path, e: &io::Error) {
        self.io += 1;
        if self.first_io.is_none() {
            self.first_io = Some(format!("{}: {e}", path.display()));
        }
    }
    fn report(self, sink: &mut Sink) {
        if let Some(first) = self.first_malformed {
            sink.problem(format!(
                "{} file(s) with malformed content, partial data used; first: {first}",
                self.malformed
            ));
        }
        if let Some(first) = self.first_io {
            sink.problem(format!("{} unexpected read error(s); first: {first}", self.io));
        }
        if self.unread > 0 {
            sink.problem(format!(
                "{MAX_STUCK_READERS} reads of hung processes are stuck: {} process(es) not read this scrape (last figures, or status without LazyFree)",
                self.unread
            ));
        }
    }
}

/// A read error that means "this process is gone or not ours to read": skipped without a report.
fn quiet(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH | libc::EACCES | libc::EPERM))
}

fn read_small(path: &Path, buf: &mut Vec<u8>, limit: u64) -> io::Result<()> {
    buf.clear();
    File::open(path)?.take(limit).read_to_end(buf)?;
    Ok(())
}

/// The reads of one process that take its mmap lock, done on a reader thread.
#[derive(Debug, Clone, Copy)]
struct Job {
    pid: u32,
    start: u64,
    /// Walk the address space (`smaps_rollup`, and `smaps` with `heap`); otherwise the last figures are reused.
    full: bool,
    heap: bool,
    /// Detect Go: the executable's build info (cached per executable file), and GODEBUG from `environ`.
    go: bool,
    signature: (u64, u64, u64),
    single_threaded: bool,
}

/// What a job read.
#[derive(Default)]
struct Reads {
    rollup: Option<io::Result<(Rollup, Option<Malformed>)>>,
    go: Option<(Go, Option<ExeKey>)>,
    heap: Option<io::Result<Result<u64, smaps::LineError>>>,
}

/// A reader thread's buffers.
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    path: PathBuf2,
}

fn read_job(root: &Path, exes: &Mutex<HashMap<ExeKey, Option<Arc<GoBuild>>>>, job: &Job, s: &mut Scratch) -> Reads {
    let mut r = Reads::default();
    let mut heap = job.heap;
    if job.go {
        let (mut go, exe) = detect_go(s.path.get(root, job.pid, "exe"), job.pid, exes);
        if let Go::Yes { build, madvdontneed } = &mut go {
            let path = s.path.get(root, job.pid, "environ");
            let env = read_small(path, &mut s.buf, ENVIRON_LIMIT)
                .map(|()| gobuildinfo::environ_godebug(&s.buf).and_then(gobuildinfo::godebug_madvdontneed));
            *madvdontneed = madvdontneed_label(env.ok(), build.default_madvdontneed);
            heap = false; // the heap mapping is for non-Go processes
        }
        r.go = Some((go, exe));
    }
    if job.full {
        let path = s.path.get(root, job.pid, "smaps_rollup");
        r.rollup = Some(read_small(path, &mut s.buf, SMALL_FILE_LIMIT).map(|()| {
            let mut rollup = Rollup::default();
            let malformed = smaps::parse_rollup(&s.buf, &mut rollup).err();
            (rollup, malformed)
        }));
        if heap {
            r.heap = Some(heap_mapping_rss(s.path.get(root, job.pid, "smaps"), &mut s.buf));
        }
    }
    r
}

impl Collector for MemoryCollector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
        let table = ctx.processes();
        if table.processes.is_empty() {
            return Err(CollectError::Other(format!("no processes found under {}", ctx.proc.root().display())));
        }
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        state.scrape += 1;
        let scrape = state.scrape;
        let root = ctx.proc.root();
        let mut problems = Problems::default();
        let mut groups: HashMap<GroupKey, Sums> = HashMap::new();
        let mut quarantined = 0u64;

        // Stuck reads that came back: their processes are read again after the back-off.
        for job in self.reader.take_returned() {
            if let Some(q) = state.quarantine.get_mut(&job.pid)
                && q.start == job.start
            {
                q.returned = Some(Instant::now());
                tracing::info!(
                    pid = job.pid,
                    "memory: the hung read of a quarantined process returned; it is read again in {:?}",
                    q.backoff
                );
            }
        }

        // Pass 1, on this thread: files that never take the target's mmap lock (stat, schedstat, cgroup, exe),
        // which settle what each process needs.
        let mut jobs: Vec<Job> = Vec::new();
        for entry in &table.processes {
            let pid = entry.pid;
            // stat: name, state, kernel-thread flag, start time.
            let path = state.path.get(root, pid, "stat");
            if let Err(e) = read_small(path, &mut state.buf, SMALL_FILE_LIMIT) {
                if !quiet(&e) {
                    problems.io(path, &e);
                }
                continue;
            }
            let Some(stat) = smaps::parse_stat(&state.buf) else {
                problems.malformed(path, "unparsable stat line");
                continue;
            };
            if stat.is_kernel_thread() || matches!(stat.state, b'Z' | b'X' | b'x') {
                continue;
            }
            let start = stat.start_time;
            let mut signature = (stat.cpu_ticks, stat.vsize, stat.rss_pages);
            let single_threaded = stat.threads == 1;
            let known = match state.procs.get_mut(&pid) {
                Some(k) if k.start == start => k,
                _ => {
                    let name: Arc<str> = String::from_utf8_lossy(stat.comm).into();
                    let k = self.identify(&ctx.proc, pid, start, name);
                    state.procs.insert(pid, k);
                    state.procs.get_mut(&pid).expect("just inserted")
                }
            };
            known.seen = scrape;
            if !known.included {
                continue;
            }
            let mut probing = false;
            if let Some(q) = state.quarantine.get_mut(&pid) {
                if q.start != start {
                    state.quarantine.remove(&pid); // the pid was reused
                } else if q.returned.is_some_and(|t| t.elapsed() >= q.backoff) {
                    q.probing = true;
                    probing = true; // read in full: only a read that returns ends the quarantine
                } else {
                    quarantined += 1;
                    continue;
                }
            }
            if known.pod.is_pod()
                && (known.pod.namespace.is_empty() || known.pod.container.is_empty())
                && known.resolved.elapsed() >= RESOLVE_RETRY
            {
                let pod = self.pods.resolve(&ctx.proc, pid);
                if pod.is_pod() {
                    known.pod = pod;
                }
                known.resolved = Instant::now();
            }

            // An idle process (no CPU tick, same resident and virtual size) cannot have called madvise or touched
            // memory since its last full read: reuse those figures, re-reading in full at least every idle_reuse.
            // CPU ticks are 10 ms coarse; a single-threaded process's exact runtime is one small read away.
            if single_threaded && known.last_full.is_some() {
                let path = state.path.get(root, pid, "schedstat");
                signature.0 = match read_small(path, &mut state.buf, SMALL_FILE_LIMIT) {
                    Ok(()) => smaps::schedstat_runtime(&state.buf).unwrap_or(u64::MAX),
                    Err(_) => u64::MAX,
                };
            }
            let reuse = !probing
                && matches!(&known.last_full, Some((at, sig, _)) if *sig == signature && at.elapsed() < self.args.idle_reuse);
            if reuse && !known.go_pending {
                let sums = &known.last_full.as_ref().expect("reuse").2;
                let g = groups.entry(group_key(known)).or_default();
                g.add(sums);
                add_go(g, &known.go);
                continue;
            }
            jobs.push(Job {
                pid,
                start,
                full: !reuse,
                heap: !reuse && self.args.heap_mapping && matches!(known.go, Go::No),
                go: known.go_pending,
                signature,
                single_threaded,
            });
        }

        // Pass 2, on reader threads under a deadline: the reads that take the target's mmap lock.
        let work = {
            let root = root.to_path_buf();
            let exes = self.exes.clone();
            Arc::new(move |job: &Job, s: &mut Scratch| read_job(&root, &exes, job, s))
        };
        let out = self.reader.run(jobs.clone(), work);

        // Pass 3, on this thread: the figures of every process read.
        let mut rollup_missing = false;
        for (i, (job, reads)) in jobs.iter().zip(out.results).enumerate() {
            let pid = job.pid;
            let Some(known) = state.procs.get_mut(&pid) else { continue };
            let Some(reads) = reads else {
                if out.overran.contains(&i) {
                    quarantined += 1;
                    self.quarantine(&mut state.quarantine, job, &known.name);
                    continue;
                }
                // Not read: too many readers stuck. The last figures if there are any, else status alone.
                problems.unread += 1;
                let sums = match &known.last_full {
                    Some((_, _, sums)) => Some(sums.clone()),
                    None => self.measure(root, pid, None, None, state, &mut problems, &mut rollup_missing),
                };
                let known = state.procs.get_mut(&pid).expect("present");
                if let Some(sums) = sums {
                    let g = groups.entry(group_key(known)).or_default();
                    g.add(&sums);
                    add_go(g, &known.go);
                }
                continue;
            };
            if let Some(q) = state.quarantine.remove(&pid) {
                debug_assert!(q.probing);
                tracing::info!(pid, process = %known.name, "memory: a quarantined process is readable again");
            }
            if let Some((go, exe)) = reads.go {
                known.go = go;
                known.exe = exe;
                known.go_pending = false;
            }
            if !job.full {
                let sums = &known.last_full.as_ref().expect("reused figures").2;
                let g = groups.entry(group_key(known)).or_default();
                g.add(sums);
                add_go(g, &known.go);
                continue;
            }
            let Some(p) = self.measure(root, pid, reads.rollup, reads.heap, state, &mut problems, &mut rollup_missing)
            else {
                continue;
            };
            let known = state.procs.get_mut(&pid).expect("present");
            let g = groups.entry(group_key(known)).or_default();
            g.add(&p);
            add_go(g, &known.go);
            let mut signature = job.signature;
            if job.single_threaded {
                let path = state.path.get(root, pid, "schedstat");
                signature.0 = match read_small(path, &mut state.buf, SMALL_FILE_LIMIT) {
                    Ok(()) => smaps::schedstat_runtime(&state.buf).unwrap_or(u64::MAX - 1),
                    Err(_) => u64::MAX - 1,
                };
            }
            known.last_full = Some((Instant::now(), signature, p));
        }
        if problems.unread > 0 && !state.readers_exhausted_logged {
            state.readers_exhausted_logged = true;
            tracing::warn!(
                "memory: {MAX_STUCK_READERS} reads of hung processes are stuck; no file that could hang is read until one returns"
            );
        } else if problems.unread == 0 {
            state.readers_exhausted_logged = false;
        }

        // Forget processes that are gone, and executables no live process runs.
        state.procs.retain(|_, k| k.seen == scrape);
        let procs = &state.procs;
        state.quarantine.retain(|pid, q| procs.get(pid).is_some_and(|k| k.start == q.start));
        let live: HashSet<ExeKey> = state.procs.values().filter_map(|k| k.exe).collect();
        self.exes.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| live.contains(k));
        if rollup_missing && !state.smaps_rollup_missing_logged {
            state.smaps_rollup_missing_logged = true;
            tracing::info!(
                "memory: no smaps_rollup (Linux < 4.14?): RSS, anonymous and swap come from status; LazyFree and PSS are not available"
            );
        }
        let (top, other) = select_top(groups, self.args.top_n, &state.exported);
        state.exported = top.iter().map(|(k, _)| k.clone()).collect();
        drop(guard);

        self.export(&top, other.as_ref(), sink);
        sink.gauge("nodesleuth_memory_quarantined_processes", HELP_QUARANTINED, &[], quarantined as f64);
        problems.report(sink);
        Ok(())
    }
}

impl MemoryCollector {
    /// First sight of a process: its name filter and pod. Its Go runtime is detected with the reads that may hang
    /// (the executable may sit on a dead network file system).
    fn identify(&self, proc: &ProcFs, pid: u32, start: u64, name: Arc<str>) -> Known {
        let included = self.args.process_include.as_ref().is_none_or(|r| r.is_match(&name))
            && !self.args.process_exclude.as_ref().is_some_and(|r| r.is_match(&name));
        let mut known = Known {
            start,
            included,
            name,
            pod: PodInfo::default(),
            resolved: Instant::now(),
            go: Go::No,
            go_pending: false,
            exe: None,
            seen: 0,
            last_full: None,
        };
        if !included {
            return known;
        }
        known.pod = self.pods.resolve(proc, pid);
        known.go_pending = true;
        known
    }

    /// Quarantines a process whose read overran: logged the first time, the back-off doubled when a re-read hung
    /// again.
    fn quarantine(&self, quarantine: &mut HashMap<u32, Quarantine>, job: &Job, name: &str) {
        match quarantine.get_mut(&job.pid) {
            Some(q) if q.start == job.start => {
                q.backoff = (q.backoff * 2).min(QUARANTINE_MAX_BACKOFF);
                q.returned = None;
                q.probing = false;
                tracing::debug!(pid = job.pid, process = name, "memory: a quarantined process hung again");
            }
            _ => {
                tracing::warn!(
                    pid = job.pid,
                    process = name,
                    "memory: reading the process's /proc files did not return within {:?} (hung in the kernel?); quarantined: skipped until the read returns",
                    self.args.read_timeout
                );
                quarantine.insert(
                    job.pid,
                    Quarantine { start: job.start, returned: None, backoff: QUARANTINE_BACKOFF, probing: false },
                );
            }
        }
    }

    /// One process's figures from its `smaps_rollup` (as read, or `None` when not read) and, where needed,
    /// `status`. `None`: the process is gone or has no address space.
    #[allow(clippy::too_many_arguments)]
    fn measure(
        &self,
        root: &Path,
        pid: u32,
        rollup: Option<io::Result<(Rollup, Option<Malformed>)>>,
        heap: Option<io::Result<Result<u64, smaps::LineError>>>,
        state: &mut State,
        problems: &mut Problems,
        rollup_missing: &mut bool,
    ) -> Option<Sums> {
        let mut p = Sums { count: 1, ..Sums::default() };
        // smaps_rollup: one walk of the address space; unreadable for other users' processes without
        // CAP_SYS_PTRACE, absent before Linux 4.14 (status then stands in, without LazyFree and PSS).
        let mut rollup_absent = false;
        let (have_rollup, rollup) = match rollup {
            Some(Ok((rollup, malformed))) => {
                if let Some(m) = malformed {
                    problems.malformed(state.path.get(root, pid, "smaps_rollup"), m);
                }
                // An exiting process (its address space already gone) reads as empty.
                (rollup.rss.is_some(), rollup)
            }
            Some(Err(e)) if e.raw_os_error() == Some(libc::ESRCH) => return None, // exited, or a zombie by now
            Some(Err(e)) => {
                if !quiet(&e) {
                    problems.io(state.path.get(root, pid, "smaps_rollup"), &e);
                }
                rollup_absent = e.kind() == io::ErrorKind::NotFound;
                (false, Rollup::default())
            }
            None => (false, Rollup::default()),
        };
        let mut status = StatusMemory::default();
        if !have_rollup || self.args.detailed {
            let path = state.path.get(root, pid, "status");
            let have_status = match read_small(path, &mut state.buf, SMALL_FILE_LIMIT) {
                Ok(()) => {
                    if let Err(m) = smaps::parse_status(&state.buf, &mut status) {
                        problems.malformed(path, m);
                    }
                    status.vm_rss.is_some()
                }
                Err(e) => {
                    if !quiet(&e) {
                        problems.io(path, &e);
                    }
                    false
                }
            };
            // No smaps_rollup for a process whose status is still there: a kernel before 4.14.
            *rollup_missing |= rollup_absent && have_status;
            if !have_rollup && !have_status {
                return None; // exited mid-scan, or no address space
            }
            if !have_status {
                status = StatusMemory::default();
            }
        }
        if have_rollup {
            p.rss = rollup.rss.unwrap_or(0);
            p.lazyfree = rollup.lazy_free.unwrap_or(0);
            p.anonymous = rollup.anonymous.or(status.rss_anon).unwrap_or(0);
            p.swap = rollup.swap.or(status.vm_swap).unwrap_or(0);
            p.pss = rollup.pss.unwrap_or(0);
            p.anon_huge = rollup.anon_huge_pages.unwrap_or(0);
        } else {
            p.rss = status.vm_rss.unwrap_or(0);
            p.anonymous = status.rss_anon.unwrap_or(0);
            p.swap = status.vm_swap.unwrap_or(0);
        }
        p.rss_minus_lazyfree = p.rss.saturating_sub(p.lazyfree);
        p.rss_file = status.rss_file.unwrap_or(0);
        p.rss_shmem = status.rss_shmem.unwrap_or(0);
        p.peak_rss = status.vm_hwm.unwrap_or(0);
        match heap {
            Some(Ok(Ok(rss))) => p.heap = rss,
            Some(Ok(Err(m))) => problems.malformed(state.path.get(root, pid, "smaps"), m),
            Some(Err(e)) if quiet(&e) => {}
            Some(Err(e)) => problems.io(state.path.get(root, pid, "smaps"), &e),
            None => {}
        }
        Some(p)
    }

    fn export(&self, top: &[(GroupKey, Sums)], other: Option<&Sums>, sink: &mut Sink) {
        let other_key: GroupKey = ("".into(), "".into(), "".into(), "(other)".into());
        let all = top.iter().map(|(k, s)| (k, s)).chain(other.map(|s| (&other_key, s)));
        for ((namespace, pod, container, process), s) in all {
            let labels =
                [("namespace", &**namespace), ("pod", &**pod), ("container", &**container), ("process", &**process)];
            let mut g = |name: &'static str, help: &'static str, v: u64| sink.gauge(name, help, &labels, v as f64);
            g("nodesleuth_processes", HELP_COUNT, s.count);
            g("nodesleuth_process_resident_memory_bytes", HELP_RSS, s.rss);
            g("nodesleuth_process_lazyfree_bytes", HELP_LAZYFREE, s.lazyfree);
            g("nodesleuth_process_resident_memory_minus_lazyfree_bytes", HELP_RSS_MINUS_LAZYFREE, s.rss_minus_lazyfree);
            g("nodesleuth_process_swap_bytes", HELP_SWAP, s.swap);
            if self.args.detailed {
                g("nodesleuth_process_anonymous_memory_bytes", HELP_ANON, s.anonymous);
                g("nodesleuth_process_proportional_memory_bytes", HELP_PSS, s.pss);
                g("nodesleuth_process_resident_file_memory_bytes", HELP_RSS_FILE, s.rss_file);
                g("nodesleuth_process_resident_shmem_memory_bytes", HELP_RSS_SHMEM, s.rss_shmem);
                g("nodesleuth_process_anonymous_hugepages_bytes", HELP_ANON_HUGE, s.anon_huge);
                g("nodesleuth_process_peak_resident_memory_bytes", HELP_PEAK, s.peak_rss);
            }
            if self.args.heap_mapping {
                g("nodesleuth_process_heap_mapping_resident_bytes", HELP_HEAP, s.heap);
            }
            // One series per distinct label set: add_go keeps them distinct, so each is exactly 1.
            for (build, madvdontneed) in &s.go {
                let (version, module) = go_labels(build);
                let labels = [
                    labels[0],
                    labels[1],
                    labels[2],
                    labels[3],
                    ("go_version", version),
                    ("module", module),
                    ("madvdontneed", madvdontneed),
                ];
                sink.gauge("nodesleuth_process_go_info", HELP_GO_INFO, &labels, 1.0);
            }
        }
    }
}

/// The top N groups by RSS ([`crate::topn`]: with hysteresis against flapping at the cut) and the sum of the rest
/// (`None` when nothing is left over). `top_n` 0: every group.
fn select_top(
    groups: HashMap<GroupKey, Sums>,
    top_n: usize,
    prev: &HashSet<GroupKey>,
) -> (Vec<(GroupKey, Sums)>, Option<Sums>) {
    let (top, rest) = crate::topn::top_n_sticky(groups.into_iter().collect(), top_n, prev, |s| s.rss);
    if rest.is_empty() {
        return (top, None);
    }
    let mut other = Sums::default();
    for (_, s) in &rest {
        other.add(s);
    }
    (top, Some(other))
}

const HELP_COUNT: &str = "Processes in the group (kernel threads and zombies excluded).";
const HELP_RSS: &str =
    "Resident memory of the group's processes, summed (smaps_rollup Rss; status VmRSS where unreadable).";
const HELP_LAZYFREE: &str =
    "Resident memory freed with MADV_FREE and not yet reclaimed (smaps_rollup LazyFree), summed.";
const HELP_RSS_MINUS_LAZYFREE: &str =
    "Resident memory minus LazyFree: what the processes would keep if the kernel reclaimed MADV_FREE pages.";
const HELP_ANON: &str = "Anonymous resident memory (heap, stacks, private mappings), summed (smaps_rollup Anonymous).";
const HELP_SWAP: &str = "Memory of the group's processes swapped out, summed (smaps_rollup Swap).";
const HELP_PSS: &str =
    "Proportional set size (shared pages divided among the processes sharing them), summed (smaps_rollup Pss).";
const HELP_RSS_FILE: &str = "Resident file-backed memory (binaries, libraries, mapped files), summed (status RssFile).";
const HELP_RSS_SHMEM: &str = "Resident shared memory (shmem, tmpfs mappings), summed (status RssShmem).";
const HELP_ANON_HUGE: &str = "Anonymous memory backed by transparent huge pages, summed (smaps_rollup AnonHugePages).";
const HELP_PEAK: &str =
    "Peak resident memory of each process (status VmHWM), summed over the group: an upper bound of the group's peak.";
const HELP_HEAP: &str = "Resident size of the [heap] (brk) mapping of the group's non-Go processes, summed.";
const HELP_QUARANTINED: &str =
    "Processes skipped because a read of their /proc files hung (quarantined until the read returns).";
const HELP_GO_INFO: &str = "Go runtime of the group's processes and their madvdontneed setting; always 1.";

/// Adds a process's Go runtime to its group's distinct ones. Distinct by label values, not by executable: two
/// copies of one binary (or two builds of one version and module) in a group make one `go_info` series, not a
/// duplicate.
fn add_go(g: &mut Sums, go: &Go) {
    if let Go::Yes { build, madvdontneed } = go
        && !g.go.iter().any(|(b, m)| go_labels(b) == go_labels(build) && m == madvdontneed)
    {
        g.go.push((build.clone(), madvdontneed));
    }
}

/// The `go_version` and `module` label values of a build: `unknown` for Go before 1.13 (no version recorded), the
/// main package path for builds outside module mode.
fn go_labels(build: &GoBuild) -> (&str, &str) {
    let version = if build.version.is_empty() { "unknown" } else { build.version.as_str() };
    let module = if build.module.is_empty() { build.path.as_str() } else { build.module.as_str() };
    (version, module)
}

/// The `madvdontneed` label: the environment's GODEBUG setting, else the build's default (`//go:debug`), else
/// `default` (the runtime's own default); `unknown` when `environ` could not be read.
fn madvdontneed_label(env: Option<Option<MadvDontNeed>>, build_default: Option<MadvDontNeed>) -> &'static str {
    match (env, build_default) {
        (Some(Some(s)), _) => s.label(),
        (Some(None), Some(s)) => s.label(),
        (Some(None), None) => "default",
        (None, _) => "unknown",
    }
}

/// Reads the Go build info of the process's executable (`exe`: `/proc/<pid>/exe`), cached per executable file.
/// Unreadable executables (permission, kernel threads, exited) count as not Go. The `madvdontneed` setting is
/// `unknown` until `environ` is read. The cache is not locked while an executable is read.
fn detect_go(exe: &Path, pid: u32, exes: &Mutex<HashMap<ExeKey, Option<Arc<GoBuild>>>>) -> (Go, Option<ExeKey>) {
    let Ok(file) = File::open(exe) else { return (Go::No, None) };
    let Ok(meta) = file.metadata() else { return (Go::No, None) };
    let key: ExeKey = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
    let cached = exes.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    let build = match cached {
        Some(build) => build,
        None => {
            let build = match gobuildinfo::read(&mut FileAt(&file)) {
                Ok(b) => Some(Arc::new(b)),
                Err(gobuildinfo::Error::NotGo | gobuildinfo::Error::NotElf) => None,
                Err(e) => {
                    tracing::debug!(pid, error = %e, "memory: unreadable Go build info");
                    None
                }
            };
            exes.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert(build).clone()
        }
    };
    match build {
        Some(build) => (Go::Yes { build, madvdontneed: "unknown" }, Some(key)),
        None => (Go::No, Some(key)),
    }
}

/// `pread` on an open executable.
struct FileAt<'a>(&'a File);

impl gobuildinfo::ReadAt for FileAt<'_> {
    type Error = io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// Resident size of the `[heap]` mapping in `smaps`, 0 when there is none. Streams the file through `buf` and
/// stops reading once the mapping's `Rss` line is seen (the heap follows the executable's mappings, so most of
/// the file is never generated).
fn heap_mapping_rss(path: &Path, buf: &mut Vec<u8>) -> io::Result<Result<u64, smaps::LineError>> {
    const CHUNK: usize = 64 * 1024;
    let mut file = File::open(path)?;
    buf.clear();
    buf.resize(CHUNK, 0);
    let mut filled = 0;
    let mut in_heap = false;
    loop {
        let n = match file.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let eof = n == 0;
        filled += n;
        let mut start = 0;
        loop {
            let end = match buf[start..filled].iter().position(|&b| b == b'\n') {
                Some(i) => start + i,
                None if eof && start < filled => filled,
                None => break,
            };
            let line = &buf[start..end];
            if let Some(name) = smaps::mapping_header(line) {
                in_heap = name == b"[heap]";
            } else if in_heap && line.starts_with(b"Rss:") {
                return Ok(smaps::kb_line(line).map(|kv| kv.map_or(0, |(_, v)| v)));
            }
            start = (end + 1).min(filled);
        }
        if eof {
            return Ok(Ok(0));
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            filled = 0; // a line longer than the buffer: none in smaps; drop it
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_mapping_of_this_process() {
        // This test binary has a brk heap once the allocator has used it.
        let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1024]).collect();
        let mut buf = Vec::new();
        let rss = heap_mapping_rss(Path::new("/proc/self/smaps"), &mut buf).unwrap().unwrap();
        assert!(rss > 0, "no [heap] Rss in /proc/self/smaps");
        assert_eq!(v.len(), 64);
        assert!(heap_mapping_rss(Path::new("/proc/self/nonexistent"), &mut buf).is_err());
    }

    #[test]
    fn heap_mapping_from_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("smaps");
        let text = "00400000-00401000 r-xp 00000000 08:01 12 /bin/x\nRss:                   4 kB\n\
01e6e000-01e8f000 rw-p 00000000 00:00 0                                  [heap]\nSize: 132 kB\nRss:                  44 kB\n\
7f00-7f01 rw-p 00000000 00:00 0\nRss: 8 kB";
        std::fs::write(&p, text).unwrap();
        let mut buf = Vec::new();
        assert_eq!(heap_mapping_rss(&p, &mut buf).unwrap(), Ok(44 * 1024));
        std::fs::write(&p, "00400000-00401000 r-xp 00000000 08:01 12 /bin/x\nRss: 4 kB").unwrap();
        assert_eq!(heap_mapping_rss(&p, &mut buf).unwrap(), Ok(0));
        std::fs::write(&p, "01e6e000-01e8f000 rw-p 00000000 00:00 0 [heap]\nRss: lots").unwrap();
        assert!(heap_mapping_rss(&p, &mut buf).unwrap().is_err());
    }

    #[test]
    fn name_regexes_are_anchored() {
        let r = name_regex("java|nginx").unwrap();
        assert!(r.is_match("java") && r.is_match("nginx"));
        assert!(!r.is_match("javac") && !r.is_match("my-nginx"));
        let e = name_regex("(").unwrap_err();
        assert!(e.starts_with("invalid process name regex \"(\""), "{e}");
    }

    fn key(name: &str) -> GroupKey {
        ("".into(), "".into(), "".into(), name.into())
    }

    fn groups(rss: &[(&str, u64)]) -> HashMap<GroupKey, Sums> {
        rss.iter().map(|&(n, rss)| (key(n), Sums { count: 1, rss, ..Sums::default() })).collect()
    }

    fn names(top: &[(GroupKey, Sums)]) -> Vec<String> {
        top.iter().map(|(k, _)| k.3.to_string()).collect()
    }

    #[test]
    fn groups_oscillating_at_the_cut_do_not_flip() {
        // Two groups of about 100 MB swap ranks every scrape at the cut of a top 2 (big is always in).
        let mut prev = HashSet::new();
        let mut seen = Vec::new();
        for round in 0..10 {
            let (a, b) = if round % 2 == 0 { (100, 105) } else { (105, 100) };
            let (top, other) = select_top(groups(&[("big", 1000), ("a", a), ("b", b)]), 2, &prev);
            // The cut still holds every process: the group left out (a, even when larger) is summed into (other).
            assert_eq!(other.as_ref().map(|o| (o.count, o.rss)), Some((1, a)));
            prev = top.iter().map(|(k, _)| k.clone()).collect();
            seen.push(names(&top));
        }
        assert!(seen.iter().all(|t| *t == ["big", "b"]), "flipped: {seen:?}");
        // Without the memory of the previous scrape, the same inputs flip every scrape: the test can fail.
        let (t1, _) = select_top(groups(&[("big", 1000), ("a", 100), ("b", 105)]), 2, &HashSet::new());
        let (t2, _) = select_top(groups(&[("big", 1000), ("a", 105), ("b", 100)]), 2, &HashSet::new());
        assert_ne!(names(&t1), names(&t2));
        // A clear winner still takes the place: more than 1.25 times the incumbent's RSS.
        let (top, _) = select_top(groups(&[("big", 1000), ("a", 125), ("b", 100)]), 2, &prev);
        assert_eq!(names(&top), ["big", "b"], "125 is not more than 1.25 x 100");
        let (top, _) = select_top(groups(&[("big", 1000), ("a", 126), ("b", 100)]), 2, &prev);
        assert_eq!(names(&top), ["big", "a"]);
        // Never more than N groups, however many were exported before.
        let everyone: HashSet<GroupKey> = ["big", "a", "b", "c"].map(key).into_iter().collect();
        let (top, other) = select_top(groups(&[("big", 1000), ("a", 1), ("b", 2), ("c", 3)]), 2, &everyone);
        assert_eq!(names(&top), ["big", "c"]);
        assert_eq!(other.map(|o| o.count), Some(2));
        // Top 0: every group, no (other).
        let (top, other) = select_top(groups(&[("a", 1), ("b", 2)]), 0, &prev);
        assert_eq!((top.len(), other.is_none()), (2, true));
    }

    #[test]
    fn go_info_is_one_series_per_label_set() {
        let build = |version: &str| {
            Arc::new(GoBuild { version: version.into(), module: "example.com/m".into(), ..GoBuild::default() })
        };
        // Two executables (two Arcs) of the same version and module: one entry.
        let (one, two, other) = (build("go1.21.1"), build("go1.21.1"), build("go1.22.0"));
        let mut g = Sums::default();
        for go in [&one, &two] {
            add_go(&mut g, &Go::Yes { build: go.clone(), madvdontneed: "1" });
        }
        assert_eq!(g.go.len(), 1);
        add_go(&mut g, &Go::Yes { build: two.clone(), madvdontneed: "0" });
        add_go(&mut g, &Go::Yes { build: other, madvdontneed: "1" });
        add_go(&mut g, &Go::No);
        assert_eq!(g.go.len(), 3);
    }

    #[test]
    fn read_timeout_bounds() {
        assert_eq!(read_timeout("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(read_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert!(read_timeout("0s").unwrap_err().contains("above 0s"));
        assert!(read_timeout("2m").is_err());
    }

    #[test]
    fn paths_are_built_in_place() {
        let mut p = PathBuf2::default();
        assert_eq!(p.get(Path::new("/host/proc"), 42, "smaps_rollup"), Path::new("/host/proc/42/smaps_rollup"));
        assert_eq!(p.get(Path::new("/proc"), 7, "stat"), Path::new("/proc/7/stat"));
    }
}

//! The procfs edge: every file the collectors read goes through [`ProcFs`], rooted at `--path.procfs`, so a fixture
//! tree and the live `/proc` (or the host's, mounted at `/host/proc`) are read by the same code.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

/// One process and the network namespace it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    /// Inode of `/proc/<pid>/ns/net`; `None` when unreadable (kernel threads are readable; zombies are not).
    pub netns: Option<u64>,
}

/// All processes of one scrape, grouped by network namespace.
#[derive(Debug, Default)]
pub struct ProcessTable {
    pub processes: Vec<ProcEntry>,
    /// The namespace of PID 1: the host's.
    pub host_netns: Option<u64>,
    /// Namespace inode → its pids in ascending order.
    pub by_netns: BTreeMap<u64, Vec<u32>>,
}

impl ProcessTable {
    /// A process of the host network namespace, through which host-wide files (`net/ip_vs`) are read.
    pub fn host_pid(&self) -> Option<u32> {
        self.host_netns.and_then(|h| self.by_netns.get(&h)).and_then(|p| p.first().copied())
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pid_path(&self, pid: u32, rest: &str) -> PathBuf {
        let mut p = self.root.join(pid.to_string());
        if !rest.is_empty() {
            p.push(rest);
        }
        p
    }

    /// Numeric entries of the procfs root, ascending.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids: Vec<u32> = std::fs::read_dir(&self.root)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// The inode behind `/proc/<pid>/ns/net` (a `net:[4026531840]` link; fixture trees use dangling links).
    pub fn netns_inode(&self, pid: u32) -> Option<u64> {
        let target = std::fs::read_link(self.pid_path(pid, "ns/net")).ok()?;
        parse_ns_link(target.to_str()?, "net")
    }

    /// Reads every process's namespace. Processes that vanish meanwhile are simply absent.
    pub fn process_table(&self) -> ProcessTable {
        let mut table = ProcessTable::default();
        let pids = match self.pids() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(path = %self.root.display(), error = %e, "cannot list processes");
                return table;
            }
        };
        for pid in pids {
            let netns = self.netns_inode(pid);
            if let Some(ns) = netns {
                table.by_netns.entry(ns).or_default().push(pid);
            }
            table.processes.push(ProcEntry { pid, netns });
        }
        // PID 1's namespace is the host's. Where PID 1 is unreadable (some sandboxes), the oldest readable process
        // stands in for it.
        table.host_netns = self.netns_inode(1).or_else(|| table.processes.iter().find_map(|p| p.netns));
        table
    }

    /// Reads a small file whole (cgroup, comm, snmp). Large files go through [`for_each_line`].
    pub fn read_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    /// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid, it names one
    /// process for its whole life, where a pid alone may be recycled.
    pub fn start_time(&self, pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(self.pid_path(pid, "stat")).ok()?;
        // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_ascii_whitespace().nth(19)?.parse().ok()
    }

    /// The process name (`comm`, at most 15 bytes), trimmed.
    pub fn comm(&self, pid: u32) -> Option<String> {
        let s = std::fs::read_to_string(self.pid_path(pid, "comm")).ok()?;
        Some(s.trim_end_matches('\n').to_string())
    }
}

/// Parses `net:[4026531840]` (the text of a namespace link) into the inode.
pub fn parse_ns_link(target: &str, kind: &str) -> Option<u64> {
    target.strip_prefix(kind)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
}

/// Streams a file line by line through a reusable buffer, so a 100,000-socket `net/tcp` never sits in memory whole.
/// `buf` keeps its capacity between calls. A line longer than the 64 KiB buffer (none of the files read this way
/// have one) is passed cut to its first 64 KiB, and the rest of it is dropped, so the parser rejects one line
/// instead of seeing its tail as another.
pub fn for_each_line(path: &Path, buf: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let mut file = File::open(path)?;
    buf.clear();
    buf.resize(CHUNK, 0);
    let mut filled = 0;
    let mut skipping = false;
    loop {
        if filled == buf.len() {
            if !skipping {
                f(&buf[..filled]);
            }
            skipping = true;
            filled = 0;
        }
        let n = match file.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if filled > 0 && !skipping {
                f(&buf[..filled]);
            }
            return Ok(());
        }
        filled += n;
        let mut start = 0;
        while let Some(nl) = buf[start..filled].iter().position(|b| *b == b'\n') {
            if skipping {
                skipping = false; // the end of the over-long line: drop its tail
            } else {
                f(&buf[start..start + nl]);
            }
            start += nl + 1;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process() {
        let proc = ProcFs::new("/proc");
        let me = std::process::id();
        let t = proc.start_time(me).expect("own start time");
        assert_eq!(proc.start_time(me), Some(t), "stable for the life of the process");
        assert_eq!(proc.start_time(u32::MAX), None);
    }

    #[test]
    fn parses_namespace_links() {
        assert_eq!(parse_ns_link("net:[4026531840]", "net"), Some(4026531840));
        assert_eq!(parse_ns_link("mnt:[4026531840]", "net"), None);
        assert_eq!(parse_ns_link("net:[x]", "net"), None);
    }

    #[test]
    fn over_long_lines_are_cut_once_not_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = "y".repeat(200 * 1024);
        std::fs::write(&path, format!("first\n{long}\nlast\n")).unwrap();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for_each_line(&path, &mut buf, |l| got.push(l.len())).unwrap();
        assert_eq!(got, vec![5, 64 * 1024, 4]);
    }

    #[test]
    fn streams_lines_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let lines: Vec<String> = (0..20_000).map(|i| format!("line number {i} {}", "x".repeat(i % 50))).collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for_each_line(&path, &mut buf, |l| got.push(String::from_utf8(l.to_vec()).unwrap())).unwrap();
        assert_eq!(got, lines);
    }
}

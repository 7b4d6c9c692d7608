//! `/proc/<pid>/smaps_rollup`, `/proc/<pid>/smaps`, `/proc/<pid>/status` and `/proc/<pid>/stat`: the per-process
//! memory figures of the kernel.
//!
//! `smaps_rollup` (Linux ≥ 4.14) is one header line followed by `Key:   N kB` lines; kernels add keys over time
//! (`Pss_Anon`/`Pss_File`/`Pss_Shmem` in 5.8, `Pss_Dirty` in 6.0, `KSM` in 6.6), so it is parsed as a generic
//! key/value map: known keys fill [`Rollup`], unknown ones are skipped, a line that is not `Key: N kB` is reported
//! as malformed while every good line around it is still used. `status` mixes `Key: N kB` lines with other
//! formats (`Name:`, `Uid:`, masks); only the memory keys read here must be well-formed. `LazyFree` is anonymous
//! memory released with `madvise(MADV_FREE)` that the kernel has not reclaimed yet: resident, counted in `Rss`,
//! dropped without I/O as soon as memory gets tight.
//!
//! Nothing here allocates.

/// Why a line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no `:` after the key")]
    NoColon,
    #[error("value is not a number")]
    BadNumber,
    #[error("value has no `kB` unit")]
    NoUnit,
}

/// The first malformed line of a file and how many there were; the good lines were used anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// Line number (1-based) of the first bad line.
    pub line: u32,
    pub error: LineError,
    /// Malformed lines in the file.
    pub count: u32,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} malformed line(s) skipped, first at line {}: {}", self.count, self.line, self.error)
    }
}

#[derive(Default)]
struct BadLines(Option<Malformed>);

impl BadLines {
    fn add(&mut self, line: u32, error: LineError) {
        match &mut self.0 {
            Some(m) => m.count += 1,
            None => self.0 = Some(Malformed { line, error, count: 1 }),
        }
    }
}

/// Splits `Key:   1234 kB` into the key and the value in bytes.
///
/// `Ok(None)`: a line of another shape that is not an error in files that mix formats: an empty line. A value
/// without the `kB` unit is [`LineError::NoUnit`]; callers reading files with other formats ignore errors for
/// keys they do not want.
pub fn kb_line(line: &[u8]) -> Result<Option<(&[u8], u64)>, LineError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let colon = line.iter().position(|&b| b == b':').ok_or(LineError::NoColon)?;
    let key = &line[..colon];
    if key.is_empty() || key.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(LineError::NoColon);
    }
    let rest = trim_start(&line[colon + 1..]);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(LineError::BadNumber);
    }
    let mut kb: u64 = 0;
    for &d in &rest[..digits] {
        kb = kb.checked_mul(10).and_then(|v| v.checked_add(u64::from(d - b'0'))).ok_or(LineError::BadNumber)?;
    }
    let unit = trim_end(trim_start(&rest[digits..]));
    if digits < rest.len() && !rest[digits].is_ascii_whitespace() {
        return Err(LineError::BadNumber);
    }
    if unit != b"kB" {
        return Err(LineError::NoUnit);
    }
    Ok(Some((key, kb.checked_mul(1024).ok_or(LineError::BadNumber)?)))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
    &s[..s.len() - n]
}

/// Whether `line` starts a mapping in `smaps` (or is the `[rollup]` header of `smaps_rollup`):
/// `start-end perms offset dev inode [path]`. Returns the path field (empty for anonymous mappings).
pub fn mapping_header(line: &[u8]) -> Option<&[u8]> {
    let dash = line.iter().position(|&b| b == b'-')?;
    let space = line.iter().position(|&b| b == b' ')?;
    if dash == 0 || dash > space || !line[..dash].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    if !line[dash + 1..space].iter().all(u8::is_ascii_hexdigit) || dash + 1 == space {
        return None;
    }
    // Five fields after the range: perms, offset, dev, inode, then the path (which may contain spaces).
    let mut rest = &line[space..];
    for _ in 0..4 {
        rest = trim_start(rest);
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        rest = &rest[end..];
    }
    Some(trim_end(trim_start(rest)))
}

/// The figures of `smaps_rollup` nodesleuth uses, in bytes. `None`: the key was absent (an older kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollup {
    pub rss: Option<u64>,
    pub pss: Option<u64>,
    pub anonymous: Option<u64>,
    pub lazy_free: Option<u64>,
    pub anon_huge_pages: Option<u64>,
    pub swap: Option<u64>,
    pub swap_pss: Option<u64>,
    /// Lines whose key is not one of the above (kernels add keys); counted, not an error.
    pub other_keys: u32,
}

/// Parses `smaps_rollup`. The header line (`…-… ---p 00000000 00:00 0 [rollup]`) is skipped. Good lines fill
/// `out` even when others are malformed; `Err` describes the malformed ones.
pub fn parse_rollup(text: &[u8], out: &mut Rollup) -> Result<(), Malformed> {
    *out = Rollup::default();
    let mut bad = BadLines::default();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = i as u32 + 1;
        if i == 0 && mapping_header(line).is_some() {
            continue;
        }
        match kb_line(line) {
            Ok(None) => {}
            Ok(Some((key, bytes))) => {
                let slot = match key {
                    b"Rss" => &mut out.rss,
                    b"Pss" => &mut out.pss,
                    b"Anonymous" => &mut out.anonymous,
                    b"LazyFree" => &mut out.lazy_free,
                    b"AnonHugePages" => &mut out.anon_huge_pages,
                    b"Swap" => &mut out.swap,
                    b"SwapPss" => &mut out.swap_pss,
                    _ => {
                        out.other_keys += 1;
                        continue;
                    }
                };
                *slot = Some(bytes);
            }
            Err(e) => bad.add(line_no, e),
        }
    }
    bad.0.map_or(Ok(()), Err)
}

/// The memory figures of `/proc/<pid>/status`, in bytes. Kernel threads have none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusMemory {
    pub vm_rss: Option<u64>,
    pub rss_anon: Option<u64>,
    pub rss_file: Option<u64>,
    pub rss_shmem: Option<u64>,
    pub vm_hwm: Option<u64>,
    pub vm_swap: Option<u64>,
    /// `Kthread:` (printed by recent kernels, 6.18 among them): `Some(true)` for kernel threads.
    pub kthread: Option<bool>,
}

/// Parses `status`. Lines of other formats are ignored; a malformed value of one of the memory keys is an error
/// (the other keys are still filled).
pub fn parse_status(text: &[u8], out: &mut StatusMemory) -> Result<(), Malformed> {
    *out = StatusMemory::default();
    let mut bad = BadLines::default();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let slot = match &line[..colon] {
            b"VmRSS" => &mut out.vm_rss,
            b"RssAnon" => &mut out.rss_anon,
            b"RssFile" => &mut out.rss_file,
            b"RssShmem" => &mut out.rss_shmem,
            b"VmHWM" => &mut out.vm_hwm,
            b"VmSwap" => &mut out.vm_swap,
            b"Kthread" => {
                out.kthread = match trim_end(trim_start(&line[colon + 1..])) {
                    b"1" => Some(true),
                    b"0" => Some(false),
                    _ => None,
                };
                continue;
            }
            _ => continue,
        };
        match kb_line(line) {
            Ok(Some((_, bytes))) => *slot = Some(bytes),
            Ok(None) => {}
            Err(e) => bad.add(i as u32 + 1, e),
        }
    }
    bad.0.map_or(Ok(()), Err)
}

/// What nodesleuth takes from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat<'a> {
    /// The command name (`comm`, at most 15 bytes; raw bytes, possibly not UTF-8).
    pub comm: &'a [u8],
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X`, …
    pub state: u8,
    /// Field 9: `PF_*` flags.
    pub flags: u64,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
    /// Fields 14 + 15: user + system CPU time of the whole thread group, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 20: threads in the thread group.
    pub threads: u64,
    /// Field 23: virtual memory size in bytes.
    pub vsize: u64,
    /// Field 24: resident pages (anonymous + file + shmem, the kernel's counters).
    pub rss_pages: u64,
}

/// `PF_KTHREAD`: the task is a kernel thread (include/linux/sched.h).
pub const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat<'_> {
    /// Kernel threads have no address space of their own.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parses `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so it runs from the first
/// `(` to the last `)`.
pub fn parse_stat(text: &[u8]) -> Option<Stat<'_>> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = &text[open + 1..close];
    // Fields after the name, starting with field 3 (state); field n is at index n - 3.
    let mut fields = text[close + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let flags = number(fields.nth(5)?)?; // 9
    let utime = number(fields.nth(4)?)?; // 14
    let stime = number(fields.next()?)?; // 15
    let threads = number(fields.nth(4)?)?; // 20
    let start_time = number(fields.nth(1)?)?; // 22
    let vsize = number(fields.next()?)?; // 23
    let rss_pages = number(fields.next()?)?; // 24
    Some(Stat { comm, state, flags, start_time, cpu_ticks: utime.saturating_add(stime), threads, vsize, rss_pages })
}

/// The first field of `/proc/<pid>/schedstat`: nanoseconds the task (the thread-group leader, for a pid
/// directory) has run on a CPU.
pub fn schedstat_runtime(text: &[u8]) -> Option<u64> {
    number(text.split(|b| b.is_ascii_whitespace()).next()?)
}

fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in s {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cat /proc/self/smaps_rollup`, Linux 6.18 (x86_64).
    const ROLLUP_6_18: &str = "\
564afefbd000-7ffdd1d91000 ---p 00000000 00:00 0                          [rollup]
Rss:                1764 kB
Pss:                 340 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Pss_File:            228 kB
Pss_Shmem:             0 kB
Shared_Clean:       1612 kB
Shared_Dirty:          0 kB
Private_Clean:        40 kB
Private_Dirty:       112 kB
Referenced:         1764 kB
Anonymous:           112 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
";

    /// The test helper after `madvise(MADV_FREE)` of 256 MiB, Linux 6.18 (x86_64); other lines as above.
    const ROLLUP_6_18_LAZYFREE: &str = "\
55d6c3a2b000-7ffc4e3f2000 ---p 00000000 00:00 0                          [rollup]
Rss:              263428 kB
Anonymous:        262248 kB
LazyFree:         262136 kB
AnonHugePages:         0 kB
";

    /// The key set of Linux 4.14, the first kernel with `smaps_rollup` (no `Pss_Anon`/`Pss_File`/`Pss_Shmem`,
    /// `Pss_Dirty`, `KSM`, `FilePmdMapped`); reconstructed from that kernel's `show_smap` (values made up),
    /// since no 4.14 machine is at hand.
    const ROLLUP_4_14_KEYS: &str = "\
00400000-7ffc8a1ff000 ---p 00000000 00:00 0                              [rollup]
Rss:                 884 kB
Pss:                 101 kB
Shared_Clean:        772 kB
Shared_Dirty:          0 kB
Private_Clean:         4 kB
Private_Dirty:       108 kB
Referenced:          884 kB
Anonymous:           108 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                 12 kB
SwapPss:              12 kB
Locked:                0 kB
";

    #[test]
    fn rollup_of_linux_6_18() {
        let mut r = Rollup::default();
        parse_rollup(ROLLUP_6_18.as_bytes(), &mut r).unwrap();
        assert_eq!(r.rss, Some(1764 * 1024));
        assert_eq!(r.pss, Some(340 * 1024));
        assert_eq!(r.anonymous, Some(112 * 1024));
        assert_eq!(r.lazy_free, Some(0));
        assert_eq!(r.swap, Some(0));
        assert_eq!(r.swap_pss, Some(0));
        assert_eq!(r.anon_huge_pages, Some(0));
        // Pss_Dirty, Pss_Anon, Pss_File, Pss_Shmem, Shared_*, Private_*, Referenced, KSM, *PmdMapped, *_Hugetlb,
        // Locked.
        assert_eq!(r.other_keys, 15);

        parse_rollup(ROLLUP_6_18_LAZYFREE.as_bytes(), &mut r).unwrap();
        assert_eq!(r.lazy_free, Some(262136 * 1024));
        assert_eq!(r.swap, None, "absent keys stay None");
    }

    #[test]
    fn rollup_of_an_older_kernel_and_unknown_future_keys() {
        let mut r = Rollup::default();
        parse_rollup(ROLLUP_4_14_KEYS.as_bytes(), &mut r).unwrap();
        assert_eq!((r.rss, r.swap, r.lazy_free), (Some(884 * 1024), Some(12 * 1024), Some(0)));
        let future = format!("{ROLLUP_6_18}Some_New_Key:       42 kB\n");
        parse_rollup(future.as_bytes(), &mut r).unwrap();
        assert_eq!(r.other_keys, 16);
        assert_eq!(r.rss, Some(1764 * 1024));
    }

    #[test]
    fn malformed_rollup_keeps_the_good_lines() {
        let text =
            "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  100 kB\nPss: 12x kB\ngarbage\nLazyFree: 40 kB\nSwap: 7\n";
        let mut r = Rollup::default();
        let err = parse_rollup(text.as_bytes(), &mut r).unwrap_err();
        assert_eq!(err, Malformed { line: 3, error: LineError::BadNumber, count: 3 });
        assert_eq!(err.to_string(), "3 malformed line(s) skipped, first at line 3: value is not a number");
        assert_eq!((r.rss, r.lazy_free, r.pss, r.swap), (Some(102400), Some(40960), None, None));
        // Truncated mid-file (a read cut short): what was read counts.
        parse_rollup(&ROLLUP_6_18.as_bytes()[..200], &mut r).unwrap_err();
        assert_eq!(r.rss, Some(1764 * 1024));
        // Overflow is rejected, not wrapped.
        assert!(parse_rollup(b"Rss: 99999999999999999999 kB\n", &mut r).is_err());
        assert!(parse_rollup(b"Rss: 18014398509481984 kB\n", &mut r).is_err());
        assert_eq!(parse_rollup(b"", &mut r), Ok(()));
    }

    #[test]
    fn kb_lines() {
        assert_eq!(kb_line(b"VmRSS:\t   11824 kB"), Ok(Some((&b"VmRSS"[..], 11824 * 1024))));
        assert_eq!(kb_line(b"Rss: 0 kB  "), Ok(Some((&b"Rss"[..], 0))));
        assert_eq!(kb_line(b"   "), Ok(None));
        assert_eq!(kb_line(b"Name:\tbash"), Err(LineError::BadNumber));
        assert_eq!(kb_line(b"Threads:\t13"), Err(LineError::NoUnit));
        assert_eq!(kb_line(b"Rss 12 kB"), Err(LineError::NoColon));
        assert_eq!(kb_line(b"Rss: 12 MB"), Err(LineError::NoUnit));
        assert_eq!(kb_line(b"Rss: 12kB"), Err(LineError::BadNumber));
    }

    /// `/proc/1/status` (memory part and the lines around it), Linux 6.18.
    const STATUS_6_18: &str = "Name:\tprocess_api\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\nNgid:\t0\nPid:\t1\n\
PPid:\t0\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t512\nGroups:\t \nNStgid:\t1\nNSpid:\t1\n\
NSpgid:\t0\nNSsid:\t0\nKthread:\t0\nVmPeak:\t   50028 kB\nVmSize:\t   40984 kB\nVmLck:\t   40952 kB\n\
VmPin:\t       0 kB\nVmHWM:\t   17528 kB\nVmRSS:\t   11824 kB\nRssAnon:\t    5364 kB\nRssFile:\t       8 kB\n\
RssShmem:\t    6452 kB\nVmData:\t   33468 kB\nVmStk:\t     132 kB\nVmExe:\t    5320 kB\nVmLib:\t       8 kB\n\
VmPTE:\t     124 kB\nVmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\nCoreDumping:\t0\nTHP_enabled:\t1\n\
untag_mask:\t0xffffffffffffffff\nThreads:\t13\nSigQ:\t0/96365\nCpus_allowed_list:\t0-1\n\
voluntary_ctxt_switches:\t354\n";

    /// `/proc/2/status` (kthreadd) memory part, Linux 6.18: no Vm*/Rss* lines at all.
    const STATUS_KTHREAD_6_18: &str = "Name:\tkthreadd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t2\nNgid:\t0\n\
Pid:\t2\nPPid:\t0\nKthread:\t1\nThreads:\t1\nSigQ:\t0/96365\n";

    #[test]
    fn status_of_linux_6_18() {
        let mut s = StatusMemory::default();
        parse_status(STATUS_6_18.as_bytes(), &mut s).unwrap();
        assert_eq!(
            s,
            StatusMemory {
                vm_rss: Some(11824 * 1024),
                rss_anon: Some(5364 * 1024),
                rss_file: Some(8 * 1024),
                rss_shmem: Some(6452 * 1024),
                vm_hwm: Some(17528 * 1024),
                vm_swap: Some(0),
                kthread: Some(false),
            }
        );
        parse_status(STATUS_KTHREAD_6_18.as_bytes(), &mut s).unwrap();
        assert_eq!(s, StatusMemory { kthread: Some(true), ..StatusMemory::default() });
        let bad = STATUS_6_18.replace("VmRSS:\t   11824 kB", "VmRSS:\t   11824");
        assert_eq!(parse_status(bad.as_bytes(), &mut s).unwrap_err().line, 23);
        assert_eq!((s.vm_rss, s.rss_anon), (None, Some(5364 * 1024)));
    }

    #[test]
    fn stat_lines() {
        // `cat /proc/2/stat`, Linux 6.18: kthreadd, PF_KTHREAD set.
        let k =
            b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 1 0 0 0 20 0 1 0 25 0 0 18446744073709551615 0 0 0 0 0 0 0 \
2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(k).unwrap();
        assert_eq!((s.comm, s.state, s.start_time), (&b"kthreadd"[..], b'S', 25));
        assert!(s.is_kernel_thread());
        // A user process whose name has spaces and parentheses.
        let u = b"4242 (my (odd) app) R 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 1234567 1024 100 \
18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(u).unwrap();
        assert_eq!((s.comm, s.state, s.start_time), (&b"my (odd) app"[..], b'R', 1234567));
        assert_eq!((s.cpu_ticks, s.vsize, s.rss_pages), (0, 1024, 100));
        // `cat /proc/self/stat` of a busy process, Linux 6.18: utime 25, stime 14.
        let c = b"15678 (cat) R 1 15678 15678 0 -1 4194304 94 0 0 0 25 14 0 0 20 0 1 0 8845123 8523776 418 \
18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(c).unwrap();
        assert_eq!((s.cpu_ticks, s.start_time, s.vsize, s.rss_pages, s.threads), (39, 8845123, 8523776, 418, 1));
        // `cat /proc/self/schedstat`, Linux 6.18.
        assert_eq!(schedstat_runtime(b"1043381 21312 3\n"), Some(1043381));
        assert_eq!(schedstat_runtime(b"x 1 2\n"), None);
        assert!(!s.is_kernel_thread());
        assert_eq!(parse_stat(b"1 (x) S 1 2"), None);
        assert_eq!(parse_stat(b")(x"), None);
    }

    #[test]
    fn mapping_headers() {
        assert_eq!(
            mapping_header(b"55d0c3a2b000-55d0c3a4c000 rw-p 00000000 00:00 0                          [heap]"),
            Some(&b"[heap]"[..])
        );
        assert_eq!(
            mapping_header(b"7f1c2a000000-7f1c2a021000 r--p 00000000 08:01 1835 /usr/lib/x86_64-linux-gnu/ld a.so"),
            Some(&b"/usr/lib/x86_64-linux-gnu/ld a.so"[..])
        );
        assert_eq!(mapping_header(b"7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 "), Some(&b""[..]));
        assert_eq!(mapping_header(b"Rss:  4 kB"), None);
        assert_eq!(mapping_header(b"VmFlags: rd wr mr mw me ac sd"), None);
        assert_eq!(mapping_header(b"-1 x"), None);
    }
}

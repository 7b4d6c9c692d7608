//! What the `output` collector reads about a process's standard output: where fd 1/2 point (the text of the
//! `/proc/<pid>/fd/<n>` link), what a sleeping thread is doing (`/proc/<pid>/task/<tid>/syscall`), how much the
//! process has written (`/proc/<pid>/io`), and the tail of a container's CRI log file.
//!
//! Kernel samples below are from Linux 6.18 (x86_64), taken from a shell blocked writing to a terminal nobody
//! reads (`s="a"; while true; do echo $s; s="a$s"; done` with stdout on a pty slave).

/// What a standard stream points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A terminal: `/dev/pts/N` (a pseudo-terminal slave, `tty: true` containers), `/dev/ttyN`, `/dev/console`.
    Tty,
    /// An anonymous pipe or FIFO (`pipe:[ino]`; containerd/CRI-O hand containers pipes or FIFOs).
    Pipe,
    /// A regular file (or a named FIFO/other path that is not a device).
    File,
    /// A socket (`socket:[ino]`; systemd services log to journald through one).
    Socket,
    /// `/dev/null`.
    Null,
    /// Anything else (another device, an anonymous inode, a deleted file's odd name).
    Other,
}

impl Target {
    /// The `target` / label value.
    pub fn label(self) -> &'static str {
        match self {
            Target::Tty => "tty",
            Target::Pipe => "pipe",
            Target::File => "file",
            Target::Socket => "socket",
            Target::Null => "null",
            Target::Other => "other",
        }
    }
}

/// Classifies the text of an fd link (`readlink /proc/<pid>/fd/1`). A named FIFO (`mkfifo`, as CRI-O and
/// containerd create for a container's stdio) shows as its path: the caller knows from the file type, so it
/// passes `is_fifo`.
pub fn classify_fd_link(link: &[u8], is_fifo: bool) -> Target {
    if link.starts_with(b"pipe:[") || is_fifo {
        return Target::Pipe;
    }
    if link.starts_with(b"socket:[") {
        return Target::Socket;
    }
    if link == b"/dev/null" {
        return Target::Null;
    }
    if link.starts_with(b"/dev/pts/")
        || link == b"/dev/console"
        || link == b"/dev/tty"
        || (link.starts_with(b"/dev/tty") && link.len() > 8 && link[8..].iter().all(|b| b.is_ascii_alphanumeric()))
    {
        return Target::Tty;
    }
    if link.starts_with(b"/dev/") || link.starts_with(b"anon_inode:") || !link.starts_with(b"/") {
        return Target::Other;
    }
    Target::File
}

/// The system call a sleeping thread is in and its first argument (for `write`, the fd), from
/// `/proc/<pid>/task/<tid>/syscall`: `1 0x1 0x55da86c21e80 0xb6 0x0 0x2 0x55da… 0x7ffd… 0x7f3a…` (number, six
/// arguments, stack pointer, program counter). `None` for a running thread (`running`), a thread not in a system
/// call (`-1 0x… 0x…`) and anything malformed.
pub fn syscall_nr_arg0(text: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let nr: u64 = fields.next()?.parse().ok()?;
    let arg0 = fields.next()?.strip_prefix("0x")?;
    let arg0 = u64::from_str_radix(arg0, 16).ok()?;
    Some((nr, arg0))
}

/// System call numbers that write to a file descriptor given as the first argument: `write`, `writev`,
/// `pwrite64`, `pwritev`, `pwritev2`, per architecture (`arch/x86/entry/syscalls/syscall_64.tbl`,
/// `include/uapi/asm-generic/unistd.h` for aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this crate is built for (`None` elsewhere: no write is recognized).
    pub fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    pub fn is_write(self, nr: u64) -> bool {
        match self {
            // write 1, pwrite64 18, writev 20, pwritev 296, pwritev2 328
            Arch::X86_64 => matches!(nr, 1 | 18 | 20 | 296 | 328),
            // write 64, writev 66, pwrite64 68, pwritev 70, pwritev2 287
            Arch::Aarch64 => matches!(nr, 64 | 66 | 68 | 70 | 287),
        }
    }
}

/// The `wchar` field of `/proc/<pid>/io` (bytes the process passed to write-like calls that returned).
pub fn io_wchar(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    text.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok())
}

/// Counts of a CRI log tail (`<RFC 3339 time> <stdout|stderr> <P|F> <text>` per line, kubelet's
/// `pkg/kubelet/kuberuntime/logs` format): `partial` lines are `P` records (a piece of a line the runtime split,
/// at 16 KiB in containerd), `full` ones `F`. The first line of a tail read from the middle of a file is cut and
/// is skipped (`from_start` false); lines that are not CRI records are counted in `other`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CriTail {
    pub partial: u64,
    pub full: u64,
    pub other: u64,
}

pub fn cri_tail(bytes: &[u8], from_start: bool) -> CriTail {
    let mut t = CriTail::default();
    let mut lines = bytes.split(|&b| b == b'\n');
    if !from_start {
        lines.next();
    }
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let mut f = line.splitn(4, |&b| b == b' ');
        let (Some(time), Some(stream), Some(tag)) = (f.next(), f.next(), f.next()) else {
            t.other += 1;
            continue;
        };
        let is_time = time.len() >= 20 && time[4] == b'-' && time[10] == b'T';
        if !is_time || !(stream == b"stdout" || stream == b"stderr") {
            t.other += 1;
            continue;
        }
        // The tag may carry more flags after the first, separated by ':' (kubelet reads only the first).
        match tag.split(|&b| b == b':').next() {
            Some(b"P") => t.partial += 1,
            Some(b"F") => t.full += 1,
            _ => t.other += 1,
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_links() {
        assert_eq!(classify_fd_link(b"/dev/pts/0", false), Target::Tty);
        assert_eq!(classify_fd_link(b"/dev/console", false), Target::Tty);
        assert_eq!(classify_fd_link(b"/dev/ttyS0", false), Target::Tty);
        assert_eq!(classify_fd_link(b"/dev/tty", false), Target::Tty);
        assert_eq!(classify_fd_link(b"pipe:[1401554]", false), Target::Pipe);
        assert_eq!(classify_fd_link(b"/run/containerd/io/abc-stdout", true), Target::Pipe);
        assert_eq!(classify_fd_link(b"socket:[1507716]", false), Target::Socket);
        assert_eq!(classify_fd_link(b"/dev/null", false), Target::Null);
        assert_eq!(classify_fd_link(b"/var/log/app.log", false), Target::File);
        assert_eq!(classify_fd_link(b"/var/log/app.log (deleted)", false), Target::File);
        assert_eq!(classify_fd_link(b"anon_inode:[eventfd]", false), Target::Other);
        assert_eq!(classify_fd_link(b"/dev/zero", false), Target::Other);
        assert_eq!(classify_fd_link(b"/dev/ttyfoo/x", false), Target::Other);
        assert_eq!(classify_fd_link(b"", false), Target::Other);
    }

    #[test]
    fn syscall_lines_of_linux_6_18() {
        // A shell blocked writing 0xb6 bytes to fd 1 (a full pty), and one reading fd 0 of a terminal.
        let w = b"1 0x1 0x55da86c21e80 0xb6 0x0 0x2 0x55da86c21e80 0x7ffd2a6f0a08 0x7f3a1c0f1a31\n";
        assert_eq!(syscall_nr_arg0(w), Some((1, 1)));
        let r = b"0 0x0 0x7fffd6a07a0f 0x1 0x8 0x2 0x1 0x7ffd 0x7f3a\n";
        assert_eq!(syscall_nr_arg0(r), Some((0, 0)));
        assert_eq!(syscall_nr_arg0(b"running\n"), None);
        assert_eq!(syscall_nr_arg0(b"-1 0x7ffd 0x7f3a\n"), None);
        assert_eq!(syscall_nr_arg0(b""), None);
        assert_eq!(syscall_nr_arg0(b"1 zz"), None);
        assert!(Arch::X86_64.is_write(1) && Arch::X86_64.is_write(20) && !Arch::X86_64.is_write(0));
        assert!(Arch::Aarch64.is_write(64) && !Arch::Aarch64.is_write(1) && !Arch::Aarch64.is_write(63));
    }

    #[test]
    fn io_of_linux_6_18() {
        let io = b"rchar: 1948\nwchar: 33740\nsyscr: 7\nsyscw: 370\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n";
        assert_eq!(io_wchar(io), Some(33740));
        assert_eq!(io_wchar(b"rchar: 1\n"), None);
        assert_eq!(io_wchar(b"wchar: x\n"), None);
    }

    #[test]
    fn cri_tails() {
        let log = b"2026-12-01T21:00:00.000000001Z stdout P aaaa\n\
2026-12-01T21:00:00.000000002Z stdout P aaaa\n\
2026-12-01T21:00:00.000000003Z stdout F aa\n\
2026-12-01T21:00:01.5+08:00 stderr F short\n\
not a cri line\n\
2026-12-01T21:00:02Z stdout X:y odd\n";
        assert_eq!(cri_tail(log, true), CriTail { partial: 2, full: 2, other: 2 });
        // From the middle of the file: the first (cut) line is skipped.
        assert_eq!(cri_tail(&log[10..], false), CriTail { partial: 1, full: 2, other: 2 });
        assert_eq!(cri_tail(b"", false), CriTail::default());
        assert_eq!(cri_tail(b"2026-12-01T21:00:00Z stdout P:x more", true).partial, 1);
    }
}

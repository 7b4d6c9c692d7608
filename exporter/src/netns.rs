//! Network-namespace edge: naming namespaces and opening sockets inside them.
//!
//! A socket belongs to the namespace it was created in. To dump another namespace's sockets over netlink we create
//! the netlink socket there: `setns(CLONE_NEWNET)` on a short-lived thread of our own (setns changes only the
//! calling thread, and a thread that exits cannot leak a foreign namespace into the runtime's pool), then hand the
//! socket back. Needs CAP_SYS_ADMIN; callers fall back to procfs text when it fails.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Names of namespaces that `ip netns add` bind-mounted under `<rootfs>/run/netns`, by inode.
pub fn named_namespaces(rootfs: &Path) -> HashMap<u64, String> {
    let dir = rootfs.join("run/netns");
    let Ok(rd) = std::fs::read_dir(&dir) else { return HashMap::new() };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // stat follows the bind mount to the nsfs inode; a plain file (fixture trees) has an unrelated inode,
            // which simply matches nothing.
            let ino = std::fs::metadata(e.path()).ok()?.ino();
            Some((ino, name))
        })
        .collect()
}

/// Creates one socket per namespace, each inside the namespace that `ns_path` (a `/proc/<pid>/ns/net` file)
/// refers to. Results are in request order.
pub fn sockets_in(requests: &[PathBuf], domain: i32, kind: i32, protocol: i32) -> Vec<io::Result<OwnedFd>> {
    run_in(requests, move || {
        // SAFETY: plain socket(2) call; the returned descriptor is owned exactly once below.
        let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// Runs `f` once inside each namespace (`/proc/<pid>/ns/net` paths), on a private thread, and returns its results
/// in request order. `f` creates something bound to the namespace it runs in (a socket, a BPF iterator).
pub fn run_in<T: Send + 'static>(
    requests: &[PathBuf],
    f: impl Fn() -> io::Result<T> + Send + 'static,
) -> Vec<io::Result<T>> {
    let n = requests.len();
    let requests = requests.to_vec();
    let worker = std::thread::Builder::new().name("nodesleuth-setns".into()).spawn(move || {
        let home = File::open("/proc/thread-self/ns/net")?;
        let mut out = Vec::with_capacity(requests.len());
        for path in &requests {
            out.push(File::open(path).and_then(|ns| setns(&ns)).and_then(|()| f()));
            // Always return home before the next request; if that fails the thread's state is unknown, so the
            // remaining requests fail rather than run in the wrong namespace.
            if let Err(e) = setns(&home) {
                while out.len() < requests.len() {
                    out.push(Err(io::Error::new(e.kind(), format!("cannot return to own namespace: {e}"))));
                }
                break;
            }
        }
        Ok::<_, io::Error>(out)
    });
    match worker.map(|h| h.join()) {
        Ok(Ok(Ok(v))) => v,
        Ok(Ok(Err(e))) => (0..n).map(|_| Err(io::Error::new(e.kind(), e.to_string()))).collect(),
        _ => (0..n).map(|_| Err(io::Error::other("setns worker thread failed"))).collect(),
    }
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on a valid namespace descriptor; affects only this thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

//! Netlink `sock_diag` I/O: sends a TCP dump request on a socket (possibly created inside another namespace by
//! [`crate::netns::sockets_in`]) and feeds each decoded socket to a callback. Decoding is
//! `nodesleuth_parse::inet_diag`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nodesleuth_parse::inet_diag::{self, DiagMessage, DiagSocket};

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("netlink send: {0}")]
    Send(io::Error),
    #[error("netlink recv: {0}")]
    Recv(io::Error),
    #[error("kernel refused the sock_diag dump: {0}")]
    Kernel(io::Error),
    #[error("malformed sock_diag reply: {0}")]
    Malformed(#[from] inet_diag::DiagError),
}

/// Creates a `NETLINK_SOCK_DIAG` socket in the caller's namespace.
pub fn open_local() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); ownership is taken once.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, inet_diag::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Dumps TCP sockets of both families in the given states: one walk of the kernel's socket hash where the kernel
/// serves `TCPDIAG_GETSOCK` (all current kernels), else one `SOCK_DIAG_BY_FAMILY` dump per family. A kernel
/// without IPv6 answers the IPv6 dump with ENOENT, which means "no IPv6 sockets".
pub fn dump_tcp(
    sock: &OwnedFd,
    states: u32,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&DiagSocket),
) -> Result<(), DumpError> {
    match request(sock, &inet_diag::tcp_dump_request_all_families(states, 1), buf, &mut f) {
        Ok(()) => return Ok(()),
        Err(DumpError::Kernel(e)) => tracing::debug!(error = %e, "TCPDIAG_GETSOCK refused; dumping per family"),
        Err(e) => return Err(e),
    }
    request(sock, &inet_diag::tcp_dump_request(inet_diag::AF_INET, states, 2), buf, &mut f)?;
    match request(sock, &inet_diag::tcp_dump_request(inet_diag::AF_INET6, states, 3), buf, &mut f) {
        Err(DumpError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Dumps TCP sockets in `states` whose remote endpoint is one of `endpoints`, filtered by the kernel.
pub fn dump_tcp_filtered(
    sock: &OwnedFd,
    states: u32,
    endpoints: &[std::net::SocketAddr],
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&DiagSocket),
) -> Result<(), DumpError> {
    let Some(filter) = inet_diag::remote_endpoints_filter(endpoints) else {
        return Ok(());
    };
    request(sock, &inet_diag::tcp_dump_request_filtered(states, 4, &filter), buf, &mut f)
}

fn request(sock: &OwnedFd, req: &[u8], buf: &mut Vec<u8>, f: &mut impl FnMut(&DiagSocket)) -> Result<(), DumpError> {
    let fd = sock.as_raw_fd();
    set_recv_timeout(fd, 5);
    send_to_kernel(fd, req).map_err(DumpError::Send)?;
    buf.resize(64 * 1024, 0);
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(DumpError::Recv(e));
        }
        if n == 0 {
            return Err(DumpError::Recv(io::Error::new(io::ErrorKind::UnexpectedEof, "netlink socket closed")));
        }
        for msg in inet_diag::messages(&buf[..n as usize]) {
            match msg? {
                DiagMessage::Socket(s) => f(&s),
                DiagMessage::Done => return Ok(()),
                DiagMessage::Error(errno) => return Err(DumpError::Kernel(io::Error::from_raw_os_error(errno))),
                DiagMessage::Other(_) => {}
            }
        }
    }
}

/// Sends one request and returns the first reply datagram (for request/response netlink families).
pub fn roundtrip(sock: &OwnedFd, req: &[u8]) -> io::Result<Vec<u8>> {
    let fd = sock.as_raw_fd();
    set_recv_timeout(fd, 2);
    send_to_kernel(fd, req)?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Sends one netlink message to the kernel (port 0).
fn send_to_kernel(fd: i32, req: &[u8]) -> io::Result<()> {
    // SAFETY: the request buffer is valid for the call; the destination is the kernel (all-zero sockaddr_nl).
    let sent = unsafe {
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            fd,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn set_recv_timeout(fd: i32, seconds: i64) {
    let tv = libc::timeval { tv_sec: seconds, tv_usec: 0 };
    // SAFETY: setsockopt with a correctly sized timeval. Failure only loses the timeout, which the collector
    // deadline still bounds.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

//! `NETLINK_SOCK_DIAG` / `inet_diag`: the binary socket dump `ss` uses (`linux/inet_diag.h`, `linux/sock_diag.h`).
//!
//! Pure encoding of the dump request and decoding of the kernel's replies; the exporter owns the socket. Compared
//! with `/proc/net/tcp` the kernel can filter by state before formatting anything, and for a listener it reports
//! the backlog limit (`idiag_wqueue`, what `ss -lnt` shows as Send-Q) beside the queue length (`idiag_rqueue`).
//! Available since Linux 2.6.14 (`inet_diag_req_v2`, used here, since 3.3). Integers are host-endian, ports and
//! addresses network-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink::{self, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN};
use crate::tcp_state::TcpState;

pub const NETLINK_SOCK_DIAG: i32 = 4;
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The original `inet_diag` request type for TCP (`struct inet_diag_req`). The kernel serves it with the address
/// family unset, so one dump walks the socket hash once for IPv4 and IPv6 together instead of once per family.
pub const TCPDIAG_GETSOCK: u16 = 18;
const INET_DIAG_MSG_LEN: usize = 72;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

/// Encodes a TCP dump request for one address family and a set of states (bit `1 << state`).
pub fn tcp_dump_request(family: u8, states: u32, seq: u32) -> [u8; 72] {
    let mut req = [0u8; 72];
    netlink::write_header(&mut req, 72, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq);
    // nlmsg_pid 0: addressed to the kernel.
    req[16] = family;
    req[17] = IPPROTO_TCP;
    req[18] = 0; // idiag_ext: no extensions, the smallest reply per socket.
    req[20..24].copy_from_slice(&states.to_ne_bytes());
    req
}

/// Encodes a TCP dump request of both address families in one walk (`TCPDIAG_GETSOCK`, `struct inet_diag_req`:
/// family, src_len, dst_len, ext, sockid (48 bytes), states, dbs).
pub fn tcp_dump_request_all_families(states: u32, seq: u32) -> [u8; 76] {
    let mut req = [0u8; 76];
    netlink::write_header(&mut req, 76, TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, seq);
    req[16] = AF_INET; // ignored by the kernel for dumps (it sets AF_UNSPEC), kept valid for old kernels
    req[68..72].copy_from_slice(&states.to_ne_bytes());
    req
}

/// `INET_DIAG_REQ_BYTECODE`: the request attribute carrying a socket filter the kernel runs per socket.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_D_COND: u8 = 8;

/// Filter bytecode accepting sockets whose remote endpoint is one of `endpoints` (address and port), for
/// `sock_diag` requests. `None` when there are no endpoints or too many for one netlink attribute (callers split
/// the list). IPv4 endpoints also match IPv4-mapped IPv6 sockets (the kernel compares the mapped part).
///
/// Layout: for each endpoint a `D_COND` (true → the next op, false → skip it) followed by a `JMP` to the end
/// (accept); after the last, a `JMP` past the end (reject). Jump targets are what `inet_diag_bc_audit` accepts.
pub fn remote_endpoints_filter(endpoints: &[std::net::SocketAddr]) -> Option<Vec<u8>> {
    if endpoints.is_empty() {
        return None;
    }
    let cond_len = |e: &std::net::SocketAddr| 4 + 8 + if e.is_ipv4() { 4 } else { 16 };
    let total: usize = endpoints.iter().map(|e| cond_len(e) + 4).sum::<usize>() + 4;
    if total > MAX_FILTER_LEN {
        return None;
    }
    let mut bc = Vec::with_capacity(total);
    for e in endpoints {
        let len = cond_len(e);
        bc.push(INET_DIAG_BC_D_COND);
        bc.push(len as u8); // yes: the JMP that follows
        bc.extend_from_slice(&((len + 4) as u16).to_ne_bytes()); // no: the next endpoint (or the final reject)
        let (family, prefix) = if e.is_ipv4() { (AF_INET, 32u8) } else { (AF_INET6, 128u8) };
        bc.extend_from_slice(&[family, prefix, 0, 0]);
        bc.extend_from_slice(&i32::from(e.port()).to_ne_bytes());
        match e.ip() {
            std::net::IpAddr::V4(a) => bc.extend_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => bc.extend_from_slice(&a.octets()),
        }
        let to_end = total - bc.len();
        bc.extend_from_slice(&[INET_DIAG_BC_JMP, 4]);
        bc.extend_from_slice(&(to_end as u16).to_ne_bytes());
    }
    bc.extend_from_slice(&[INET_DIAG_BC_JMP, 4]);
    bc.extend_from_slice(&8u16.to_ne_bytes());
    debug_assert_eq!(bc.len(), total);
    Some(bc)
}

/// Largest filter that fits a netlink attribute with room to spare (the length field is 16 bits).
pub const MAX_FILTER_LEN: usize = 60_000;

/// A `TCPDIAG_GETSOCK` dump request of both families carrying a filter.
pub fn tcp_dump_request_filtered(states: u32, seq: u32, filter: &[u8]) -> Vec<u8> {
    let base = tcp_dump_request_all_families(states, seq);
    let attr_len = 4 + filter.len();
    let total = base.len() + ((attr_len + 3) & !3);
    let mut req = Vec::with_capacity(total);
    req.extend_from_slice(&base);
    req[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
    req.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    req.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    req.extend_from_slice(filter);
    req.resize(total, 0);
    req
}

/// The `idiag_states` mask that selects every listed state. SYN_RECV also selects the kernel's request sockets.
pub fn states_mask(states: &[TcpState]) -> u32 {
    states.iter().fold(0, |m, s| m | s.mask() | if *s == TcpState::SynRecv { 1 << 12 } else { 0 })
}

/// One socket of the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSocket {
    pub state: TcpState,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// Receive queue bytes; for a listener, the current accept-queue length.
    pub rqueue: u32,
    /// Send queue bytes; for a listener, the accept-queue limit (the backlog).
    pub wqueue: u32,
    pub uid: u32,
    /// `idiag_timer`: 3 marks a timewait minisocket (TIME_WAIT, or an orphaned FIN_WAIT2 the kernel has turned
    /// into one).
    pub timer: u8,
    pub inode: u64,
}

/// What one netlink message of a dump reply holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagMessage {
    Socket(DiagSocket),
    /// `NLMSG_DONE`: the dump is complete.
    Done,
    /// `NLMSG_ERROR` with a non-zero error: the kernel refused the request (errno, positive).
    Error(i32),
    /// A message type this parser does not use (skipped).
    Other(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DiagError {
    #[error("netlink message header truncated at byte {0}")]
    TruncatedHeader(usize),
    #[error("netlink message at byte {offset} claims length {len}, beyond the {available} bytes received")]
    BadLength { offset: usize, len: usize, available: usize },
    #[error("inet_diag message at byte {0} is shorter than struct inet_diag_msg")]
    ShortDiagMsg(usize),
    #[error("inet_diag message at byte {offset} has unknown address family {family}")]
    BadFamily { offset: usize, family: u8 },
    #[error("inet_diag message at byte {offset} has unknown TCP state {state}")]
    BadState { offset: usize, state: u8 },
}

/// Iterates over the messages in one `recv` buffer. Stops at the first malformed message (netlink framing is lost
/// after it).
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf, offset: 0, failed: false }
}

pub struct Messages<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

impl Iterator for Messages<'_> {
    type Item = Result<DiagMessage, DiagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let offset = self.offset;
        let rest = &self.buf[offset..];
        let result = decode_one(rest, offset);
        match &result {
            Ok((_, len)) => self.offset += (len + 3) & !3,
            Err(_) => self.failed = true,
        }
        Some(result.map(|(m, _)| m))
    }
}

fn decode_one(rest: &[u8], offset: usize) -> Result<(DiagMessage, usize), DiagError> {
    if rest.len() < NLMSG_HDRLEN {
        return Err(DiagError::TruncatedHeader(offset));
    }
    let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
    let kind = u16::from_ne_bytes([rest[4], rest[5]]);
    if len < NLMSG_HDRLEN || len > rest.len() {
        return Err(DiagError::BadLength { offset, len, available: rest.len() });
    }
    let body = &rest[NLMSG_HDRLEN..len];
    let msg = match kind {
        NLMSG_DONE => DiagMessage::Done,
        NLMSG_ERROR => match netlink::error_code(body).unwrap_or(0) {
            0 => DiagMessage::Other(kind),
            errno => DiagMessage::Error(errno),
        },
        SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => DiagMessage::Socket(decode_socket(body, offset)?),
        other => DiagMessage::Other(other),
    };
    Ok((msg, len))
}

fn decode_socket(b: &[u8], offset: usize) -> Result<DiagSocket, DiagError> {
    if b.len() < INET_DIAG_MSG_LEN {
        return Err(DiagError::ShortDiagMsg(offset));
    }
    let family = b[0];
    let state = TcpState::from_code(b[1]).ok_or(DiagError::BadState { offset, state: b[1] })?;
    let sport = u16::from_be_bytes([b[4], b[5]]);
    let dport = u16::from_be_bytes([b[6], b[7]]);
    let addr = |at: usize| -> Result<IpAddr, DiagError> {
        match family {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))),
            AF_INET6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[at..at + 16]);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            _ => Err(DiagError::BadFamily { offset, family }),
        }
    };
    let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    Ok(DiagSocket {
        state,
        local_addr: addr(8)?,
        local_port: sport,
        remote_addr: addr(24)?,
        remote_port: dport,
        rqueue: u32_at(56),
        wqueue: u32_at(60),
        uid: u32_at(64),
        timer: b[2],
        inode: u64::from(u32_at(68)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a reply message the way the kernel lays out `struct inet_diag_msg`.
    fn socket_msg(family: u8, state: u8, sport: u16, rq: u32, wq: u32, inode: u32) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN + INET_DIAG_MSG_LEN];
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let b = &mut m[NLMSG_HDRLEN..];
        b[0] = family;
        b[1] = state;
        b[4..6].copy_from_slice(&sport.to_be_bytes());
        b[6..8].copy_from_slice(&443u16.to_be_bytes());
        b[8..12].copy_from_slice(&[127, 0, 0, 1]);
        b[24..28].copy_from_slice(&[10, 0, 0, 2]);
        b[56..60].copy_from_slice(&rq.to_ne_bytes());
        b[60..64].copy_from_slice(&wq.to_ne_bytes());
        b[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        b[68..72].copy_from_slice(&inode.to_ne_bytes());
        m
    }

    fn done_msg() -> Vec<u8> {
        let mut m = vec![0u8; 20];
        m[0..4].copy_from_slice(&20u32.to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        m
    }

    #[test]
    fn request_layout_matches_kernel_structs() {
        let r = tcp_dump_request(AF_INET6, states_mask(&[TcpState::Listen, TcpState::SynRecv]), 7);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 20);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!((r[16], r[17]), (AF_INET6, 6));
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), (1 << 10) | (1 << 3) | (1 << 12));
    }

    #[test]
    fn filter_jumps_land_on_ops_or_the_ends() {
        let eps: Vec<std::net::SocketAddr> = vec!["10.96.0.1:443".parse().unwrap(), "[fd00::96:1]:80".parse().unwrap()];
        let bc = remote_endpoints_filter(&eps).unwrap();
        // Walk it as inet_diag_bc_audit does: every jump lands on an op boundary, the end (accept) or end + 4.
        let mut starts = vec![];
        let mut at = 0;
        while at < bc.len() {
            starts.push(at);
            at += if bc[at] == INET_DIAG_BC_D_COND { bc[at + 1] as usize } else { 4 };
        }
        assert_eq!(at, bc.len());
        for &op in &starts {
            let yes = bc[op + 1] as usize;
            let no = u16::from_ne_bytes([bc[op + 2], bc[op + 3]]) as usize;
            for target in [op + yes, op + no] {
                assert!(
                    starts.contains(&target) || target == bc.len() || target == bc.len() + 4,
                    "op at {op} jumps to {target}"
                );
            }
        }
        // The last op rejects (jumps past the end); each endpoint's JMP accepts (jumps to the end).
        let last = *starts.last().unwrap();
        assert_eq!(last + u16::from_ne_bytes([bc[last + 2], bc[last + 3]]) as usize, bc.len() + 4);
        assert_eq!(&bc[8..12], &443i32.to_ne_bytes());
        assert!(remote_endpoints_filter(&[]).is_none());
        let many: Vec<std::net::SocketAddr> =
            (0..5000).map(|i| std::net::SocketAddr::from(([10, 96, (i / 256) as u8, i as u8], 80))).collect();
        assert!(remote_endpoints_filter(&many).is_none(), "too long for one attribute");
        let req = tcp_dump_request_filtered(1 << 1, 4, &bc);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize, req.len());
        assert_eq!(req.len() % 4, 0);
        assert_eq!(u16::from_ne_bytes([req[76], req[77]]) as usize, bc.len() + 4);
    }

    #[test]
    fn compat_request_layout() {
        let r = tcp_dump_request_all_families(states_mask(&[TcpState::CloseWait]), 9);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 76);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), TCPDIAG_GETSOCK);
        assert_eq!(u32::from_ne_bytes(r[68..72].try_into().unwrap()), 1 << 8);
        assert_eq!(u32::from_ne_bytes(r[72..76].try_into().unwrap()), 0, "idiag_dbs");
    }

    #[test]
    fn decodes_listener_and_done() {
        let mut buf = socket_msg(AF_INET, 10, 8080, 3, 128, 4242);
        buf.extend(socket_msg(AF_INET, 8, 8080, 0, 0, 4243));
        buf.extend(done_msg());
        let msgs: Vec<_> = messages(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 3);
        let DiagMessage::Socket(l) = msgs[0] else { panic!("not a socket: {:?}", msgs[0]) };
        assert_eq!((l.state, l.local_port, l.rqueue, l.wqueue, l.inode), (TcpState::Listen, 8080, 3, 128, 4242));
        assert_eq!(l.local_addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((l.remote_addr, l.remote_port), (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443));
        assert!(matches!(msgs[1], DiagMessage::Socket(s) if s.state == TcpState::CloseWait));
        assert_eq!(msgs[2], DiagMessage::Done);
    }

    #[test]
    fn reports_kernel_errors_and_malformed_framing() {
        let mut err = vec![0u8; 36];
        err[0..4].copy_from_slice(&36u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(messages(&err).next(), Some(Ok(DiagMessage::Error(1))));
        // Found by the inet_diag fuzz target: an errno of i32::MIN must not overflow.
        err[16..20].copy_from_slice(&i32::MIN.to_ne_bytes());
        assert_eq!(messages(&err).next(), Some(Ok(DiagMessage::Error(i32::MAX))));

        let mut bad = socket_msg(AF_INET, 10, 1, 0, 0, 1);
        bad[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(matches!(messages(&bad).next(), Some(Err(DiagError::BadLength { .. }))));
        let short = &socket_msg(AF_INET, 10, 1, 0, 0, 1)[..10];
        assert_eq!(messages(short).next(), Some(Err(DiagError::TruncatedHeader(0))));
        let mut fam = socket_msg(99, 10, 1, 0, 0, 1);
        fam[NLMSG_HDRLEN] = 99;
        assert!(matches!(messages(&fam).next(), Some(Err(DiagError::BadFamily { family: 99, .. }))));
        let st = socket_msg(AF_INET, 42, 1, 0, 0, 1);
        assert!(matches!(messages(&st).next(), Some(Err(DiagError::BadState { state: 42, .. }))));
        // After a framing error the iterator stops instead of reading garbage as messages.
        let mut two = bad.clone();
        two.extend(done_msg());
        assert_eq!(messages(&two).count(), 1);
    }
}

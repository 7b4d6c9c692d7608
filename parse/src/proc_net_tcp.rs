//! `/proc/<pid>/net/tcp` and `/proc/<pid>/net/tcp6`: one line per TCP socket of the reader's network namespace.
//!
//! Format (stable since Linux 2.6; the v6 file differs only in address width):
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//!    0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 ...
//! ```
//! Addresses are the raw network-order words printed with `%08X` as host integers, so on a little-endian machine
//! `0100007F` is 127.0.0.1; ports are host-order hex. For a LISTEN socket `rx_queue` is the current accept-queue
//! length and `tx_queue` is 0: the backlog limit is only visible over `sock_diag` (see [`crate::inet_diag`]).
//!
//! [`parse_line`] takes one line without its newline and allocates nothing: it is called once per socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::hex;
use crate::tcp_state::TcpState;

/// One socket row. Addresses are decoded in the byte order of the machine that runs the parser, which is the order
/// the kernel printed them in when the file comes from the same machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub state: TcpState,
    /// Send queue bytes (0 for listeners).
    pub tx_queue: u32,
    /// Receive queue bytes, or the accept-queue length for a listener.
    pub rx_queue: u32,
    pub uid: u32,
    /// Active timer (`tr`): 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT (also set on FIN_WAIT2 sockets the
    /// kernel has already turned into timewait minisockets), 4 zero-window probe.
    pub timer: u8,
    /// Socket inode: the `N` of `socket:[N]` in `/proc/<pid>/fd`. 0 for sockets no process owns (TIME_WAIT, orphans).
    pub inode: u64,
}

/// Why a line was rejected. Carries no copy of the line so that reporting it costs nothing on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line has too few fields")]
    TooFewFields,
    #[error("field `{0}` is not valid hex")]
    BadHex(&'static str),
    #[error("field `{0}` is not a valid decimal number")]
    BadDecimal(&'static str),
    #[error("address `{0}` has a length that is neither IPv4 (8) nor IPv6 (32) hex digits")]
    BadAddressLength(&'static str),
    #[error("local and remote address families differ")]
    MixedFamilies,
    #[error("unknown socket state {0:#04x}")]
    UnknownState(u8),
}

/// Parses one line of `net/tcp` or `net/tcp6`. Returns `Ok(None)` for the header line and for blank lines.
pub fn parse_line(line: &[u8]) -> Result<Option<TcpRow>, LineError> {
    let mut fields = line.split(|b| *b == b' ' || *b == b'\t').filter(|f| !f.is_empty());
    let Some(sl) = fields.next() else {
        return Ok(None);
    };
    if sl == b"sl" {
        return Ok(None);
    }
    if sl.last() != Some(&b':') {
        return Err(LineError::BadDecimal("sl"));
    }
    let local = fields.next().ok_or(LineError::TooFewFields)?;
    let remote = fields.next().ok_or(LineError::TooFewFields)?;
    let state = fields.next().ok_or(LineError::TooFewFields)?;
    let queues = fields.next().ok_or(LineError::TooFewFields)?;
    let timer = fields.next().ok_or(LineError::TooFewFields)?;
    let _retransmits = fields.next().ok_or(LineError::TooFewFields)?;
    let uid = fields.next().ok_or(LineError::TooFewFields)?;
    let _timeout = fields.next().ok_or(LineError::TooFewFields)?;
    let inode = fields.next().ok_or(LineError::TooFewFields)?;

    let (local_addr, local_port) = parse_endpoint(local, "local_address")?;
    let (remote_addr, remote_port) = parse_endpoint(remote, "rem_address")?;
    if local_addr.is_ipv4() != remote_addr.is_ipv4() {
        return Err(LineError::MixedFamilies);
    }
    let state_code =
        u8::try_from(hex::parse_u64(state).ok_or(LineError::BadHex("st"))?).map_err(|_| LineError::BadHex("st"))?;
    let state = TcpState::from_code(state_code).ok_or(LineError::UnknownState(state_code))?;
    let colon = queues.iter().position(|b| *b == b':').ok_or(LineError::BadHex("tx_queue:rx_queue"))?;
    let tx_queue = hex::parse_u32(&queues[..colon]).ok_or(LineError::BadHex("tx_queue"))?;
    let rx_queue = hex::parse_u32(&queues[colon + 1..]).ok_or(LineError::BadHex("rx_queue"))?;
    let timer_colon = timer.iter().position(|b| *b == b':').unwrap_or(timer.len());
    let timer = u8::try_from(hex::parse_u64(&timer[..timer_colon]).ok_or(LineError::BadHex("tr"))?)
        .map_err(|_| LineError::BadHex("tr"))?;
    let uid = parse_decimal(uid).ok_or(LineError::BadDecimal("uid"))?;
    let uid = u32::try_from(uid).map_err(|_| LineError::BadDecimal("uid"))?;
    let inode = parse_decimal(inode).ok_or(LineError::BadDecimal("inode"))?;
    Ok(Some(TcpRow { local_addr, local_port, remote_addr, remote_port, state, tx_queue, rx_queue, uid, timer, inode }))
}

fn parse_endpoint(field: &[u8], name: &'static str) -> Result<(IpAddr, u16), LineError> {
    let colon = field.iter().rposition(|b| *b == b':').ok_or(LineError::BadHex(name))?;
    let (addr, port) = (&field[..colon], &field[colon + 1..]);
    if port.len() != 4 {
        return Err(LineError::BadHex(name));
    }
    let port = hex::parse_u32(port).ok_or(LineError::BadHex(name))? as u16;
    let addr = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr, name)?.to_ne_bytes())),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in addr.chunks_exact(8).enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(chunk, name)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return Err(LineError::BadAddressLength(name)),
    };
    Ok((addr, port))
}

fn word(hex8: &[u8], name: &'static str) -> Result<u32, LineError> {
    hex::parse_u32(hex8).ok_or(LineError::BadHex(name))
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on Linux 6.18 (x86_64, little-endian): a listener with 3 connections waiting in its accept queue,
    // an ESTABLISHED pair and a CLOSE_WAIT socket; lines keep the kernel's trailing padding.
    const TCP_6_18: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 40001 1 0000000000000000 100 0 0 10 0                       \n   1: 0100007F:1F90 0100007F:A2C4 08 00000000:00000001 00:00000000 00000000  1000        0 40002 1 0000000000000000 20 4 30 10 -1                    \n   2: 020200C0:9868 507100CB:0050 06 00000000:00000000 03:00000C5F 00000000     0        0 0 3 0000000044c3915b                                      \n";
    const TCP6_6_18: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 50001 1 0000000000000000 100 0 0 10 0\n   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C350 01 00000010:00000020 00:00000000 00000000    33        0 50002 1 0000000000000000 20 4 30 10 -1\n";

    fn rows(text: &str) -> Vec<TcpRow> {
        text.lines().filter_map(|l| parse_line(l.as_bytes()).unwrap()).collect()
    }

    #[test]
    fn parses_ipv4_rows_with_kernel_padding() {
        let r = rows(TCP_6_18);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].local_addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(r[0].local_port, 8080);
        assert_eq!(r[0].state, TcpState::Listen);
        assert_eq!(r[0].rx_queue, 3, "listener rx_queue is the accept queue length");
        assert_eq!(r[0].inode, 40001);
        assert_eq!(r[1].state, TcpState::CloseWait);
        assert_eq!(r[1].remote_port, 0xA2C4);
        assert_eq!(r[1].uid, 1000);
        assert_eq!(r[2].state, TcpState::TimeWait);
        assert_eq!(r[2].inode, 0);
        assert_eq!(r[2].timer, 3, "timewait sockets run the TIME_WAIT timer");
        assert_eq!(r[0].timer, 0);
        assert_eq!(r[2].remote_addr, "203.0.113.80".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn parses_ipv6_rows_including_v4_mapped() {
        let r = rows(TCP6_6_18);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].local_addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(r[0].local_port, 80);
        assert_eq!(r[1].local_addr, "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(r[1].state, TcpState::Established);
        assert_eq!((r[1].tx_queue, r[1].rx_queue, r[1].uid, r[1].inode), (16, 32, 33, 50002));
    }

    #[test]
    fn header_and_blank_lines_are_not_rows() {
        assert_eq!(parse_line(b""), Ok(None));
        assert_eq!(parse_line(b"   "), Ok(None));
        assert_eq!(parse_line(TCP_6_18.lines().next().unwrap().as_bytes()), Ok(None));
    }

    #[test]
    fn rejects_truncated_and_garbage_lines() {
        let full = TCP_6_18.lines().nth(1).unwrap();
        for cut in 1..full.trim_end().len() {
            let prefix = &full.as_bytes()[..cut];
            // A cut inside the last needed field may still parse as a shorter number; it must never panic and
            // must never invent a different state or port.
            if let Ok(Some(row)) = parse_line(prefix) {
                assert_eq!(row.state, TcpState::Listen);
                assert_eq!(row.local_port, 8080);
            }
        }
        assert_eq!(
            parse_line(b"   0: zz00007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1"),
            Err(LineError::BadHex("local_address"))
        );
        assert_eq!(parse_line(b"   0: 0100007F:1F90 00000000:0000 0A"), Err(LineError::TooFewFields));
        assert_eq!(
            parse_line(b"   0: 0100007F:1F90 00000000:0000 0F 00000000:00000000 00:00000000 00000000 0 0 1 1"),
            Err(LineError::UnknownState(0x0f))
        );
        assert_eq!(
            parse_line(b"   0: 0100007F:1F90 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 1"),
            Err(LineError::MixedFamilies)
        );
        assert_eq!(
            parse_line(b"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 -1 0 1 1"),
            Err(LineError::BadDecimal("uid"))
        );
        assert_eq!(parse_line(b"garbage"), Err(LineError::BadDecimal("sl")));
    }
}

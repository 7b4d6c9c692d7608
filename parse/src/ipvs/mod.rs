//! IPVS (`net/netfilter/ipvs/`) procfs tables: `/proc/net/ip_vs`, `/proc/net/ip_vs_stats`, `/proc/net/ip_vs_conn`.
//!
//! All three files exist since IPVS was merged (2.6.0); the variations later kernels introduced are handled here
//! and named where they matter:
//! - IPv6 services, real servers and connections (2.6.28);
//! - SCTP (2.6.34), one-packet scheduling `ops` flag (2.6.35), persistence-engine columns in `ip_vs_conn` (2.6.37);
//! - real servers of another address family than their service, tunnelling only (3.18);
//! - `Expires` clamped at 0 by the kernel itself (5.x); older kernels print an unsigned wrap-around instead.
//!
//! Numbers the kernel prints in hex (`%08X` addresses that read naturally, `%04X` ports, the stats counters) are
//! parsed as hex; counts and times it prints with `%d`/`%u` are decimal. Addresses are parsed by their own shape,
//! never by the family of the row around them.
//!
//! Entry points: [`parse_services`], [`parse_stats`], [`parse_connections`]. The two tables are iterators of one
//! `Result` per row, so a caller counts malformed rows and keeps going; a wrong or missing header fails the whole
//! file. Connection rows borrow from the input and do not allocate; a service allocates one `Vec` for its real
//! servers (bounded by the number of services, not of rows).
//!
//! With the crate feature `writers`, every parsed value can be written back in the kernel's exact format through
//! `Display`: the fuzz targets use it for round trips, and it builds fixtures. It is on in this crate's own tests and
//! benchmark and in the fuzz crate, and left out of the production build. What the exporter needs in production is
//! always there: [`Protocol::name`], [`ConnState::as_str`], [`Forward::as_str`], and `Display` of errors.
//!
//! One file per format: `services.rs` (`ip_vs`), `stats.rs` (`ip_vs_stats`), `conn.rs` (`ip_vs_conn`). This module
//! holds what they share (errors, protocols, addresses, line and field splitting) and re-exports every public item,
//! so all of them are used as `ipvs::…`.

mod conn;
mod services;
mod stats;

pub use conn::{
    CONNECTIONS_HEADER, ConnState, Connection, Connections, MAX_EXPIRES_SECS, PersistenceEngine, parse_connections,
};
pub use services::{Forward, IpvsHeader, Persistence, RealServer, Service, Services, VirtualService, parse_services};
pub use stats::{IpvsStats, StatsRates, StatsTotals, parse_stats};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/// Which IPVS file a [`ParseError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvsFile {
    /// `/proc/net/ip_vs`
    Services,
    /// `/proc/net/ip_vs_stats`
    Stats,
    /// `/proc/net/ip_vs_conn`
    Connections,
}

impl IpvsFile {
    /// The procfs path of this file, relative to the root of the reader's network namespace's procfs.
    pub const fn path(self) -> &'static str {
        match self {
            IpvsFile::Services => "/proc/net/ip_vs",
            IpvsFile::Stats => "/proc/net/ip_vs_stats",
            IpvsFile::Connections => "/proc/net/ip_vs_conn",
        }
    }
}

impl fmt::Display for IpvsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// One line that could not be parsed: which file, which line (1-based), and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file} line {line}: {kind}")]
pub struct ParseError {
    pub file: IpvsFile,
    /// 1-based line number in the file.
    pub line: usize,
    pub kind: ErrorKind,
}

/// What was wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ErrorKind {
    /// A header line is missing or is not the one the kernel prints: probably not the file it claims to be.
    #[error("expected header {expected:?}, found {found}")]
    Header { expected: &'static str, found: Snippet },
    /// The file ends before a line it must have.
    #[error("file ends before the {what}")]
    Truncated { what: &'static str },
    /// The line ends before a required field.
    #[error("missing {what} ({found} fields on the line)")]
    Missing { what: &'static str, found: usize },
    /// A field does not have the shape the kernel prints.
    #[error("invalid {what}: {token}")]
    Invalid { what: &'static str, token: Snippet },
    /// Extra text after the last field the kernel prints.
    #[error("unexpected trailing field {token}")]
    Trailing { token: Snippet },
    /// A real server (`  -> …`) line with no valid service line above it. It is reported, never credited to an
    /// earlier service.
    #[error("real server line does not follow a valid service line")]
    OrphanRealServer,
}

/// A short copy (at most 32 bytes) of the offending text, kept inline so that errors neither allocate nor borrow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Snippet {
    buf: [u8; Snippet::CAP],
    len: u8,
    truncated: bool,
}

impl Snippet {
    const CAP: usize = 32;

    fn new(bytes: &[u8]) -> Self {
        let len = bytes.len().min(Self::CAP);
        let mut buf = [0; Self::CAP];
        buf[..len].copy_from_slice(&bytes[..len]);
        Snippet { buf, len: len as u8, truncated: bytes.len() > Self::CAP }
    }

    /// The copied bytes (the first 32 of the offending text).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// Whether the offending text was longer than what was kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}", self.as_bytes().escape_ascii())?;
        if self.truncated {
            f.write_str("...")?;
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn invalid(what: &'static str, token: &[u8]) -> ErrorKind {
    ErrorKind::Invalid { what, token: Snippet::new(token) }
}

// ---------------------------------------------------------------------------------------------------------------
// Shared vocabulary: protocols, addresses
// ---------------------------------------------------------------------------------------------------------------

/// An IP protocol number, as named by the kernel's `ip_vs_proto_name()`.
///
/// A newtype over the number rather than an enum, so that `IP_6` (as a kernel without a name for it would print)
/// and `TCP` are the same value, and so are `IP_4`/`IPIP` and `IP_47`/`GRE` across kernel versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    /// `IP`: number 0. Used by persistence templates of firewall-mark services.
    pub const IP: Protocol = Protocol(0);
    pub const ICMP: Protocol = Protocol(1);
    pub const IPIP: Protocol = Protocol(4);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const GRE: Protocol = Protocol(47);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const SCTP: Protocol = Protocol(132);

    /// Parses a name as the kernel prints it: `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`, `IPIP`, `GRE`, `IP`, or
    /// `IP_<n>` with `n` a decimal protocol number. `None` for anything else.
    pub fn from_name(name: &[u8]) -> Option<Protocol> {
        let p = match name {
            b"TCP" => Protocol::TCP,
            b"UDP" => Protocol::UDP,
            b"SCTP" => Protocol::SCTP,
            b"ICMP" => Protocol::ICMP,
            b"ICMPv6" => Protocol::ICMPV6,
            b"IPIP" => Protocol::IPIP,
            b"GRE" => Protocol::GRE,
            b"IP" => Protocol::IP,
            _ => {
                let digits = name.strip_prefix(b"IP_")?;
                if digits.is_empty() || digits.len() > 3 {
                    return None;
                }
                Protocol(u8::try_from(parse_dec_u64(digits)?).ok()?)
            }
        };
        Some(p)
    }

    /// The name a current kernel prints for this protocol (`IP_<n>` when it has none).
    pub fn name(self) -> ProtocolName {
        let mut buf = [0u8; 6];
        let fixed: Option<&[u8]> = match self {
            Protocol::TCP => Some(b"TCP"),
            Protocol::UDP => Some(b"UDP"),
            Protocol::SCTP => Some(b"SCTP"),
            Protocol::ICMP => Some(b"ICMP"),
            Protocol::ICMPV6 => Some(b"ICMPv6"),
            Protocol::IPIP => Some(b"IPIP"),
            Protocol::GRE => Some(b"GRE"),
            Protocol::IP => Some(b"IP"),
            _ => None,
        };
        let len = match fixed {
            Some(name) => {
                buf[..name.len()].copy_from_slice(name);
                name.len()
            }
            None => {
                buf[..3].copy_from_slice(b"IP_");
                let n = self.0;
                let mut len = 3;
                if n >= 100 {
                    buf[len] = b'0' + n / 100;
                    len += 1;
                }
                if n >= 10 {
                    buf[len] = b'0' + (n / 10) % 10;
                    len += 1;
                }
                buf[len] = b'0' + n % 10;
                len + 1
            }
        };
        ProtocolName { buf, len: len as u8 }
    }
}

/// A protocol's printed name, held inline (see [`Protocol::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolName {
    buf: [u8; 6],
    len: u8,
}

impl ProtocolName {
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into `buf`.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("IP_?")
    }
}

#[cfg(any(test, feature = "writers"))]
impl fmt::Display for Protocol {
    /// The kernel's name; honours width and alignment (`{:<3}` as in `ip_vs_conn`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name().as_str())
    }
}

/// An IP address printed the kernel's way: IPv4 as `%08X` of the host-order value (reads naturally:
/// `0A600001` = 10.96.0.1), IPv6 as `%pI6` (eight groups of four lower-case hex digits, no compression). Only with
/// the feature `writers`.
#[cfg(any(test, feature = "writers"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelAddr(pub IpAddr);

#[cfg(any(test, feature = "writers"))]
impl fmt::Display for KernelAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{:08X}", u32::from(a)),
            IpAddr::V6(a) => {
                for (i, seg) in a.segments().iter().enumerate() {
                    if i > 0 {
                        f.write_str(":")?;
                    }
                    write!(f, "{seg:04x}")?;
                }
                Ok(())
            }
        }
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Hex number of `min..=max` digits (`max` ≤ 16, so it cannot overflow).
fn parse_hex(t: &[u8], min: usize, max: usize) -> Option<u64> {
    debug_assert!(max <= 16);
    if t.len() < min || t.len() > max {
        return None;
    }
    let mut v = 0u64;
    for &b in t {
        v = (v << 4) | u64::from(hex_digit(b)?);
    }
    Some(v)
}

/// Unsigned decimal, `None` on overflow or a non-digit.
fn parse_dec_u64(t: &[u8]) -> Option<u64> {
    if t.is_empty() {
        return None;
    }
    let mut v = 0u64;
    for &b in t {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// `%d` of a 32-bit int.
fn parse_dec_i32(t: &[u8]) -> Option<i32> {
    match t.strip_prefix(b"-") {
        Some(digits) => {
            let v = parse_dec_u64(digits)?;
            if v > 1 << 31 {
                return None;
            }
            Some((-(v as i64)) as i32)
        }
        None => i32::try_from(parse_dec_u64(t)?).ok(),
    }
}

fn parse_ipv4(t: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(parse_hex(t, 8, 8)? as u32))
}

/// Eight colon-separated groups of 1–4 hex digits (the kernel prints exactly 4); no `::` compression.
fn parse_ipv6(t: &[u8]) -> Option<Ipv6Addr> {
    let mut segs = [0u16; 8];
    let mut n = 0;
    for group in t.split(|&b| b == b':') {
        if n == 8 {
            return None;
        }
        segs[n] = parse_hex(group, 1, 4)? as u16;
        n += 1;
    }
    (n == 8).then(|| Ipv6Addr::from(segs))
}

/// An address field of `ip_vs_conn`: its own shape decides its family.
fn parse_bare_addr(t: &[u8]) -> Option<IpAddr> {
    if t.contains(&b':') { parse_ipv6(t).map(IpAddr::V6) } else { parse_ipv4(t).map(IpAddr::V4) }
}

fn parse_port(t: &[u8]) -> Option<u16> {
    parse_hex(t, 1, 4).map(|p| p as u16)
}

/// `ADDR:PORT` of `ip_vs`: `0A600001:01BB` or `[fd00:0000:…:0001]:0050`.
fn parse_socket(t: &[u8]) -> Option<SocketAddr> {
    if let Some(rest) = t.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']')?;
        let ip = parse_ipv6(&rest[..close])?;
        let port = parse_port(rest[close + 1..].strip_prefix(b":")?)?;
        Some(SocketAddr::new(IpAddr::V6(ip), port))
    } else {
        if t.len() < 10 || t[8] != b':' {
            return None;
        }
        let ip = parse_ipv4(&t[..8])?;
        let port = parse_port(&t[9..])?;
        Some(SocketAddr::new(IpAddr::V4(ip), port))
    }
}

/// Printable ASCII without spaces (what the kernel prints for names), as `&str`.
fn word(t: &[u8]) -> Option<&str> {
    if t.iter().all(u8::is_ascii_graphic) { std::str::from_utf8(t).ok() } else { None }
}

// ---------------------------------------------------------------------------------------------------------------
// Line and field splitting
// ---------------------------------------------------------------------------------------------------------------

/// Lines without their `\n`, numbered from 1.
#[derive(Debug, Clone)]
struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Lines { rest: input, number: 0 }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let line = match self.rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &self.rest[..end];
                self.rest = &self.rest[end + 1..];
                line
            }
            None => std::mem::take(&mut self.rest),
        };
        self.number += 1;
        Some((self.number, line))
    }
}

/// Whitespace-separated fields of one line.
#[derive(Debug, Clone, Copy)]
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(line: &'a [u8]) -> Self {
        Fields { rest: line }
    }

    /// What is left of the line, without surrounding whitespace.
    fn remainder(&self) -> &'a [u8] {
        self.rest.trim_ascii()
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = &self.rest[start..];
        let end = rest.iter().position(u8::is_ascii_whitespace).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

fn count_fields(line: &[u8]) -> usize {
    Fields::new(line).count()
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Next field or a `Missing` error naming it.
fn need<'a>(fields: &mut Fields<'a>, line: &[u8], what: &'static str) -> Result<&'a [u8], ErrorKind> {
    fields.next().ok_or_else(|| ErrorKind::Missing { what, found: count_fields(line) })
}

fn expect_header<'a>(
    lines: &mut Lines<'a>,
    expected: &'static str,
    what: &'static str,
) -> Result<(usize, &'a [u8]), ErrorKind> {
    let (number, line) = lines.next().ok_or(ErrorKind::Truncated { what })?;
    if line.trim_ascii_end() == expected.as_bytes() {
        Ok((number, line))
    } else {
        Err(ErrorKind::Header { expected, found: Snippet::new(line) })
    }
}

/// Helpers for the unit tests of every IPVS file format.
#[cfg(test)]
mod test_support {
    use super::*;

    pub(super) fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    pub(super) fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }
    pub(super) fn sa(ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, port)
    }
    pub(super) fn tcp(ip: IpAddr, port: u16) -> VirtualService {
        VirtualService::Socket { protocol: Protocol::TCP, addr: sa(ip, port) }
    }

    /// Splits a table into (services, errors).
    pub(super) fn services(input: &str) -> (IpvsHeader, Vec<Service<'_>>, Vec<ParseError>) {
        let table = parse_services(input.as_bytes()).expect("header parses");
        let header = table.header();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for row in table {
            match row {
                Ok(s) => ok.push(s),
                Err(e) => bad.push(e),
            }
        }
        (header, ok, bad)
    }

    pub(super) fn connections(input: &str) -> (Vec<Connection<'_>>, Vec<ParseError>) {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for row in parse_connections(input.as_bytes()).expect("header parses") {
            match row {
                Ok(c) => ok.push(c),
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }

    pub(super) fn render_services(header: IpvsHeader, services: &[Service<'_>]) -> String {
        let mut out = header.to_string();
        for s in services {
            out += &s.to_string();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn protocol_names() {
        for (name, number) in [
            ("TCP", 6u8),
            ("UDP", 17),
            ("SCTP", 132),
            ("ICMP", 1),
            ("ICMPv6", 58),
            ("IPIP", 4),
            ("GRE", 47),
            ("IP", 0),
            ("IP_4", 4),
            ("IP_6", 6),
            ("IP_255", 255),
            ("IP_9", 9),
        ] {
            assert_eq!(Protocol::from_name(name.as_bytes()), Some(Protocol(number)), "{name}");
        }
        for bad in ["tcp", "IP_", "IP_256", "IP_1000", "IP_-1", "IP_x", "", "FWM"] {
            assert_eq!(Protocol::from_name(bad.as_bytes()), None, "{bad:?}");
        }
        for n in 0..=255u8 {
            let p = Protocol(n);
            assert_eq!(Protocol::from_name(p.name().as_str().as_bytes()), Some(p));
        }
        assert_eq!(Protocol(9).to_string(), "IP_9");
        assert_eq!(Protocol(42).to_string(), "IP_42");
        assert_eq!(Protocol(200).to_string(), "IP_200");
        assert_eq!(format!("{:<3}|", Protocol::IP), "IP |");
    }

    /// The sample files of `parse/tests/data/ipvs/` (the kernel format notes' examples, copied into the repository)
    /// must exist, parse without a single error, agree with each other, and re-render to the same text (modulo
    /// trailing spaces the sample files dropped).
    #[test]
    fn fixture_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ipvs");
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("IPVS sample file {} is missing ({e})", path.display()))
        };
        let trimmed = |s: &str| s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n");

        let ip_vs = read("ip_vs");
        let (header, svcs, errors) = services(&ip_vs);
        assert_eq!(errors, vec![]);
        assert!(!svcs.is_empty());
        let data_lines = ip_vs.lines().skip(3).filter(|l| !l.trim().is_empty()).count();
        let parsed_lines: usize = svcs.iter().map(|s| 1 + s.real_servers.len()).sum();
        assert_eq!(parsed_lines, data_lines);
        assert_eq!(trimmed(&render_services(header, &svcs)), trimmed(&ip_vs));

        let conn = read("ip_vs_conn");
        let (rows, errors) = connections(&conn);
        assert_eq!(errors, vec![]);
        assert_eq!(rows.len(), conn.lines().skip(1).filter(|l| !l.trim().is_empty()).count());
        let rendered: String =
            std::iter::once(format!("{CONNECTIONS_HEADER}\n")).chain(rows.iter().map(|r| r.to_string())).collect();
        assert_eq!(trimmed(&rendered), trimmed(&conn));
        // Every connection belongs to a service of ip_vs and goes to one of that service's real servers.
        for r in &rows {
            let svc = svcs
                .iter()
                .find(|s| s.virtual_service == VirtualService::Socket { protocol: r.protocol, addr: r.virtual_addr })
                .unwrap_or_else(|| panic!("no service for {r:?}"));
            assert!(
                svc.real_servers.iter().any(|rs| rs.addr == r.real_server),
                "{r:?} goes to no real server of {svc:?}"
            );
        }

        let stats_text = read("ip_vs_stats");
        let stats = parse_stats(stats_text.as_bytes()).unwrap();
        assert_eq!(trimmed(&stats.to_string()), trimmed(&stats_text));
        assert!(stats.totals.connections > 0);
    }
}

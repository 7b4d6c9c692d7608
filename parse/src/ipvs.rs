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
//! Every parsed value can be written back in the kernel's exact format through `Display` (used by the fuzz targets
//! for round trips, and handy to build fixtures).

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

impl fmt::Display for Protocol {
    /// The kernel's name; honours width and alignment (`{:<3}` as in `ip_vs_conn`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name().as_str())
    }
}

/// An IP address printed the kernel's way: IPv4 as `%08X` of the host-order value (reads naturally:
/// `0A600001` = 10.96.0.1), IPv6 as `%pI6` (eight groups of four lower-case hex digits, no compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelAddr(pub IpAddr);

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

// ---------------------------------------------------------------------------------------------------------------
// /proc/net/ip_vs
// ---------------------------------------------------------------------------------------------------------------

const SERVICES_TITLE_PREFIX: &str = "IP Virtual Server version ";
const SERVICES_COLUMNS: &str = "Prot LocalAddress:Port Scheduler Flags";
const SERVICES_DEST_COLUMNS: &str = "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn";

/// The first line of `/proc/net/ip_vs`: `IP Virtual Server version 1.2.1 (size=4096)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpvsHeader {
    /// IPVS version (`1.2.1` on every kernel since 2.6.10 or so).
    pub version: (u8, u8, u8),
    /// `size=`: the number of buckets of the connection hash table (module parameter `conn_tab_bits`), not a count
    /// of connections or services.
    pub conn_table_size: u32,
}

impl IpvsHeader {
    fn parse(line: &[u8]) -> Option<IpvsHeader> {
        let rest = line.trim_ascii_end().strip_prefix(SERVICES_TITLE_PREFIX.as_bytes())?;
        let space = rest.iter().position(|&b| b == b' ')?;
        let (version, size) = (&rest[..space], &rest[space + 1..]);
        let mut parts = version.split(|&b| b == b'.');
        let mut component = || -> Option<u8> {
            let p = parts.next()?;
            if p.len() > 3 {
                return None;
            }
            u8::try_from(parse_dec_u64(p)?).ok()
        };
        let version = (component()?, component()?, component()?);
        if parts.next().is_some() {
            return None;
        }
        let size = size.strip_prefix(b"(size=")?.strip_suffix(b")")?;
        if size.len() > 10 {
            return None;
        }
        let conn_table_size = u32::try_from(parse_dec_u64(size)?).ok()?;
        Some(IpvsHeader { version, conn_table_size })
    }
}

impl fmt::Display for IpvsHeader {
    /// The three header lines, exactly as the kernel prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version;
        writeln!(f, "{SERVICES_TITLE_PREFIX}{a}.{b}.{c} (size={})", self.conn_table_size)?;
        writeln!(f, "{SERVICES_COLUMNS}")?;
        writeln!(f, "{SERVICES_DEST_COLUMNS}")
    }
}

/// What identifies a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VirtualService {
    /// A protocol, address and port (`TCP  0A600001:01BB`, `UDP  [fd00:…]:0035`).
    Socket { protocol: Protocol, addr: SocketAddr },
    /// A firewall-mark service (`FWM  00000001`): matches packets by netfilter mark, any protocol and address.
    /// `ip_vs_conn` does not show the mark: its rows of such a service carry the packet's own protocol, address and
    /// port.
    FirewallMark(u32),
}

/// `persistent <timeout> <netmask>` after a service's scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// The persistence timeout **in jiffies** (seconds × the kernel's `CONFIG_HZ`: the kernel stores
    /// `timeout * HZ` and `ip_vs` prints that, while `ipvsadm` shows seconds). `%d` of an unsigned int: a negative
    /// printed value is kept as its two's-complement bits.
    pub timeout_jiffies: u32,
    /// The persistence granularity: an IPv4 netmask (`FFFFFFFF` = per client address). For IPv6 services the
    /// kernel keeps a prefix length in this field and prints it through `ntohl`, so on little-endian hosts
    /// `/128` reads `80000000`; it is kept as printed.
    pub netmask: u32,
}

/// A real server's forwarding method (`ip_vs_fwd_name()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forward<'a> {
    Masq,
    Local,
    Tunnel,
    Route,
    Bypass,
    /// A name this parser does not know, kept as printed.
    Other(&'a str),
}

impl<'a> Forward<'a> {
    fn parse(t: &'a [u8]) -> Option<Forward<'a>> {
        Some(match t {
            b"Masq" => Forward::Masq,
            b"Local" => Forward::Local,
            b"Tunnel" => Forward::Tunnel,
            b"Route" => Forward::Route,
            b"Bypass" => Forward::Bypass,
            other => Forward::Other(word(other)?),
        })
    }

    pub fn as_str(&self) -> &'a str {
        match *self {
            Forward::Masq => "Masq",
            Forward::Local => "Local",
            Forward::Tunnel => "Tunnel",
            Forward::Route => "Route",
            Forward::Bypass => "Bypass",
            Forward::Other(s) => s,
        }
    }
}

impl fmt::Display for Forward<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A `  -> ADDR:PORT Forward Weight ActiveConn InActConn` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealServer<'a> {
    /// The real server's address, in its own family (may differ from the service's).
    pub addr: SocketAddr,
    pub forward: Forward<'a>,
    /// Scheduling weight; 0 means quiesced (no new connections).
    pub weight: i32,
    /// Connections in ESTABLISHED (TCP) — the kernel's `activeconns`; printed with `%d`, so a counter bug shows
    /// as a negative number rather than a huge one.
    pub active_conns: i32,
    /// All other connection entries for this real server (`inactconns`): TCP not established, UDP, …
    pub inactive_conns: i32,
}

impl<'a> RealServer<'a> {
    /// Parses one real server line (with or without its leading `  -> `).
    pub fn from_line(line: &'a [u8]) -> Result<RealServer<'a>, ErrorKind> {
        let mut f = Fields::new(line);
        let mut addr = need(&mut f, line, "real server address")?;
        if addr == b"->" {
            addr = need(&mut f, line, "real server address")?;
        }
        let addr = parse_socket(addr).ok_or_else(|| invalid("real server address", addr))?;
        let fwd = need(&mut f, line, "forwarding method")?;
        let forward = Forward::parse(fwd).ok_or_else(|| invalid("forwarding method", fwd))?;
        let mut int = |what| -> Result<i32, ErrorKind> {
            let t = need(&mut f, line, what)?;
            parse_dec_i32(t).ok_or_else(|| invalid(what, t))
        };
        let weight = int("weight")?;
        let active_conns = int("active connection count")?;
        let inactive_conns = int("inactive connection count")?;
        if let Some(extra) = f.next() {
            return Err(ErrorKind::Trailing { token: Snippet::new(extra) });
        }
        Ok(RealServer { addr, forward, weight, active_conns, inactive_conns })
    }
}

impl fmt::Display for RealServer<'_> {
    /// The line as the kernel prints it, newline included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            SocketAddr::V4(a) => write!(f, "  -> {:08X}:{:04X}      ", u32::from(*a.ip()), a.port())?,
            SocketAddr::V6(a) => write!(f, "  -> [{}]:{:04X}      ", KernelAddr(IpAddr::V6(*a.ip())), a.port())?,
        }
        writeln!(f, "{:<7} {:<6} {:<10} {:<10}", self.forward, self.weight, self.active_conns, self.inactive_conns)
    }
}

/// A virtual service of `/proc/net/ip_vs` and its real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service<'a> {
    pub virtual_service: VirtualService,
    /// Scheduler name (`rr`, `wlc`, `mh`, …; `none` when the service has none).
    pub scheduler: &'a str,
    /// One-packet scheduling (`ops`, UDP; 2.6.35+). The kernel prints it for IPv4 and firewall-mark services only.
    pub one_packet: bool,
    pub persistence: Option<Persistence>,
    /// Real servers in the kernel's order.
    pub real_servers: Vec<RealServer<'a>>,
}

impl<'a> Service<'a> {
    /// Parses a service line (without its real servers).
    pub fn from_line(line: &'a [u8]) -> Result<Service<'a>, ErrorKind> {
        let mut f = Fields::new(line);
        let proto = need(&mut f, line, "protocol")?;
        let virtual_service = if proto == b"FWM" {
            let mark = need(&mut f, line, "firewall mark")?;
            VirtualService::FirewallMark(parse_hex(mark, 1, 8).ok_or_else(|| invalid("firewall mark", mark))? as u32)
        } else {
            let protocol = Protocol::from_name(proto).ok_or_else(|| invalid("protocol", proto))?;
            let addr = need(&mut f, line, "virtual address")?;
            let addr = parse_socket(addr).ok_or_else(|| invalid("virtual address", addr))?;
            VirtualService::Socket { protocol, addr }
        };
        let sched = need(&mut f, line, "scheduler")?;
        let scheduler = word(sched).ok_or_else(|| invalid("scheduler", sched))?;
        let mut next = f.next();
        let one_packet = next == Some(b"ops");
        if one_packet {
            next = f.next();
        }
        let mut persistence = None;
        if next == Some(b"persistent") {
            let timeout = need(&mut f, line, "persistence timeout")?;
            let timeout_jiffies = parse_dec_i32(timeout).ok_or_else(|| invalid("persistence timeout", timeout))? as u32;
            let mask = need(&mut f, line, "persistence netmask")?;
            let netmask = parse_hex(mask, 1, 8).ok_or_else(|| invalid("persistence netmask", mask))? as u32;
            persistence = Some(Persistence { timeout_jiffies, netmask });
            next = f.next();
        }
        if let Some(extra) = next {
            return Err(ErrorKind::Trailing { token: Snippet::new(extra) });
        }
        Ok(Service { virtual_service, scheduler, one_packet, persistence, real_servers: Vec::new() })
    }
}

impl fmt::Display for Service<'_> {
    /// The service line and its real server lines, exactly as the kernel prints them (trailing spaces included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops = if self.one_packet { "ops " } else { "" };
        match self.virtual_service {
            VirtualService::Socket { protocol, addr: SocketAddr::V4(a) } => {
                write!(f, "{protocol}  {:08X}:{:04X} {} {ops} ", u32::from(*a.ip()), a.port(), self.scheduler)?
            }
            VirtualService::Socket { protocol, addr: SocketAddr::V6(a) } => write!(
                f,
                "{protocol}  [{}]:{:04X} {} {ops}",
                KernelAddr(IpAddr::V6(*a.ip())),
                a.port(),
                self.scheduler
            )?,
            VirtualService::FirewallMark(mark) => write!(f, "FWM  {mark:08X} {} {ops}", self.scheduler)?,
        }
        match self.persistence {
            Some(p) => writeln!(f, "persistent {} {:08X}", p.timeout_jiffies as i32, p.netmask)?,
            None => writeln!(f)?,
        }
        for rs in &self.real_servers {
            write!(f, "{rs}")?;
        }
        Ok(())
    }
}

/// Parses `/proc/net/ip_vs`. Fails only when the header is wrong; then yields one `Result` per service (with its
/// real servers) or per malformed line.
///
/// A malformed service line is reported and the real server lines under it are reported as
/// [`ErrorKind::OrphanRealServer`]: a backend is never credited to another service than its own. A malformed
/// real server line is reported before its service, which is still yielded with its other real servers.
pub fn parse_services(input: &[u8]) -> Result<Services<'_>, ParseError> {
    let mut lines = Lines::new(input);
    let err = |line, kind| ParseError { file: IpvsFile::Services, line, kind };
    let (number, title) = lines.next().ok_or(err(1, ErrorKind::Truncated { what: "title line" }))?;
    let header = IpvsHeader::parse(title).ok_or_else(|| {
        err(
            number,
            ErrorKind::Header { expected: "IP Virtual Server version X.Y.Z (size=N)", found: Snippet::new(title) },
        )
    })?;
    expect_header(&mut lines, SERVICES_COLUMNS, "column header").map_err(|k| err(2, k))?;
    expect_header(&mut lines, SERVICES_DEST_COLUMNS, "real server column header").map_err(|k| err(3, k))?;
    Ok(Services { header, lines, current: None, pending: None })
}

/// Iterator over the services of `/proc/net/ip_vs` (see [`parse_services`]).
#[derive(Debug, Clone)]
pub struct Services<'a> {
    header: IpvsHeader,
    lines: Lines<'a>,
    current: Option<Service<'a>>,
    pending: Option<ParseError>,
}

impl<'a> Services<'a> {
    pub fn header(&self) -> IpvsHeader {
        self.header
    }
}

impl<'a> Iterator for Services<'a> {
    type Item = Result<Service<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        let err = |line, kind| ParseError { file: IpvsFile::Services, line, kind };
        loop {
            let Some((number, line)) = self.lines.next() else {
                return self.current.take().map(Ok);
            };
            if is_blank(line) {
                continue;
            }
            let is_real_server = Fields::new(line).next() == Some(b"->".as_slice());
            if is_real_server {
                let Some(service) = self.current.as_mut() else {
                    return Some(Err(err(number, ErrorKind::OrphanRealServer)));
                };
                match RealServer::from_line(line) {
                    Ok(rs) => service.real_servers.push(rs),
                    Err(kind) => return Some(Err(err(number, kind))),
                }
                continue;
            }
            let finished = self.current.take();
            match Service::from_line(line) {
                Ok(service) => self.current = Some(service),
                Err(kind) => {
                    let e = err(number, kind);
                    if finished.is_none() {
                        return Some(Err(e));
                    }
                    self.pending = Some(e);
                }
            }
            if let Some(done) = finished {
                return Some(Ok(done));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// /proc/net/ip_vs_stats
// ---------------------------------------------------------------------------------------------------------------

const STATS_HEAD1: &str = "   Total Incoming Outgoing         Incoming         Outgoing";
const STATS_HEAD2: &str = "   Conns  Packets  Packets            Bytes            Bytes";
const STATS_RATES_HEAD: &str = " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s";

/// Totals since IPVS was loaded in this network namespace, row 3 of `/proc/net/ip_vs_stats` (hex). Counters:
/// kernels before ~2.6.36/3.x kept the connection and packet counters in 32 bits, so they wrap there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatsTotals {
    /// Connections scheduled.
    pub connections: u64,
    pub incoming_packets: u64,
    pub outgoing_packets: u64,
    pub incoming_bytes: u64,
    pub outgoing_bytes: u64,
}

/// Row 6 of `/proc/net/ip_vs_stats` (hex): the rate estimator's smoothed per-second rates (updated every 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatsRates {
    pub connections_per_second: u64,
    pub incoming_packets_per_second: u64,
    pub outgoing_packets_per_second: u64,
    pub incoming_bytes_per_second: u64,
    pub outgoing_bytes_per_second: u64,
}

/// `/proc/net/ip_vs_stats`: totals and rates for the reader's network namespace. (Per-CPU values are in
/// `/proc/net/ip_vs_stats_percpu`, not parsed here.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpvsStats {
    pub totals: StatsTotals,
    pub rates: StatsRates,
}

fn parse_hex_row(line: &[u8]) -> Result<[u64; 5], ErrorKind> {
    const NAMES: [&str; 5] =
        ["connections", "incoming packets", "outgoing packets", "incoming bytes", "outgoing bytes"];
    let mut f = Fields::new(line);
    let mut out = [0u64; 5];
    for (slot, what) in out.iter_mut().zip(NAMES) {
        let t = need(&mut f, line, what)?;
        *slot = parse_hex(t, 1, 16).ok_or_else(|| invalid(what, t))?;
    }
    if let Some(extra) = f.next() {
        return Err(ErrorKind::Trailing { token: Snippet::new(extra) });
    }
    Ok(out)
}

/// Parses `/proc/net/ip_vs_stats` (six lines: two header lines, totals, a blank line, a header, rates).
pub fn parse_stats(input: &[u8]) -> Result<IpvsStats, ParseError> {
    let mut lines = Lines::new(input);
    let err = |line, kind| ParseError { file: IpvsFile::Stats, line, kind };
    expect_header(&mut lines, STATS_HEAD1, "header").map_err(|k| err(1, k))?;
    expect_header(&mut lines, STATS_HEAD2, "second header line").map_err(|k| err(2, k))?;
    let (n, line) = lines.next().ok_or(err(3, ErrorKind::Truncated { what: "totals row" }))?;
    let [c, ip, op, ib, ob] = parse_hex_row(line).map_err(|k| err(n, k))?;
    let (n, line) = lines.next().ok_or(err(4, ErrorKind::Truncated { what: "blank line" }))?;
    if !is_blank(line) {
        return Err(err(n, ErrorKind::Header { expected: "", found: Snippet::new(line) }));
    }
    expect_header(&mut lines, STATS_RATES_HEAD, "rates header").map_err(|k| err(5, k))?;
    let (n, line) = lines.next().ok_or(err(6, ErrorKind::Truncated { what: "rates row" }))?;
    let [cr, ipr, opr, ibr, obr] = parse_hex_row(line).map_err(|k| err(n, k))?;
    for (n, line) in lines {
        if !is_blank(line) {
            return Err(err(n, ErrorKind::Trailing { token: Snippet::new(line) }));
        }
    }
    Ok(IpvsStats {
        totals: StatsTotals {
            connections: c,
            incoming_packets: ip,
            outgoing_packets: op,
            incoming_bytes: ib,
            outgoing_bytes: ob,
        },
        rates: StatsRates {
            connections_per_second: cr,
            incoming_packets_per_second: ipr,
            outgoing_packets_per_second: opr,
            incoming_bytes_per_second: ibr,
            outgoing_bytes_per_second: obr,
        },
    })
}

impl fmt::Display for IpvsStats {
    /// The whole file, exactly as the kernel prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        let r = &self.rates;
        writeln!(f, "{STATS_HEAD1}")?;
        writeln!(f, "{STATS_HEAD2}")?;
        writeln!(
            f,
            "{:8X} {:8X} {:8X} {:16X} {:16X}\n",
            t.connections, t.incoming_packets, t.outgoing_packets, t.incoming_bytes, t.outgoing_bytes
        )?;
        writeln!(f, "{STATS_RATES_HEAD}")?;
        writeln!(
            f,
            "{:8X} {:8X} {:8X} {:16X} {:16X}",
            r.connections_per_second,
            r.incoming_packets_per_second,
            r.outgoing_packets_per_second,
            r.incoming_bytes_per_second,
            r.outgoing_bytes_per_second
        )
    }
}

// ---------------------------------------------------------------------------------------------------------------
// /proc/net/ip_vs_conn
// ---------------------------------------------------------------------------------------------------------------

/// The header line of `/proc/net/ip_vs_conn` (2.6.37+; older kernels end it at `Expires`, also accepted).
pub const CONNECTIONS_HEADER: &str = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData";
const CONNECTIONS_HEADER_OLD: &str = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires";

/// Largest `Expires` a live entry can show: every IPVS timeout is an `int` of jiffies, at most `INT_MAX / HZ`
/// seconds with `HZ` ≥ 100. Anything larger is an already-expired entry printed by a kernel that computed
/// `(expires - jiffies) / HZ` as an unsigned long (a 64-bit wrap shows ~7·10¹⁶), and is read as 0.
pub const MAX_EXPIRES_SECS: u32 = (i32::MAX / 100) as u32;

/// State of a connection entry, as `ip_vs_state_name()` prints it. Names the kernel may print that are not listed
/// (`ERR!`, `BUG!`, states of future kernels or other protocols) are kept in [`ConnState::Other`], never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnState<'a> {
    /// `NONE`: TCP/SCTP entry without a state yet, or a persistence template not yet confirmed.
    None,
    Established,
    SynSent,
    SynRecv,
    FinWait,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    SynAck,
    /// `UDP`: the single state of UDP entries.
    Udp,
    /// SCTP states (3.x+ names; `NONE` and `ESTABLISHED` are shared with TCP).
    Init1,
    Init,
    CookieSent,
    CookieReplied,
    CookieWait,
    CookieEchoed,
    ShutdownSent,
    ShutdownReceived,
    ShutdownAckSent,
    Rejected,
    Closed,
    /// `ASSURED`: a confirmed persistence template.
    Assured,
    /// Any other name, kept as printed.
    Other(&'a str),
}

impl<'a> ConnState<'a> {
    fn parse(t: &'a [u8]) -> Option<ConnState<'a>> {
        use ConnState::*;
        Some(match t {
            b"ESTABLISHED" => Established,
            b"TIME_WAIT" => TimeWait,
            b"UDP" => Udp,
            b"NONE" => None,
            b"SYN_SENT" => SynSent,
            b"SYN_RECV" => SynRecv,
            b"FIN_WAIT" => FinWait,
            b"CLOSE" => Close,
            b"CLOSE_WAIT" => CloseWait,
            b"LAST_ACK" => LastAck,
            b"LISTEN" => Listen,
            b"SYNACK" => SynAck,
            b"INIT1" => Init1,
            b"INIT" => Init,
            b"COOKIE_SENT" => CookieSent,
            b"COOKIE_REPLIED" => CookieReplied,
            b"COOKIE_WAIT" => CookieWait,
            b"COOKIE_ECHOED" => CookieEchoed,
            b"SHUTDOWN_SENT" => ShutdownSent,
            b"SHUTDOWN_RECEIVED" => ShutdownReceived,
            b"SHUTDOWN_ACK_SENT" => ShutdownAckSent,
            b"REJECTED" => Rejected,
            b"CLOSED" => Closed,
            b"ASSURED" => Assured,
            other => Other(word(other)?),
        })
    }

    /// The name as the kernel prints it.
    pub fn as_str(&self) -> &'a str {
        use ConnState::*;
        match *self {
            None => "NONE",
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait => "FIN_WAIT",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            SynAck => "SYNACK",
            Udp => "UDP",
            Init1 => "INIT1",
            Init => "INIT",
            CookieSent => "COOKIE_SENT",
            CookieReplied => "COOKIE_REPLIED",
            CookieWait => "COOKIE_WAIT",
            CookieEchoed => "COOKIE_ECHOED",
            ShutdownSent => "SHUTDOWN_SENT",
            ShutdownReceived => "SHUTDOWN_RECEIVED",
            ShutdownAckSent => "SHUTDOWN_ACK_SENT",
            Rejected => "REJECTED",
            Closed => "CLOSED",
            Assured => "ASSURED",
            Other(s) => s,
        }
    }
}

impl fmt::Display for ConnState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// `PEName PEData`: the persistence engine attached to an entry (2.6.37+; today only `sip`, whose data is the
/// SIP Call-ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PersistenceEngine<'a> {
    pub name: &'a str,
    /// The rest of the row after the name, surrounding whitespace removed (may be empty).
    pub data: &'a str,
}

/// One row of `/proc/net/ip_vs_conn`. `Copy`, borrows from the input, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection<'a> {
    pub protocol: Protocol,
    /// Client (`FromIP FPrt`).
    pub client: SocketAddr,
    /// Virtual service address (`ToIP TPrt`). For a firewall-mark service this is the packet's destination; for a
    /// persistence template of one (protocol `IP`), the mark printed as an IPv4 address.
    pub virtual_addr: SocketAddr,
    /// Real server (`DestIP DPrt`), in its own family.
    pub real_server: SocketAddr,
    pub state: ConnState<'a>,
    /// Seconds until the entry expires; restarts at the protocol's timeout on every packet. 0 when the kernel
    /// printed a value above [`MAX_EXPIRES_SECS`] (an expired entry on an old kernel).
    pub expires_secs: u32,
    /// Whether `expires_secs` was clamped from such a value.
    pub expires_clamped: bool,
    pub persistence_engine: Option<PersistenceEngine<'a>>,
}

impl<'a> Connection<'a> {
    /// Parses one data row: 9 fields, or 11 and more with a persistence engine (10, a name without data, is
    /// accepted too).
    pub fn from_row(line: &'a [u8]) -> Result<Connection<'a>, ErrorKind> {
        let mut f = Fields::new(line);
        let proto = need(&mut f, line, "protocol")?;
        let protocol = Protocol::from_name(proto).ok_or_else(|| invalid("protocol", proto))?;
        let mut endpoint = |addr_what, port_what| -> Result<SocketAddr, ErrorKind> {
            let a = need(&mut f, line, addr_what)?;
            let ip = parse_bare_addr(a).ok_or_else(|| invalid(addr_what, a))?;
            let p = need(&mut f, line, port_what)?;
            let port = parse_port(p).ok_or_else(|| invalid(port_what, p))?;
            Ok(SocketAddr::new(ip, port))
        };
        let client = endpoint("client address", "client port")?;
        let virtual_addr = endpoint("virtual address", "virtual port")?;
        let real_server = endpoint("real server address", "real server port")?;
        let st = need(&mut f, line, "state")?;
        let state = ConnState::parse(st).ok_or_else(|| invalid("state", st))?;
        let exp = need(&mut f, line, "expires")?;
        if exp.is_empty() || !exp.iter().all(u8::is_ascii_digit) {
            return Err(invalid("expires", exp));
        }
        // Saturating: any number of digits is fine, the clamp below decides.
        let raw = exp.iter().fold(0u64, |v, &d| v.saturating_mul(10).saturating_add(u64::from(d - b'0')));
        let (expires_secs, expires_clamped) =
            if raw > u64::from(MAX_EXPIRES_SECS) { (0, true) } else { (raw as u32, false) };
        let persistence_engine = match f.next() {
            None => None,
            Some(name) => {
                let name = word(name).ok_or_else(|| invalid("persistence engine name", name))?;
                let data = f.remainder();
                let data = std::str::from_utf8(data).map_err(|_| invalid("persistence engine data", data))?;
                Some(PersistenceEngine { name, data })
            }
        };
        Ok(Connection {
            protocol,
            client,
            virtual_addr,
            real_server,
            state,
            expires_secs,
            expires_clamped,
            persistence_engine,
        })
    }

    /// Heuristic: a persistence template rather than a connection. Templates (one per client of a persistent
    /// service) have client port 0 and state `NONE`/`ASSURED`, or protocol `IP` (firewall-mark services).
    pub fn is_persistence_template(&self) -> bool {
        self.protocol == Protocol::IP
            || (self.client.port() == 0 && matches!(self.state, ConnState::None | ConnState::Assured))
    }
}

impl fmt::Display for Connection<'_> {
    /// The row as a current kernel prints it, newline included (`Expires` as parsed, so a clamped value prints 0).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<3} {} {:04X} {} {:04X} {} {:04X} {:<11} {:>7}",
            self.protocol,
            KernelAddr(self.client.ip()),
            self.client.port(),
            KernelAddr(self.virtual_addr.ip()),
            self.virtual_addr.port(),
            KernelAddr(self.real_server.ip()),
            self.real_server.port(),
            self.state,
            self.expires_secs
        )?;
        if let Some(pe) = self.persistence_engine {
            write!(f, " {} {}", pe.name, pe.data)?;
        }
        writeln!(f)
    }
}

/// Parses `/proc/net/ip_vs_conn`. Fails only when the header line is wrong; then yields one `Result` per row.
/// Each row is parsed on demand, without allocation, so memory stays flat however many rows the table has.
pub fn parse_connections(input: &[u8]) -> Result<Connections<'_>, ParseError> {
    let mut lines = Lines::new(input);
    let err = |kind| ParseError { file: IpvsFile::Connections, line: 1, kind };
    let (_, header) = lines.next().ok_or(err(ErrorKind::Truncated { what: "header line" }))?;
    let h = header.trim_ascii_end();
    if h != CONNECTIONS_HEADER.as_bytes() && h != CONNECTIONS_HEADER_OLD.as_bytes() {
        return Err(err(ErrorKind::Header { expected: CONNECTIONS_HEADER, found: Snippet::new(header) }));
    }
    Ok(Connections { lines })
}

/// Iterator over the rows of `/proc/net/ip_vs_conn` (see [`parse_connections`]).
#[derive(Debug, Clone)]
pub struct Connections<'a> {
    lines: Lines<'a>,
}

impl<'a> Iterator for Connections<'a> {
    type Item = Result<Connection<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (number, line) = self.lines.next()?;
            if is_blank(line) {
                continue;
            }
            return Some(Connection::from_row(line).map_err(|kind| ParseError {
                file: IpvsFile::Connections,
                line: number,
                kind,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }
    fn sa(ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, port)
    }
    fn tcp(ip: IpAddr, port: u16) -> VirtualService {
        VirtualService::Socket { protocol: Protocol::TCP, addr: sa(ip, port) }
    }

    /// Splits a table into (services, errors).
    fn services(input: &str) -> (IpvsHeader, Vec<Service<'_>>, Vec<ParseError>) {
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

    fn connections(input: &str) -> (Vec<Connection<'_>>, Vec<ParseError>) {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for row in parse_connections(input.as_bytes()).expect("header parses") {
            match row {
                Ok(c) => ok.push(c),
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }

    fn render_services(header: IpvsHeader, services: &[Service<'_>]) -> String {
        let mut out = header.to_string();
        for s in services {
            out += &s.to_string();
        }
        out
    }

    // Written in the kernel's exact format (net/netfilter/ipvs/ip_vs_ctl.c, 6.x; trailing spaces included):
    // IPv4 services end with "<sched> <ops> ", IPv6 and FWM with "<sched> <ops>", real servers are padded with
    // %-7s %-6d %-10d %-10d.
    const SERVICES_KUBE: &str = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
        "TCP  0A600001:01BB rr  \n",
        "  -> 0AF4031F:192B      Masq    1      2          1         \n",
        "  -> 0AF40220:192B      Masq    1      1          0         \n",
        "UDP  0A60000A:0035 rr ops  \n",
        "  -> 0AF4000B:0035      Masq    1      0          1         \n",
        "TCP  [fd00:0000:0000:0000:0000:0000:0096:0001]:0050 rr \n",
        "  -> [fd00:0000:0000:0000:0000:0000:0244:0031]:1F90      Masq    1      1          0         \n",
        "  -> 0AF40221:1F90      Tunnel  2      0          3         \n",
        "TCP  0A6000C8:1F90 wlc  persistent 75000 FFFFFFFF\n",
        "  -> [fd00:0000:0000:0000:0000:0000:0244:0032]:1F90      Tunnel  0      0          0         \n",
        "TCP  [2620:0000:0000:0000:0000:0000:0000:0001]:01BB sh persistent 180000 80000000\n",
        "FWM  00000001 wlc persistent 360000 FFFFFF00\n",
        "  -> 0AF40040:0000      Route   5      10         20        \n",
        "  -> 0AF40041:0000      Local   1      0          0         \n",
        "FWM  000000FF sh ops \n",
    );

    #[test]
    fn services_header_and_ipv4_service() {
        let (header, svcs, errors) = services(SERVICES_KUBE);
        assert_eq!(errors, vec![]);
        assert_eq!(header.version, (1, 2, 1));
        assert_eq!(header.conn_table_size, 4096);
        assert_eq!(svcs.len(), 7);
        let s = &svcs[0];
        assert_eq!(s.virtual_service, tcp(v4("10.96.0.1"), 443));
        assert_eq!(s.scheduler, "rr");
        assert!(!s.one_packet);
        assert_eq!(s.persistence, None);
        assert_eq!(
            s.real_servers,
            vec![
                RealServer {
                    addr: sa(v4("10.244.3.31"), 6443),
                    forward: Forward::Masq,
                    weight: 1,
                    active_conns: 2,
                    inactive_conns: 1,
                },
                RealServer {
                    addr: sa(v4("10.244.2.32"), 6443),
                    forward: Forward::Masq,
                    weight: 1,
                    active_conns: 1,
                    inactive_conns: 0,
                },
            ]
        );
        let udp = &svcs[1];
        assert_eq!(
            udp.virtual_service,
            VirtualService::Socket { protocol: Protocol::UDP, addr: sa(v4("10.96.0.10"), 53) }
        );
        assert!(udp.one_packet);
        assert_eq!(udp.real_servers.len(), 1);
        assert_eq!(udp.real_servers[0].inactive_conns, 1);
    }

    #[test]
    fn services_ipv6_and_mixed_family_real_servers() {
        let (_, svcs, errors) = services(SERVICES_KUBE);
        assert_eq!(errors, vec![]);
        // IPv6 VIP with an IPv6 and an IPv4 backend.
        let s = &svcs[2];
        assert_eq!(s.virtual_service, tcp(v6("fd00::96:1"), 80));
        assert_eq!(s.real_servers.len(), 2);
        assert_eq!(s.real_servers[0].addr, sa(v6("fd00::244:31"), 8080));
        assert_eq!(s.real_servers[1].addr, sa(v4("10.244.2.33"), 8080));
        assert_eq!(s.real_servers[1].forward, Forward::Tunnel);
        assert_eq!(s.real_servers[1].weight, 2);
        assert_eq!(s.real_servers[1].inactive_conns, 3);
        // IPv4 VIP with an IPv6 backend of weight 0 (quiesced).
        let s = &svcs[3];
        assert_eq!(s.virtual_service, tcp(v4("10.96.0.200"), 8080));
        assert_eq!(s.real_servers.len(), 1);
        assert_eq!(s.real_servers[0].addr, sa(v6("fd00::244:32"), 8080));
        assert_eq!(s.real_servers[0].weight, 0);
    }

    #[test]
    fn services_persistent_suffix() {
        let (_, svcs, _) = services(SERVICES_KUBE);
        assert_eq!(svcs[3].persistence, Some(Persistence { timeout_jiffies: 75000, netmask: 0xFFFF_FFFF }));
        assert_eq!(svcs[3].scheduler, "wlc");
        // IPv6: the prefix length /128 stored in the netmask field and printed through ntohl on little-endian.
        assert_eq!(svcs[4].virtual_service, tcp(v6("2620::1"), 443));
        assert_eq!(svcs[4].persistence, Some(Persistence { timeout_jiffies: 180000, netmask: 0x8000_0000 }));
        assert!(svcs[4].real_servers.is_empty());
        // A negative %d of the unsigned timeout keeps its bits.
        let s = Service::from_line(b"TCP  0A000001:0050 rr  persistent -1 FFFFFFFF").unwrap();
        assert_eq!(s.persistence.unwrap().timeout_jiffies, u32::MAX);
    }

    #[test]
    fn services_firewall_mark() {
        let (_, svcs, _) = services(SERVICES_KUBE);
        let fwm = &svcs[5];
        assert_eq!(fwm.virtual_service, VirtualService::FirewallMark(1));
        assert_eq!(fwm.scheduler, "wlc");
        assert!(!fwm.one_packet);
        assert_eq!(fwm.persistence, Some(Persistence { timeout_jiffies: 360000, netmask: 0xFFFF_FF00 }));
        assert_eq!(fwm.real_servers.len(), 2);
        assert_eq!(fwm.real_servers[0].forward, Forward::Route);
        assert_eq!(fwm.real_servers[0].active_conns, 10);
        assert_eq!(fwm.real_servers[0].inactive_conns, 20);
        assert_eq!(fwm.real_servers[1].forward, Forward::Local);
        let ops = &svcs[6];
        assert_eq!(ops.virtual_service, VirtualService::FirewallMark(255));
        assert!(ops.one_packet);
        assert_eq!(ops.persistence, None);
        assert!(ops.real_servers.is_empty());
    }

    #[test]
    fn services_render_back_byte_for_byte() {
        let (header, svcs, _) = services(SERVICES_KUBE);
        assert_eq!(render_services(header, &svcs), SERVICES_KUBE);
    }

    #[test]
    fn services_every_protocol_keeps_its_own_backends() {
        // One distinct backend per service, so a backend credited to the previous service shows.
        let input = concat!(
            "IP Virtual Server version 1.2.1 (size=4096)\n",
            "Prot LocalAddress:Port Scheduler Flags\n",
            "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
            "TCP  0A000001:0050 rr  \n",
            "  -> 0A010001:0050      Masq    1      0          0         \n",
            "SCTP  0A000002:0B59 rr  \n",
            "  -> 0A010002:0B59      Masq    1      0          0         \n",
            "ICMP  0A000003:0000 rr  \n",
            "  -> 0A010003:0000      Route   1      0          0         \n",
            "ICMPv6  [fd00:0000:0000:0000:0000:0000:0000:0004]:0000 rr \n",
            "  -> [fd00:0000:0000:0000:0000:0000:0001:0004]:0000      Route   1      0          0         \n",
            "IPIP  0A000005:0000 rr  \n",
            "  -> 0A010005:0000      Tunnel  1      0          0         \n",
            "GRE  0A000006:0000 rr  \n",
            "  -> 0A010006:0000      Tunnel  1      0          0         \n",
            "IP_136  0A000007:0050 rr  \n",
            "  -> 0A010007:0050      Masq    1      0          0         \n",
            "IP_47  0A000008:0000 rr  \n",
            "  -> 0A010008:0000      Tunnel  1      0          0         \n",
            "UDP  0A000009:0035 rr  \n",
            "  -> 0A010009:0035      Masq    1      0          0         \n",
        );
        let (_, svcs, errors) = services(input);
        assert_eq!(errors, vec![]);
        let expect = [
            Protocol::TCP,
            Protocol::SCTP,
            Protocol::ICMP,
            Protocol::ICMPV6,
            Protocol::IPIP,
            Protocol::GRE,
            Protocol(136),
            Protocol::GRE, // IP_47 on a kernel without the name
            Protocol::UDP,
        ];
        assert_eq!(svcs.len(), expect.len());
        for (i, (svc, proto)) in svcs.iter().zip(expect).enumerate() {
            let n = i as u16 + 1;
            let VirtualService::Socket { protocol, addr } = svc.virtual_service else {
                panic!("service {n} is not an address service: {svc:?}");
            };
            assert_eq!(protocol, proto, "service {n}");
            assert_eq!(svc.real_servers.len(), 1, "service {n}: {svc:?}");
            // Backend n sits at …1.n and the VIP at …0.n in the same family.
            let backend = svc.real_servers[0].addr.ip();
            match (addr.ip(), backend) {
                (IpAddr::V4(vip), IpAddr::V4(rs)) => {
                    assert_eq!(vip.octets()[3], n as u8);
                    assert_eq!(rs.octets()[3], n as u8);
                    assert_eq!(rs.octets()[1], 1);
                }
                (IpAddr::V6(vip), IpAddr::V6(rs)) => {
                    assert_eq!(vip.segments()[7], n);
                    assert_eq!(rs.segments()[7], n);
                    assert_eq!(rs.segments()[6], 1);
                }
                other => panic!("service {n}: unexpected families {other:?}"),
            }
        }
    }

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

    #[test]
    fn services_malformed_lines_never_move_backends() {
        let input = concat!(
            "IP Virtual Server version 1.2.1 (size=4096)\n",
            "Prot LocalAddress:Port Scheduler Flags\n",
            "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
            "  -> 0A0100FF:0050      Masq    1      0          0         \n", // 4: before any service
            "TCP  0A000001:0050 rr  \n",
            "  -> 0A010001:0050      Masq    1      0          0         \n",
            "  -> 0A01000Z:0050      Masq    1      0          0         \n", // 7: bad address
            "  -> 0A010011:0050      Masq    1      0          \n",           // 8: missing InActConn
            "XTP  0A000002:0050 rr  \n",                                      // 9: unknown protocol
            "  -> 0A010002:0050      Masq    1      0          0         \n", // 10: orphan
            "  -> 0A010012:0050      Masq    1      0          0         \n", // 11: orphan
            "TCP  0A000003:0050 rr  bogus\n",                                 // 12: trailing field
            "  -> 0A010003:0050      Masq    1      0          0         \n", // 13: orphan
            "\n",
            "UDP  0A000004:0035 rr  \n",
            "  -> 0A010004:0035      Masq    1      3          4         \n",
        );
        let (_, svcs, errors) = services(input);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(errors[0].kind, ErrorKind::OrphanRealServer);
        assert!(matches!(errors[1].kind, ErrorKind::Invalid { what: "real server address", .. }));
        assert!(matches!(errors[2].kind, ErrorKind::Missing { what: "inactive connection count", found: 5 }));
        assert!(matches!(errors[3].kind, ErrorKind::Invalid { what: "protocol", .. }));
        assert_eq!(errors[4].kind, ErrorKind::OrphanRealServer);
        assert!(matches!(errors[6].kind, ErrorKind::Trailing { .. }));
        assert_eq!(svcs.len(), 2);
        assert_eq!(svcs[0].virtual_service, tcp(v4("10.0.0.1"), 80));
        assert_eq!(svcs[0].real_servers.iter().map(|r| r.addr).collect::<Vec<_>>(), vec![sa(v4("10.1.0.1"), 80)]);
        assert_eq!(svcs[1].real_servers.len(), 1);
        assert_eq!(svcs[1].real_servers[0].addr, sa(v4("10.1.0.4"), 53));
        assert_eq!(svcs[1].real_servers[0].active_conns, 3);
        // The message names the file, the line and the offending text.
        let msg = errors[1].to_string();
        assert!(msg.contains("/proc/net/ip_vs line 7"), "{msg}");
        assert!(msg.contains("0A01000Z:0050"), "{msg}");
    }

    #[test]
    fn services_headers() {
        let (h, svcs, errs) = services(concat!(
            "IP Virtual Server version 1.2.1 (size=1048576)\n",
            "Prot LocalAddress:Port Scheduler Flags\n",
            "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
        ));
        assert_eq!(h.conn_table_size, 1 << 20);
        assert!(svcs.is_empty() && errs.is_empty());
        let fail = |input: &str| parse_services(input.as_bytes()).unwrap_err();
        let e = fail("");
        assert_eq!((e.line, e.file), (1, IpvsFile::Services));
        assert!(matches!(e.kind, ErrorKind::Truncated { .. }));
        let e = fail("sl  local_address rem_address   st\n");
        assert!(matches!(e.kind, ErrorKind::Header { .. }));
        let e = fail("IP Virtual Server version 1.2 (size=4096)\n");
        assert!(matches!(e.kind, ErrorKind::Header { .. }));
        let e = fail("IP Virtual Server version 1.2.1 (size=-1)\n");
        assert!(matches!(e.kind, ErrorKind::Header { .. }));
        let e = fail("IP Virtual Server version 1.2.1 (size=4096)\n");
        assert_eq!(e.line, 2);
        assert!(matches!(e.kind, ErrorKind::Truncated { .. }));
        let e = fail("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\nTCP\n");
        assert_eq!(e.line, 3);
        assert!(matches!(e.kind, ErrorKind::Header { .. }));
    }

    #[test]
    fn services_field_shapes() {
        let bad = [
            ("TCP  0A00001:0050 rr", "virtual address"),   // 7 hex digits
            ("TCP  0A000001:10050 rr", "virtual address"), // 5-digit port
            ("TCP  0A000001-0050 rr", "virtual address"),
            ("TCP  [fd00::1]:0050 rr", "virtual address"), // compressed: the kernel never prints it
            ("TCP  [fd00:0:0:0:0:0:0:1:2]:0050 rr", "virtual address"),
            ("TCP  [fd00:0000:0000:0000:0000:0000:0000:0001]0050 rr", "virtual address"),
            ("FWM  1FFFFFFFF rr", "firewall mark"),
            ("TCP  0A000001:0050 rr  persistent x FFFFFFFF", "persistence timeout"),
            ("TCP  0A000001:0050 rr  persistent 300 FFFFFFFFF", "persistence netmask"),
        ];
        for (line, what) in bad {
            match Service::from_line(line.as_bytes()) {
                Err(ErrorKind::Invalid { what: w, .. }) => assert_eq!(w, what, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        for (line, what) in [
            ("TCP  0A000001:0050", "scheduler"),
            ("TCP", "virtual address"),
            ("FWM", "firewall mark"),
            ("TCP  0A000001:0050 rr persistent 300", "persistence netmask"),
        ] {
            match Service::from_line(line.as_bytes()) {
                Err(ErrorKind::Missing { what: w, .. }) => assert_eq!(w, what, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        // Scheduler `none` and a negative weight/counter (%d) are data.
        let s = Service::from_line(b"UDP  0A000001:0035 none  ").unwrap();
        assert_eq!(s.scheduler, "none");
        let r = RealServer::from_line(b"  -> 0A000002:0035      Masq    -3     -1         2147483647").unwrap();
        assert_eq!((r.weight, r.active_conns, r.inactive_conns), (-3, -1, i32::MAX));
        assert!(RealServer::from_line(b"  -> 0A000002:0035      Masq    1      0          2147483648").is_err());
        let r = RealServer::from_line(b"  -> 0A000002:0035      Gateway 1      0          0").unwrap();
        assert_eq!(r.forward, Forward::Other("Gateway"));
    }

    // /proc/net/ip_vs_stats in the kernel's exact format (%8LX %8LX %8LX %16LX %16LX).
    const STATS: &str = concat!(
        "   Total Incoming Outgoing         Incoming         Outgoing\n",
        "   Conns  Packets  Packets            Bytes            Bytes\n",
        "  2F1C0A  9A3B77E        0      11E3C3F8E2B                0\n",
        "\n",
        " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n",
        "       C      2D1        0            30A7A                0\n",
    );

    #[test]
    fn stats_totals_and_rates() {
        let s = parse_stats(STATS.as_bytes()).unwrap();
        assert_eq!(
            s.totals,
            StatsTotals {
                connections: 0x2F1C0A,
                incoming_packets: 0x9A3B77E,
                outgoing_packets: 0,
                incoming_bytes: 0x11E3C3F8E2B,
                outgoing_bytes: 0,
            }
        );
        assert_eq!(
            s.rates,
            StatsRates {
                connections_per_second: 12,
                incoming_packets_per_second: 0x2D1,
                outgoing_packets_per_second: 0,
                incoming_bytes_per_second: 0x30A7A,
                outgoing_bytes_per_second: 0,
            }
        );
        assert_eq!(s.to_string(), STATS);
    }

    #[test]
    fn stats_full_width_counters_and_errors() {
        let big = IpvsStats {
            totals: StatsTotals {
                connections: u64::MAX,
                incoming_packets: 1 << 40,
                outgoing_packets: 7,
                incoming_bytes: u64::MAX - 1,
                outgoing_bytes: 0xABCDEF,
            },
            rates: StatsRates::default(),
        };
        assert_eq!(parse_stats(big.to_string().as_bytes()).unwrap(), big);

        let line3 = |row: &str| STATS.replace("  2F1C0A  9A3B77E        0      11E3C3F8E2B                0", row);
        for (input, line) in [
            (line3("  2F1C0A  9A3B77E        0      11E3C3F8E2B"), 3),
            (line3("  2F1C0A  9A3B77E        0      11E3C3F8E2B 0 0"), 3),
            (line3("  2F1C0A  9A3B77G        0      11E3C3F8E2B                0"), 3),
            (line3("  2F1C0A  9A3B77E        0 1FFFFFFFFFFFFFFFF                0"), 3),
            (STATS.replace("\n\n", "\nx\n"), 4),
            (STATS.replace("Conns/s", "Conns/x"), 5),
            (STATS.replace("   Total", "   Totals"), 1),
            (STATS.lines().take(5).collect::<Vec<_>>().join("\n"), 6),
            (format!("{STATS}extra\n"), 7),
        ] {
            let e = parse_stats(input.as_bytes()).unwrap_err();
            assert_eq!(e.line, line, "{input:?}: {e}");
            assert_eq!(e.file, IpvsFile::Stats);
        }
        assert!(parse_stats(format!("{STATS}\n").as_bytes()).is_ok());
    }

    // /proc/net/ip_vs_conn in the kernel's exact format ("%-3s … %-11s %7u%s\n").
    const CONN: &str = concat!(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n",
        "TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED     875\n",
        "TCP 0AF40012 A4F4 0A600001 01BB 0AF40220 192B TIME_WAIT        95\n",
        "UDP 0AF40012 E0A1 0A60000A 0035 0AF4000B 0035 UDP             287\n",
        "TCP fd00:0000:0000:0000:0000:0000:0000:0012 A4F6 fd00:0000:0000:0000:0000:0000:0096:0001 0050 fd00:0000:0000:0000:0000:0000:0244:0031 1F90 ESTABLISHED     870\n",
        "TCP fd00:0000:0000:0000:0000:0000:0000:0012 A4F8 fd00:0000:0000:0000:0000:0000:0096:0001 0050 0AF40221 1F90 SYN_RECV         57\n",
        "TCP 0AF40013 C350 0A6000C8 1F90 fd00:0000:0000:0000:0000:0000:0244:0032 1F90 FIN_WAIT        110\n",
        "SCTP 0AF40014 0B59 0A600014 0B59 0AF40030 0B59 COOKIE_ECHOED       3\n",
        "UDP 0AF40012 13C4 0A600032 13C4 0AF40040 13C4 UDP             170 sip 3c26700c-b4bb-4a6b@10.244.0.18\n",
        "TCP 0AF40012 0000 0A6000C8 1F90 0AF40221 1F90 ASSURED         295\n",
        "IP  0AF40012 0000 00000001 0000 0AF40040 0000 NONE            299\n",
        "TCP 0AF40015 D431 0A600001 01BB 0AF4031F 192B ERR!              0\n",
    );

    #[test]
    fn connections_ipv4_ipv6_and_mixed_families() {
        let (rows, errors) = connections(CONN);
        assert_eq!(errors, vec![]);
        assert_eq!(rows.len(), 11);
        let r = rows[0];
        assert_eq!(r.protocol, Protocol::TCP);
        assert_eq!(r.client, sa(v4("10.244.0.18"), 0xA4F2));
        assert_eq!(r.virtual_addr, sa(v4("10.96.0.1"), 443));
        assert_eq!(r.real_server, sa(v4("10.244.3.31"), 6443));
        assert_eq!(r.state, ConnState::Established);
        assert_eq!((r.expires_secs, r.expires_clamped), (875, false));
        assert_eq!(r.persistence_engine, None);
        assert_eq!(rows[1].state, ConnState::TimeWait);
        assert_eq!(rows[1].expires_secs, 95);
        assert_eq!((rows[2].protocol, rows[2].state), (Protocol::UDP, ConnState::Udp));
        assert_eq!(rows[2].virtual_addr, sa(v4("10.96.0.10"), 53));
        // All IPv6.
        assert_eq!(rows[3].client, sa(v6("fd00::12"), 0xA4F6));
        assert_eq!(rows[3].virtual_addr, sa(v6("fd00::96:1"), 80));
        assert_eq!(rows[3].real_server, sa(v6("fd00::244:31"), 8080));
        // IPv6 client and VIP, IPv4 real server.
        assert_eq!(rows[4].virtual_addr, sa(v6("fd00::96:1"), 80));
        assert_eq!(rows[4].real_server, sa(v4("10.244.2.33"), 8080));
        assert_eq!(rows[4].state, ConnState::SynRecv);
        // IPv4 client and VIP, IPv6 real server.
        assert_eq!(rows[5].client, sa(v4("10.244.0.19"), 50000));
        assert_eq!(rows[5].real_server, sa(v6("fd00::244:32"), 8080));
        assert_eq!(rows[5].state, ConnState::FinWait);
    }

    #[test]
    fn connections_sctp_pe_templates_and_unknown_states() {
        let (rows, _) = connections(CONN);
        assert_eq!(rows[6].protocol, Protocol::SCTP);
        assert_eq!(rows[6].state, ConnState::CookieEchoed);
        assert_eq!(
            rows[7].persistence_engine,
            Some(PersistenceEngine { name: "sip", data: "3c26700c-b4bb-4a6b@10.244.0.18" })
        );
        assert_eq!(rows[7].expires_secs, 170);
        assert_eq!(rows[8].state, ConnState::Assured);
        assert!(rows[8].is_persistence_template());
        assert_eq!(rows[9].protocol, Protocol::IP);
        assert_eq!(rows[9].virtual_addr, sa(v4("0.0.0.1"), 0));
        assert!(rows[9].is_persistence_template());
        assert_eq!(rows[10].state, ConnState::Other("ERR!"));
        assert_eq!(rows[10].state.as_str(), "ERR!");
        assert!(!rows[0].is_persistence_template());
        assert!(!rows[10].is_persistence_template());

        let row = |state: &str| {
            let line = format!("TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B {state:<11}     875");
            let c = Connection::from_row(line.as_bytes()).map(|c| c.state.as_str().to_owned());
            (c, Connection::from_row(line.as_bytes()).map(|c| matches!(c.state, ConnState::Other(_))))
        };
        for known in [
            "NONE",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "SYNACK",
            "UDP",
            "INIT1",
            "INIT",
            "COOKIE_SENT",
            "COOKIE_REPLIED",
            "COOKIE_WAIT",
            "COOKIE_ECHOED",
            "SHUTDOWN_SENT",
            "SHUTDOWN_RECEIVED",
            "SHUTDOWN_ACK_SENT",
            "REJECTED",
            "CLOSED",
            "ASSURED",
        ] {
            assert_eq!(row(known), (Ok(known.to_owned()), Ok(false)), "{known}");
        }
        for unknown in ["BUG!", "SHUTDOWN_PENDING", "established", "NEW_STATE_9"] {
            assert_eq!(row(unknown), (Ok(unknown.to_owned()), Ok(true)), "{unknown}");
        }
    }

    #[test]
    fn connections_pe_columns_field_counts() {
        let base = "UDP 0AF40012 13C4 0A600032 13C4 0AF40040 13C4 UDP             170";
        let line = format!("{base} sip");
        let c = Connection::from_row(line.as_bytes()).unwrap();
        assert_eq!(c.persistence_engine, Some(PersistenceEngine { name: "sip", data: "" }));
        let line = format!("{base} sip a b  c ");
        let c = Connection::from_row(line.as_bytes()).unwrap();
        assert_eq!(c.persistence_engine.unwrap().data, "a b  c");
        let mut bad = format!("{base} sip ").into_bytes();
        bad.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(Connection::from_row(&bad), Err(ErrorKind::Invalid { what: "persistence engine data", .. })));
        // 8 fields: Expires missing.
        assert!(matches!(
            Connection::from_row(b"TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED"),
            Err(ErrorKind::Missing { what: "expires", found: 8 })
        ));
    }

    #[test]
    fn connections_huge_expires_are_clamped() {
        let row = |expires: &str| {
            let line = format!("TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED {expires:>7}");
            let c = Connection::from_row(line.as_bytes()).unwrap();
            (c.expires_secs, c.expires_clamped)
        };
        let hz_250_wrap = (u64::MAX / 250).to_string(); // 64-bit kernel, HZ=250, entry just past its time
        let hz_100_32bit = (u64::from(u32::MAX) / 100).to_string();
        assert_eq!(row(&hz_250_wrap), (0, true));
        assert_eq!(row(&hz_100_32bit), (0, true));
        assert_eq!(row(&u64::MAX.to_string()), (0, true));
        assert_eq!(row("999999999999999999999999999999"), (0, true));
        assert_eq!(row(&MAX_EXPIRES_SECS.to_string()), (MAX_EXPIRES_SECS, false));
        assert_eq!(row(&(MAX_EXPIRES_SECS + 1).to_string()), (0, true));
        assert_eq!(row("0"), (0, false));
        assert_eq!(row("900"), (900, false));
        for bad in ["-1", "12a", "0x10"] {
            let line = format!("TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED {bad}");
            assert!(Connection::from_row(line.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn connections_malformed_rows_are_counted_and_skipped() {
        let input = concat!(
            "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n",
            "TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED     875\n",
            "TCP 0AF4001G A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED     875\n", // 3
            "TCP 0AF40012 A4F2 0A600001 1FFFF 0AF4031F 192B ESTABLISHED    875\n", // 4
            "TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F\n",                          // 5
            "QUIC 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED    875\n", // 6
            "TCP 0AF40012 A4F2 0A600001 01BB fd00::1 192B ESTABLISHED      875\n", // 7
            "TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B EST\x01BLISHED   875\n", // 8
            "\n",
            "UDP 0AF40012 E0A1 0A60000A 0035 0AF4000B 0035 UDP             287",
        );
        let (rows, errors) = connections(input);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].protocol, Protocol::UDP);
        assert_eq!(rows[1].expires_secs, 287);
        let got: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| {
                let what = match &e.kind {
                    ErrorKind::Invalid { what, .. } | ErrorKind::Missing { what, .. } => *what,
                    other => panic!("{other:?}"),
                };
                (e.line, what)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "client address"),
                (4, "virtual port"),
                (5, "real server port"),
                (6, "protocol"),
                (7, "real server address"),
                (8, "state"),
            ]
        );
        assert!(errors[0].to_string().starts_with("/proc/net/ip_vs_conn line 3: invalid client address"));
    }

    #[test]
    fn connections_headers() {
        assert_eq!(connections(&CONN[..CONN.find('\n').unwrap() + 1]).0.len(), 0);
        let old = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires\n\
                   TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED     875\n";
        assert_eq!(connections(old).0.len(), 1);
        for bad in ["", "TCP 0AF40012 A4F2 0A600001 01BB 0AF4031F 192B ESTABLISHED     875\n"] {
            let e = parse_connections(bad.as_bytes()).unwrap_err();
            assert_eq!((e.file, e.line), (IpvsFile::Connections, 1));
        }
    }

    #[test]
    fn connections_render_back_byte_for_byte() {
        let (rows, _) = connections(CONN);
        let mut out = String::from(CONNECTIONS_HEADER);
        out.push('\n');
        for r in &rows {
            out += &r.to_string();
        }
        assert_eq!(out, CONN);
    }

    /// The shared fixtures (`../shared/fixtures/ipvs/` beside the repo) must exist, parse without a single error,
    /// agree with each other, and re-render to the same text (modulo trailing spaces the sample files dropped).
    #[test]
    fn shared_fixture_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/ipvs");
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "shared IPVS fixture {} is missing ({e}); it lives in shared/ beside the repository",
                    path.display()
                )
            })
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

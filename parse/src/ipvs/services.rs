//! `/proc/net/ip_vs`: the virtual services and their real servers.

#[cfg(any(test, feature = "writers"))]
use std::fmt;
#[cfg(any(test, feature = "writers"))]
use std::net::IpAddr;
use std::net::SocketAddr;

#[cfg(any(test, feature = "writers"))]
use super::KernelAddr;
use super::{
    ErrorKind, Fields, IpvsFile, Lines, ParseError, Protocol, Snippet, expect_header, invalid, is_blank, need,
    parse_dec_i32, parse_dec_u64, parse_hex, parse_socket, word,
};

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

#[cfg(any(test, feature = "writers"))]
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

#[cfg(any(test, feature = "writers"))]
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

#[cfg(any(test, feature = "writers"))]
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

#[cfg(any(test, feature = "writers"))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::test_support::*;

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
}

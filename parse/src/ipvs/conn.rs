//! `/proc/net/ip_vs_conn`: the connection table, one row per IPVS connection entry.

#[cfg(any(test, feature = "writers"))]
use std::fmt;
use std::net::SocketAddr;

#[cfg(any(test, feature = "writers"))]
use super::KernelAddr;
use super::{
    ErrorKind, Fields, IpvsFile, Lines, ParseError, Protocol, Snippet, invalid, is_blank, need, parse_bare_addr,
    parse_port, word,
};

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

#[cfg(any(test, feature = "writers"))]
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

#[cfg(any(test, feature = "writers"))]
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
    use crate::ipvs::test_support::*;

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
}

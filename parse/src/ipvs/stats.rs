//! `/proc/net/ip_vs_stats`: totals and rates of the reader's network namespace.

#[cfg(any(test, feature = "writers"))]
use std::fmt;

use super::{
    ErrorKind, Fields, IpvsFile, Lines, ParseError, Snippet, expect_header, invalid, is_blank, need, parse_hex,
};

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

#[cfg(any(test, feature = "writers"))]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

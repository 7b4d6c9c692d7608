//! Per-network-namespace TCP counters: `/proc/<pid>/net/snmp` and `/proc/<pid>/net/sockstat`.
//!
//! Both are O(1) to read however many sockets exist, which lets the TCP collector count ESTABLISHED and TIME_WAIT
//! sockets without dumping them. `CurrEstab` is ESTABLISHED + CLOSE_WAIT since Linux 6.10 (and kernels that
//! back-ported "tcp: count CLOSE-WAIT sockets for TCP_MIB_CURRESTAB"), ESTABLISHED only before; the collector
//! checks which at start-up instead of trusting the version. TCP counters are shared by IPv4 and IPv6.

/// `Tcp: ... CurrEstab ...` from `net/snmp`: header and value lines are matched by column name.
pub fn snmp_tcp_curr_estab(snmp: &str) -> Option<u64> {
    snmp_field(snmp, "Tcp:", "CurrEstab")
}

/// Any field of a two-line `Prefix: names…` / `Prefix: values…` block in `net/snmp` or `net/netstat`.
pub fn snmp_field(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let header = lines.next()?;
    let values = lines.next()?;
    let col = header.split_ascii_whitespace().position(|f| f == name)?;
    values.split_ascii_whitespace().nth(col)?.parse().ok()
}

/// `TCP: inuse N orphan N tw N alloc N mem N` from `net/sockstat`: the TIME_WAIT count of the namespace (IPv4 and
/// IPv6 together).
pub fn sockstat_tcp_tw(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_ascii_whitespace().skip(1);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if k == "tw" {
            return v.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // Linux 6.18.
    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\nTcp: 1 200 120000 -1 24 2 0 11 7 3314 1889 0 0 13 0\nUdp: InDatagrams\nUdp: 5\n";
    const SOCKSTAT: &str = "sockets: used 11\nTCP: inuse 1 orphan 0 tw 3 alloc 1 mem 112\nUDP: inuse 0 mem 0\n";

    #[test]
    fn reads_curr_estab_by_column_name() {
        assert_eq!(snmp_tcp_curr_estab(SNMP), Some(7));
        assert_eq!(snmp_field(SNMP, "Udp:", "InDatagrams"), Some(5));
        assert_eq!(snmp_tcp_curr_estab("Tcp: CurrEstab\n"), None);
        assert_eq!(snmp_tcp_curr_estab(""), None);
    }

    #[test]
    fn reads_time_wait() {
        assert_eq!(sockstat_tcp_tw(SOCKSTAT), Some(3));
        assert_eq!(sockstat_tcp_tw("TCP: inuse 1\n"), None);
        assert_eq!(sockstat_tcp_tw("TCP: inuse 1 orphan 0 tw x\n"), None);
    }
}

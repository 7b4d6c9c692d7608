//! The kernel's TCP states (`include/net/tcp_states.h`), shared by the text and netlink parsers.

/// A TCP socket state as the kernel numbers it. `TCP_NEW_SYN_RECV` (12) is reported as [`TcpState::SynRecv`], as
/// both `/proc/net/tcp` and `ss` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
}

impl TcpState {
    /// All eleven states in kernel order.
    pub const ALL: [TcpState; 11] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    pub fn from_code(code: u8) -> Option<TcpState> {
        match code {
            12 => Some(TcpState::SynRecv),
            1..=11 => Some(TcpState::ALL[usize::from(code) - 1]),
            _ => None,
        }
    }

    /// Index into [`TcpState::ALL`], for per-state counter arrays.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// Bit of this state in a `sock_diag` `idiag_states` mask.
    pub fn mask(self) -> u32 {
        1 << (self as u32)
    }

    /// The label value nodesleuth exports (lower-case, as node_exporter's `tcpstat` spells them).
    pub fn label(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::FinWait1 => "fin_wait1",
            TcpState::FinWait2 => "fin_wait2",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_code(s as u8), Some(s));
            assert_eq!(TcpState::ALL[s.index()], s);
        }
        assert_eq!(TcpState::from_code(12), Some(TcpState::SynRecv));
        assert_eq!(TcpState::from_code(0), None);
        assert_eq!(TcpState::from_code(13), None);
    }
}

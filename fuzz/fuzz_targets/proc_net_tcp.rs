//! `/proc/<pid>/net/tcp{,6}` lines: arbitrary bytes never panic; an accepted row has a known state, and a row
//! with both addresses in one family.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::proc_net_tcp::parse_line;
use nodesleuth_parse::tcp_state::TcpState;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        if let Ok(Some(row)) = parse_line(line) {
            assert!(TcpState::ALL.contains(&row.state));
            assert_eq!(row.local_addr.is_ipv4(), row.remote_addr.is_ipv4());
        }
    }
});

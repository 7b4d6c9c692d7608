//! `/proc/net/ip_vs_conn`: arbitrary bytes never panic; every row that parses renders back in the kernel's format
//! and re-parses to the same value; errors come in line order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::ipvs::{self, Connection};

fuzz_target!(|data: &[u8]| {
    // As a whole file (header first) ...
    check_file(data);
    // ... and with a valid header in front, so mutations need not rediscover it.
    let mut with_header = Vec::with_capacity(ipvs::CONNECTIONS_HEADER.len() + 1 + data.len());
    with_header.extend_from_slice(ipvs::CONNECTIONS_HEADER.as_bytes());
    with_header.push(b'\n');
    with_header.extend_from_slice(data);
    check_file(&with_header);
});

fn check_file(data: &[u8]) {
    let Ok(rows) = ipvs::parse_connections(data) else {
        return;
    };
    let lines = data.split(|&b| b == b'\n').count();
    let mut last_error_line = 0;
    let mut seen = 0;
    for row in rows {
        seen += 1;
        match row {
            Ok(c) => check_row(&c),
            Err(e) => {
                assert!(e.line > last_error_line && e.line <= lines, "{e} after line {last_error_line}");
                last_error_line = e.line;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(seen < lines.max(1), "{seen} rows from {lines} lines (one is the header)");
}

fn check_row(c: &Connection<'_>) {
    assert!(c.expires_secs <= ipvs::MAX_EXPIRES_SECS);
    assert!(!c.expires_clamped || c.expires_secs == 0);
    let text = c.to_string();
    assert_eq!(text.matches('\n').count(), 1);
    assert!(text.ends_with('\n'));
    let again =
        Connection::from_row(text.as_bytes()).unwrap_or_else(|e| panic!("rendered row {text:?} does not parse: {e}"));
    // A clamped Expires renders as 0, which is not clamped when read back.
    assert_eq!(again, Connection { expires_clamped: false, ..*c }, "{text:?}");
}

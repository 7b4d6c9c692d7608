//! `/proc/net/ip_vs_stats`: arbitrary bytes never panic; parsed stats render back in the kernel's format and
//! re-parse to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::ipvs;

const HEADER: &str = concat!(
    "   Total Incoming Outgoing         Incoming         Outgoing\n",
    "   Conns  Packets  Packets            Bytes            Bytes\n",
);

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut with_header = Vec::with_capacity(HEADER.len() + data.len());
    with_header.extend_from_slice(HEADER.as_bytes());
    with_header.extend_from_slice(data);
    check(&with_header);
});

fn check(data: &[u8]) {
    match ipvs::parse_stats(data) {
        Ok(stats) => {
            let text = stats.to_string();
            assert_eq!(text.lines().count(), 6);
            let again = ipvs::parse_stats(text.as_bytes())
                .unwrap_or_else(|e| panic!("rendered stats {text:?} do not parse: {e}"));
            assert_eq!(again, stats);
        }
        Err(e) => {
            let lines = data.split(|&b| b == b'\n').count().max(1);
            assert!(e.line >= 1 && e.line <= lines.max(6), "{e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

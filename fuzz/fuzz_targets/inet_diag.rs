//! `sock_diag` replies: arbitrary bytes never panic, the iterator always ends, and it stops at the first framing
//! error instead of reading on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::inet_diag::{DiagMessage, messages};

fuzz_target!(|data: &[u8]| {
    let mut count = 0usize;
    let mut after_error = false;
    for m in messages(data) {
        assert!(!after_error, "a message after a framing error");
        count += 1;
        match m {
            Ok(DiagMessage::Socket(s)) => assert_eq!(s.local_addr.is_ipv4(), s.remote_addr.is_ipv4()),
            Ok(_) => {}
            Err(_) => after_error = true,
        }
    }
    // Every message is at least a 16-byte header.
    assert!(count <= data.len() / 16 + 1);
});

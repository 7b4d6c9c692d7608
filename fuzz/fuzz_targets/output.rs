//! The output collector's parsers (`syscall`, `io`, fd links, CRI log tails): arbitrary bytes never panic, and what
//! is found is consistent with the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::output::{self, Arch, Target};

fuzz_target!(|data: &[u8]| {
    if let Some((nr, _fd)) = output::syscall_nr_arg0(data) {
        let text = std::str::from_utf8(data).unwrap();
        assert_eq!(text.split_ascii_whitespace().next().and_then(|t| t.parse::<u64>().ok()), Some(nr));
        let _ = (Arch::X86_64.is_write(nr), Arch::Aarch64.is_write(nr));
    }
    if let Some(w) = output::io_wchar(data) {
        assert!(std::str::from_utf8(data).unwrap().contains("wchar:"), "{w}");
    }
    let t = output::classify_fd_link(data, false);
    assert_eq!(t == Target::Pipe, data.starts_with(b"pipe:["));
    assert_eq!(output::classify_fd_link(data, true), Target::Pipe);
    for from_start in [true, false] {
        let tail = output::cri_tail(data, from_start);
        let lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
        assert!(tail.partial + tail.full + tail.other <= lines);
    }
});

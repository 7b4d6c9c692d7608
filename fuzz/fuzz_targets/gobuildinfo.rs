//! Go build info of an ELF file and GODEBUG parsing: arbitrary bytes never panic and never make the parser read
//! more than its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::gobuildinfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = gobuildinfo::read(&mut &data[..]) {
        assert!(b.version.is_empty() || b.version.starts_with("go"));
    }
    let _ = gobuildinfo::godebug_madvdontneed(data);
    if let Some(v) = gobuildinfo::environ_godebug(data) {
        assert!(!v.contains(&0));
    }
});

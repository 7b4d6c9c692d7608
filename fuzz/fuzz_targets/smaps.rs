//! `smaps_rollup`, `status`, `stat` and `smaps` lines: arbitrary bytes never panic; what is parsed is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::smaps;

fuzz_target!(|data: &[u8]| {
    let mut r = smaps::Rollup::default();
    match smaps::parse_rollup(data, &mut r) {
        Ok(()) => {}
        Err(m) => assert!(m.count >= 1 && m.line >= 1),
    }
    for v in [r.rss, r.pss, r.anonymous, r.lazy_free, r.swap].into_iter().flatten() {
        assert_eq!(v % 1024, 0, "values are whole kB");
    }
    let mut s = smaps::StatusMemory::default();
    let _ = smaps::parse_status(data, &mut s);
    if let Some(st) = smaps::parse_stat(data) {
        assert!(st.comm.len() < data.len());
    }
    for line in data.split(|&b| b == b'\n') {
        if let Some(path) = smaps::mapping_header(line) {
            assert!(path.len() < line.len());
        }
        if let Ok(Some((key, _))) = smaps::kb_line(line) {
            assert!(!key.is_empty() && !key.contains(&b':'));
        }
    }
});

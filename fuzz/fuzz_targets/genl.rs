//! Generic netlink replies (IPVS family lookup and timeouts): arbitrary bytes never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::genl;

fuzz_target!(|data: &[u8]| {
    let _ = genl::parse_family_id(data);
    if let Ok(t) = genl::parse_ipvs_config(data) {
        // Whatever was decoded came from the input's bytes.
        assert!(data.len() >= 20 + 3 * 8, "{t:?} decoded from {} bytes", data.len());
    }
});

//! `/proc/net/ip_vs`: arbitrary bytes never panic; the services that parse render back in the kernel's format and
//! re-parse, without a single error, to the same services with the same real servers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::ipvs::{self, RealServer, Service};

const HEADER: &str = concat!(
    "IP Virtual Server version 1.2.1 (size=4096)\n",
    "Prot LocalAddress:Port Scheduler Flags\n",
    "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
);

fuzz_target!(|data: &[u8]| {
    check_file(data);
    let mut with_header = Vec::with_capacity(HEADER.len() + data.len());
    with_header.extend_from_slice(HEADER.as_bytes());
    with_header.extend_from_slice(data);
    check_file(&with_header);

    // Single lines, both ways.
    for line in data.split(|&b| b == b'\n') {
        if let Ok(s) = Service::from_line(line) {
            let text = s.to_string();
            assert_eq!(Service::from_line(text.as_bytes()).as_ref(), Ok(&s), "{text:?}");
        }
        if let Ok(r) = RealServer::from_line(line) {
            let text = r.to_string();
            assert_eq!(RealServer::from_line(text.as_bytes()), Ok(r), "{text:?}");
        }
    }
});

fn check_file(data: &[u8]) {
    let Ok(table) = ipvs::parse_services(data) else {
        return;
    };
    let header = table.header();
    let lines = data.split(|&b| b == b'\n').count();
    let mut services = Vec::new();
    let mut real_servers = 0;
    let mut errors = 0;
    for item in table {
        match item {
            Ok(s) => {
                real_servers += s.real_servers.len();
                services.push(s);
            }
            Err(e) => {
                assert!(e.line > 3 && e.line <= lines, "{e}");
                assert!(!e.to_string().is_empty());
                errors += 1;
            }
        }
    }
    // Every data line is accounted for at most once.
    assert!(services.len() + real_servers + errors <= lines.saturating_sub(3), "more items than lines");

    let mut text = header.to_string();
    for s in &services {
        text += &s.to_string();
    }
    let again = ipvs::parse_services(text.as_bytes()).expect("rendered header parses");
    assert_eq!(again.header(), header);
    let again: Vec<Service<'_>> =
        again.collect::<Result<_, _>>().unwrap_or_else(|e| panic!("rendered table {text:?} has an error: {e}"));
    assert_eq!(again, services, "{text:?}");
}

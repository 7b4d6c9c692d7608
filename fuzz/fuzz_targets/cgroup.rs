//! `/proc/<pid>/cgroup` and kubelet log names: arbitrary text never panics; what is found is well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodesleuth_parse::cgroup;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let r = cgroup::container_ref(text);
    let uid = r.pod_uid.as_str();
    assert!(uid.is_empty() || (uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')));
    assert!(r.container_id.is_empty() || (r.container_id.len() == 64 && text.contains(r.container_id)));
    if let Some((ns, pod, uid)) = cgroup::pod_log_dir(text) {
        assert!(!ns.contains('_') && !pod.contains('_') && !uid.is_empty());
    }
    if let Some((_, _, container, id)) = cgroup::container_log_file(text) {
        assert!(!container.is_empty() && id.len() == 64);
    }
});

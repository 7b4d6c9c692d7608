//! Generic netlink I/O: the IPVS family's configuration (its timeouts), read inside the host's network namespace.
//! Message building and decoding are `nodesleuth_parse::genl`; the socket I/O is shared with `sock_diag`.

use std::path::{Path, PathBuf};

use nodesleuth_parse::genl;

use crate::netns;

/// The kernel's IPVS timeouts, asked over generic netlink (family lookup, then `IPVS_CMD_GET_CONFIG`) from a
/// socket made inside the namespace of `host_ns` (a `/proc/<pid>/ns/net` path). Fails where IPVS is not loaded
/// or the caller may not enter the namespace; the caller then falls back to its flags.
pub fn ipvs_timeouts(host_ns: &Path) -> Result<genl::IpvsTimeouts, String> {
    let paths: Vec<PathBuf> = vec![host_ns.to_path_buf()];
    let sock = netns::sockets_in(&paths, libc::AF_NETLINK, libc::SOCK_RAW, genl::NETLINK_GENERIC)
        .pop()
        .ok_or("no socket")?
        .map_err(|e| format!("netlink socket in host namespace: {e}"))?;
    let reply = crate::sock_diag::roundtrip(&sock, &genl::get_family_request(genl::IPVS_GENL_NAME, 1))
        .map_err(|e| e.to_string())?;
    let family = genl::parse_family_id(&reply).map_err(|e| format!("IPVS generic netlink family: {e}"))?;
    let reply =
        crate::sock_diag::roundtrip(&sock, &genl::ipvs_get_config_request(family, 2)).map_err(|e| e.to_string())?;
    genl::parse_ipvs_config(&reply).map_err(|e| format!("IPVS_CMD_GET_CONFIG: {e}"))
}

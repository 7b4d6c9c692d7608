//! Generic netlink, just enough to read the IPVS timeouts (`ipvsadm -L --timeout`): resolve the `IPVS` family
//! through `nlctrl`, then `IPVS_CMD_GET_CONFIG` (`linux/ip_vs.h`, `linux/genetlink.h`). Pure encoding and
//! decoding; the exporter owns the socket. The timeouts are in seconds (the kernel converts from jiffies).

pub const NETLINK_GENERIC: i32 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
pub const IPVS_GENL_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;
const IPVS_CMD_GET_CONFIG: u8 = 13;
const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;
use crate::netlink::{self, NLM_F_REQUEST, NLMSG_ERROR};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GenlError {
    #[error("kernel answered errno {0}")]
    Kernel(i32),
    #[error("reply truncated or malformed")]
    Malformed,
    #[error("reply lacks attribute {0}")]
    MissingAttribute(u16),
}

/// The IPVS protocol timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsTimeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

fn message(kind: u16, seq: u32, cmd: u8, version: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 20];
    m[16] = cmd;
    m[17] = version;
    for (t, payload) in attrs {
        let len = 4 + payload.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
    }
    let total = m.len();
    netlink::write_header(&mut m, total, kind, NLM_F_REQUEST, seq);
    m
}

/// `CTRL_CMD_GETFAMILY` for a family name.
pub fn get_family_request(name: &str, seq: u32) -> Vec<u8> {
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    message(GENL_ID_CTRL, seq, CTRL_CMD_GETFAMILY, 1, &[(CTRL_ATTR_FAMILY_NAME, &n)])
}

/// `IPVS_CMD_GET_CONFIG` for the resolved family id.
pub fn ipvs_get_config_request(family: u16, seq: u32) -> Vec<u8> {
    message(family, seq, IPVS_CMD_GET_CONFIG, IPVS_GENL_VERSION, &[])
}

/// The attributes of the first message of a reply, after its generic netlink header.
fn reply_attrs(reply: &[u8]) -> Result<Vec<(u16, &[u8])>, GenlError> {
    let len =
        reply.get(0..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or(GenlError::Malformed)?;
    let kind = reply.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]])).ok_or(GenlError::Malformed)?;
    if len < netlink::NLMSG_HDRLEN || len > reply.len() {
        return Err(GenlError::Malformed);
    }
    if kind == NLMSG_ERROR {
        let errno = netlink::error_code(&reply[netlink::NLMSG_HDRLEN..]).ok_or(GenlError::Malformed)?;
        return Err(GenlError::Kernel(errno));
    }
    let mut at = 20;
    let mut out = Vec::new();
    while at + 4 <= len {
        let alen = u16::from_ne_bytes([reply[at], reply[at + 1]]) as usize;
        let atype = u16::from_ne_bytes([reply[at + 2], reply[at + 3]]) & 0x3fff; // strip NLA_F_NESTED/NET_BYTEORDER
        if alen < 4 || at + alen > len {
            return Err(GenlError::Malformed);
        }
        out.push((atype, &reply[at + 4..at + alen]));
        at += (alen + 3) & !3;
    }
    Ok(out)
}

fn u32_attr(attrs: &[(u16, &[u8])], t: u16) -> Result<u32, GenlError> {
    let (_, p) = attrs.iter().find(|(k, _)| *k == t).ok_or(GenlError::MissingAttribute(t))?;
    p.get(0..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])).ok_or(GenlError::Malformed)
}

/// The family id from a `CTRL_CMD_GETFAMILY` reply; `Kernel(ENOENT)` when the family is not registered (IPVS
/// module not loaded, or a kernel built without it).
pub fn parse_family_id(reply: &[u8]) -> Result<u16, GenlError> {
    let attrs = reply_attrs(reply)?;
    let (_, p) = attrs
        .iter()
        .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
        .ok_or(GenlError::MissingAttribute(CTRL_ATTR_FAMILY_ID))?;
    p.get(0..2).map(|b| u16::from_ne_bytes([b[0], b[1]])).ok_or(GenlError::Malformed)
}

/// The timeouts from an `IPVS_CMD_GET_CONFIG` reply.
pub fn parse_ipvs_config(reply: &[u8]) -> Result<IpvsTimeouts, GenlError> {
    let attrs = reply_attrs(reply)?;
    Ok(IpvsTimeouts {
        tcp: u32_attr(&attrs, IPVS_CMD_ATTR_TIMEOUT_TCP)?,
        tcp_fin: u32_attr(&attrs, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN)?,
        udp: u32_attr(&attrs, IPVS_CMD_ATTR_TIMEOUT_UDP)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_request_layout() {
        let r = get_family_request("IPVS", 5);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize, r.len());
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), GENL_ID_CTRL);
        assert_eq!((r[16], r[17]), (CTRL_CMD_GETFAMILY, 1));
        assert_eq!(u16::from_ne_bytes([r[20], r[21]]), 9, "attr len = 4 + \"IPVS\\0\"");
        assert_eq!(u16::from_ne_bytes([r[22], r[23]]), CTRL_ATTR_FAMILY_NAME);
        assert_eq!(&r[24..29], b"IPVS\0");
        assert_eq!(r.len() % 4, 0);
    }

    #[test]
    fn parses_family_and_timeouts() {
        // A reply is laid out like a request: reuse the encoder to build the kernel's answers.
        let reply = message(
            GENL_ID_CTRL,
            1,
            1,
            2,
            &[(CTRL_ATTR_FAMILY_NAME, b"IPVS\0"), (CTRL_ATTR_FAMILY_ID, &0x1cu16.to_ne_bytes())],
        );
        assert_eq!(parse_family_id(&reply), Ok(0x1c));
        let cfg = message(
            0x1c,
            2,
            IPVS_CMD_GET_CONFIG,
            1,
            &[
                (IPVS_CMD_ATTR_TIMEOUT_TCP, &7200u32.to_ne_bytes()),
                (IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, &120u32.to_ne_bytes()),
                (IPVS_CMD_ATTR_TIMEOUT_UDP, &300u32.to_ne_bytes()),
            ],
        );
        assert_eq!(parse_ipvs_config(&cfg), Ok(IpvsTimeouts { tcp: 7200, tcp_fin: 120, udp: 300 }));
        let partial = message(0x1c, 2, IPVS_CMD_GET_CONFIG, 1, &[(IPVS_CMD_ATTR_TIMEOUT_TCP, &900u32.to_ne_bytes())]);
        assert_eq!(parse_ipvs_config(&partial), Err(GenlError::MissingAttribute(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN)));
    }

    #[test]
    fn kernel_errors_and_garbage() {
        let mut err = vec![0u8; 36];
        err[0..4].copy_from_slice(&36u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(parse_family_id(&err), Err(GenlError::Kernel(2)));
        assert_eq!(parse_family_id(&[1, 2, 3]), Err(GenlError::Malformed));
        let mut bad = get_family_request("IPVS", 1);
        bad[20] = 200; // attribute longer than the message
        assert_eq!(parse_family_id(&bad), Err(GenlError::Malformed));
    }
}

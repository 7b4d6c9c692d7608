//! The netlink message header (`struct nlmsghdr`, `linux/netlink.h`) shared by the `sock_diag` and generic
//! netlink codecs. Host-endian.

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_DUMP: u16 = 0x300;

/// Writes a header (length, type, flags, sequence; port id 0 = the kernel) into the first 16 bytes of `msg`.
pub fn write_header(msg: &mut [u8], len: usize, kind: u16, flags: u16, seq: u32) {
    msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
}

/// The positive errno of an `NLMSG_ERROR` body (0 = an acknowledgement). The kernel sends it negated; a corrupt
/// body holding `i32::MIN`, which has no negation, reads as `i32::MAX`.
pub fn error_code(body: &[u8]) -> Option<i32> {
    let e = i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?);
    Some(e.checked_neg().unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_error_code() {
        let mut m = [0u8; 20];
        write_header(&mut m, 20, 18, NLM_F_REQUEST | NLM_F_DUMP, 7);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 18);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(error_code(&(-2i32).to_ne_bytes()), Some(2));
        assert_eq!(error_code(&0i32.to_ne_bytes()), Some(0));
        assert_eq!(error_code(&i32::MIN.to_ne_bytes()), Some(i32::MAX));
        assert_eq!(error_code(&[1, 2]), None);
    }
}

//! Tiny allocation-free hex helpers shared by the text parsers.

/// Parses up to 16 hex digits (either case). `None` for empty, too long or non-hex input.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Parses up to 8 hex digits.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.len() > 8 {
        return None;
    }
    parse_u64(s).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_rejects_bad_input() {
        assert_eq!(parse_u64(b"0A"), Some(10));
        assert_eq!(parse_u64(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_u64(b"1ffffffffffffffff"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"0x1"), None);
        assert_eq!(parse_u32(b"100000000"), None);
        assert_eq!(parse_u32(b"DEADBEEF"), Some(0xDEAD_BEEF));
    }
}

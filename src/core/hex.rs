//! Lower-case hexadecimal, for the digests that name things (derived trace and task IDs,
//! asset hashes): one allocation, not one `format!` per byte.

/// `bytes` as lower-case hex, two digits per byte.
pub fn lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_two_lower_case_digits_per_byte_as_format_does() {
        let bytes = [0x00, 0x01, 0x0f, 0x10, 0x7f, 0xab, 0xff];
        let by_format: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::lower(&bytes), by_format);
        assert_eq!(super::lower(&[]), "");
    }
}

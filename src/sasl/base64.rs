//! Base64 (RFC 4648 §4: standard alphabet, `=` padding) for SASL payloads and SCRAM attributes.
//!
//! Decoding is strict: it never skips whitespace or unknown characters and rejects
//! non-canonical input (missing/extra padding, non-zero pad bits), because a lenient
//! decoder would let two different peer strings mean the same bytes (RFC 6120 §6.4.2).

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let group = u32::from(b0) << 16 | u32::from(b1) << 8 | u32::from(b2);
        let sextet = |shift: u32| sextet_char(group >> shift);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// The alphabet character for the low six bits of `bits`; the inverse of [`sextet_value`].
fn sextet_char(bits: u32) -> char {
    let v = (bits & 0x3f) as u8;
    char::from(match v {
        0..=25 => b'A' + v,
        26..=51 => b'a' + (v - 26),
        52..=61 => b'0' + (v - 52),
        62 => b'+',
        // 63: the mask leaves nothing higher.
        _ => b'/',
    })
}

fn sextet_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes canonical padded base64; `None` on any deviation. The empty string is empty data.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.chunks_exact(4);
    let last_index = quads.len().checked_sub(1);
    for (index, quad) in quads.enumerate() {
        let padding = quad.iter().rev().take_while(|&&c| c == b'=').count();
        // Padding only at the very end, and at most two characters of it.
        if padding > 2 || (padding > 0 && Some(index) != last_index) {
            return None;
        }
        let mut group = 0u32;
        for &c in quad.iter().take(4 - padding) {
            group = group << 6 | sextet_value(c)?;
        }
        group <<= 6 * padding as u32;
        let [_, b0, b1, b2] = group.to_be_bytes();
        match padding {
            0 => out.extend_from_slice(&[b0, b1, b2]),
            // Bits that fall into the padding must be zero (canonical encoding).
            1 if b2 == 0 => out.extend_from_slice(&[b0, b1]),
            2 if b1 == 0 && b2 == 0 => out.push(b0),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC4648_VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc4648_vectors_round_trip() {
        for (plain, encoded) in RFC4648_VECTORS {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn all_byte_values_round_trip() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let encoded = encode(&data[..len]);
            assert_eq!(decode(&encoded).as_deref(), Some(&data[..len]));
        }
        assert_eq!(encode(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn every_sextet_maps_to_its_alphabet_character_and_back() {
        for v in 0..64 {
            let c = sextet_char(v);
            assert!(c.is_ascii_alphanumeric() || c == '+' || c == '/');
            assert_eq!(sextet_value(c as u8), Some(v));
        }
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "Zg",        // missing padding
            "Zg=",       // short padding
            "Zg===",     // too long
            "Z===",      // three pad characters
            "====",      // only padding
            "Zg==Zg==",  // padding in the middle
            "Zm9v\n",    // whitespace
            " Zm9v",     // leading space
            "Zm 9v",     // embedded space
            "Zm9v!mFy",  // bad character
            "Zm9-",      // URL-safe alphabet
            "Zm9_",      // URL-safe alphabet
            "Zh==",      // non-zero pad bits
            "Zm9=",      // non-zero pad bits
            "Z=9v",      // padding before data
            "Zm9vYmFy=", // stray padding
        ] {
            assert_eq!(decode(bad), None, "{bad:?} should be rejected");
        }
    }
}

//! GPT-2's byte-level alphabet: the reversible map between the 256 byte values and 256
//! printable Unicode characters that byte-level BPE vocabularies are written in.

use std::sync::OnceLock;

struct Tables {
    byte_to_char: [char; 256],
    char_to_byte: std::collections::HashMap<char, u8>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        // Printable Latin-1 bytes map to themselves; the rest are shifted past U+0100, in order.
        let keeps = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let mut byte_to_char = ['\0'; 256];
        let mut char_to_byte = std::collections::HashMap::with_capacity(256);
        let mut next = 0u32;
        for b in 0u32..256 {
            let code = if keeps(b) {
                b
            } else {
                next += 1;
                255 + next
            };
            let c = char::from_u32(code).unwrap_or('\u{FFFD}');
            byte_to_char[b as usize] = c;
            char_to_byte.insert(c, b as u8);
        }
        Tables { byte_to_char, char_to_byte }
    })
}

/// Maps each byte of `text` to its byte-level character (`' '` → `'Ġ'`, `'\n'` → `'Ċ'`).
pub fn encode_bytes(text: &str) -> String {
    let t = tables();
    text.bytes().map(|b| t.byte_to_char[b as usize]).collect()
}

/// The byte-level character for one byte.
#[cfg(test)]
pub fn byte_char(b: u8) -> char {
    tables().byte_to_char[b as usize]
}

/// The bytes a byte-level token stands for; `None` when some character is outside the alphabet
/// (HF's ByteLevel decoder then uses the token's own UTF-8 bytes).
pub fn decode_token(token: &str) -> Option<Vec<u8>> {
    let t = tables();
    token.chars().map(|c| t.char_to_byte.get(&c).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters_and_round_trip() {
        assert_eq!(encode_bytes(" "), "Ġ");
        assert_eq!(encode_bytes("\n"), "Ċ");
        assert_eq!(encode_bytes("a!~"), "a!~");
        assert_eq!(byte_char(0xAD), 'Ń');
        let all: Vec<u8> = (0..=255u8).collect();
        let text: String = all.iter().map(|&b| byte_char(b)).collect();
        assert_eq!(decode_token(&text), Some(all));
        assert_eq!(decode_token("héllo→"), None);
        let emoji = "😀";
        assert_eq!(decode_token(&encode_bytes(emoji)).as_deref(), Some(emoji.as_bytes()));
    }
}

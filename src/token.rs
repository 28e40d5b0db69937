//! Token identifiers.
//!
//! A token is a UUID v4; in memory it is its 128-bit value (16 bytes instead
//! of a 36-byte string), on the wire its canonical lower-case text.

use std::hash::{BuildHasherDefault, Hasher};
use uuid::Uuid;

/// A token's 128-bit value.
pub type TokenId = u128;

/// Length of a token's canonical text (`8-4-4-4-12` hex digits and dashes).
pub const TOKEN_TEXT_LEN: usize = 36;

/// Makes a UUID v4 from 16 random bytes.
pub fn from_random(bytes: [u8; 16]) -> TokenId {
    uuid::Builder::from_random_bytes(bytes).into_uuid().as_u128()
}

/// Parses a client-supplied token. Anything that is not a canonical UUID
/// cannot be a token the server made, so callers answer `-NOTOKEN` for `None`.
pub fn parse(text: &[u8]) -> Option<TokenId> {
    if text.len() != TOKEN_TEXT_LEN {
        return None;
    }
    Uuid::try_parse_ascii(text).ok().map(|u| u.as_u128())
}

/// The canonical text of a token.
pub fn format(id: TokenId) -> [u8; TOKEN_TEXT_LEN] {
    let mut buf = [0u8; TOKEN_TEXT_LEN];
    Uuid::from_u128(id).hyphenated().encode_lower(&mut buf);
    buf
}

/// Hasher for maps keyed by token.
///
/// Keys in those maps are only ever tokens the server generated from a CSPRNG,
/// so their bits are already uniformly random and an attacker cannot choose
/// them: folding the 128 bits is as good as SipHash here and several times
/// cheaper. (Client-chosen keys — pool names — use the default SipHash.)
#[derive(Default, Clone, Copy)]
pub struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u128(&mut self, v: u128) {
        // The v4 version/variant bits sit in the middle; mixing both halves
        // keeps all 122 random bits in play.
        self.0 = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u128/u64 keys; a plain FNV-1a keeps it correct anyway.
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// `BuildHasher` for token-keyed maps.
pub type TokenHash = BuildHasherDefault<TokenHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_v4() {
        let id = from_random([7u8; 16]);
        let text = format(id);
        let u = Uuid::parse_str(std::str::from_utf8(&text).unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(parse(&text), Some(id));
    }

    #[test]
    fn rejects_non_canonical() {
        assert_eq!(parse(b"nope"), None);
        assert_eq!(parse(b"{67e55044-10b1-426f-9247-bb680e5fe0c8}"), None);
        assert_eq!(parse(b"67e5504410b1426f9247bb680e5fe0c8"), None);
        assert!(parse(b"67e55044-10b1-426f-9247-bb680e5fe0c8").is_some());
    }
}

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

/// Makes a UUID v4 from 16 random bytes whose low 32 bits name `slot`, the
/// token's place in its pool, masked with `key` so that the number does not
/// show (see [`slot_of`]). The other 90 random bits are untouched, so a token
/// is as hard to guess as before; the text is still a canonical UUID v4.
pub fn with_slot(bytes: [u8; 16], slot: u32, key: u64) -> TokenId {
    let id = from_random(bytes);
    (id & !0xffff_ffff) | u128::from(slot ^ slot_mask(id, key))
}

/// The slot a token names (for a token made by [`with_slot`] with the same
/// key). Any other token names some slot too; callers check that the slot
/// holds this very token before trusting it, so a wrong key or an old token
/// only costs a slower lookup, never a wrong answer.
pub fn slot_of(id: TokenId, key: u64) -> u32 {
    (id as u32) ^ slot_mask(id, key)
}

/// 32 bits derived from a token's upper 96 bits and the key (a murmur3
/// finalizer: cheap, and it spreads every input bit over the output). It
/// only hides the slot number from view; nothing relies on it being secret.
fn slot_mask(id: TokenId, key: u64) -> u32 {
    let fmix = |mut h: u64| {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    };
    let hi = (id >> 64) as u64;
    let mid = (id >> 32) as u32 as u64;
    (fmix(hi ^ key ^ fmix(mid ^ key.rotate_left(32))) >> 16) as u32
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
///
/// Every token sent is formatted here: each expired event, each token of a
/// GEN reply. On x86-64 the 32 hex digits are made in two SSE2 registers
/// (SSE2 is part of the x86-64 baseline, so no detection): 6–8 ns a token
/// against 22–32 ns for `uuid`'s encoder and 24–35 ns for `uuid-simd`'s,
/// whose dispatch costs more than 16 bytes take (measured side by side,
/// 1M random tokens; `uuid`'s encoder was 7.6% of a mass expiry's CPU).
/// Elsewhere, `uuid`'s.
#[inline]
pub fn format(id: TokenId) -> [u8; TOKEN_TEXT_LEN] {
    #[cfg(target_arch = "x86_64")]
    {
        let hex = hex_sse2(id.to_be_bytes());
        let mut text = [b'-'; TOKEN_TEXT_LEN];
        text[0..8].copy_from_slice(&hex[0..8]);
        text[9..13].copy_from_slice(&hex[8..12]);
        text[14..18].copy_from_slice(&hex[12..16]);
        text[19..23].copy_from_slice(&hex[16..20]);
        text[24..36].copy_from_slice(&hex[20..32]);
        text
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut text = [0u8; TOKEN_TEXT_LEN];
        Uuid::from_u128(id).hyphenated().encode_lower(&mut text);
        text
    }
}

/// The 32 lower-case hex digits of 16 bytes, in order.
#[cfg(target_arch = "x86_64")]
#[inline]
fn hex_sse2(bytes: [u8; 16]) -> [u8; 32] {
    use std::arch::x86_64::*;
    let mut hex = [0u8; 32];
    // SAFETY: SSE2 is always there on x86-64; the loads and stores are
    // unaligned ones of exactly 16 bytes within `bytes` and `hex`.
    unsafe {
        let v = _mm_loadu_si128(bytes.as_ptr().cast());
        let low4 = _mm_set1_epi8(0x0f);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
        let lo = _mm_and_si128(v, low4);
        // A nibble n becomes '0' + n, and 'a' - '0' - 10 = 39 more above 9.
        let ascii = |n: __m128i| {
            let above9 = _mm_cmpgt_epi8(n, _mm_set1_epi8(9));
            _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8(b'0' as i8)), _mm_and_si128(above9, _mm_set1_epi8(39)))
        };
        _mm_storeu_si128(hex.as_mut_ptr().cast(), ascii(_mm_unpacklo_epi8(hi, lo)));
        _mm_storeu_si128(hex.as_mut_ptr().add(16).cast(), ascii(_mm_unpackhi_epi8(hi, lo)));
    }
    hex
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
    fn format_matches_uuids_own_text() {
        let uuids = |id: TokenId| {
            let mut text = [0u8; TOKEN_TEXT_LEN];
            Uuid::from_u128(id).hyphenated().encode_lower(&mut text);
            text
        };
        let mut ids = vec![0, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210];
        // Every byte value in every position, and random tokens.
        for b in 0..=255u8 {
            for at in 0..16 {
                ids.push(u128::from(b) << (8 * at));
                ids.push(!(u128::from(b) << (8 * at)));
            }
        }
        ids.extend((0..10_000).map(|_| Uuid::new_v4().as_u128()));
        for id in ids {
            assert_eq!(format(id), uuids(id), "{id:032x}");
        }
    }

    #[test]
    fn slot_round_trip() {
        for (i, slot) in [0u32, 1, 7, 65_535, 9_999_999, u32::MAX].into_iter().enumerate() {
            let key = 0x1234_5678_9abc_def0 ^ i as u64;
            let id = with_slot([i as u8 * 31 + 1; 16], slot, key);
            assert_eq!(slot_of(id, key), slot);
            assert_eq!(Uuid::from_u128(id).get_version_num(), 4);
            assert_eq!(parse(&format(id)), Some(id));
        }
        // The number does not show in the text.
        assert!((1..50u32).all(|s| with_slot([s as u8; 16], s, 99) as u32 != s));
        assert_ne!(slot_of(with_slot([5; 16], 1, 99), 98), 1, "another key names another slot");
    }

    #[test]
    fn rejects_non_canonical() {
        assert_eq!(parse(b"nope"), None);
        assert_eq!(parse(b"{67e55044-10b1-426f-9247-bb680e5fe0c8}"), None);
        assert_eq!(parse(b"67e5504410b1426f9247bb680e5fe0c8"), None);
        assert!(parse(b"67e55044-10b1-426f-9247-bb680e5fe0c8").is_some());
    }
}

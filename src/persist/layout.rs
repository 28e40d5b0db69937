//! The backing Redis's key layout: key names, hash slots, and the record
//! format.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P{pool}:slab:K` | string | the records of the pool's slots `K·16384 … K·16384 + 16383`, 64 bytes each at `(slot mod 16384)·64` (see [`encode_slot`]); all zero where no live token is |
//! | `P{pool}:slabs` | set | the numbers `K` of the pool's `slab:K` strings |
//! | `P{pool}:tokens` | hash | earlier layouts' records: token → `state:life_deadline:lease_deadline:lifetime_ms:lease_ms:times_acquired` (`f` free / `a` assigned; deadlines in ms of the persisted frame, see [`crate::persist`]; `lease_deadline` 0 when free); read at recovery, then moved to slots and deleted |
//! | `P{pool}:expired` | hash | remembered expired token → when it is forgotten (same frame) |
//! | `P{τS}:pools` | set | the pools of hash slot S |
//! | `P{τS}:fence` | hash | slot S's owner (`owner` = node id and epoch, `epoch`, `addr`) and the last write batch applied (`seq`) |
//! | `Ppools` | set | pool names written by earlier versions (read at recovery, emptied as pools move to the slot sets) |
//! | `Pslotkey` | string | the key that masks slot numbers in tokens |
//! | `Please` | string | the single-owner lease: `<node id> <address>`, with a TTL |
//! | `P{nodes}:members` | sorted set | cluster mode: live node ids, scored with when their heartbeat lapses (ms, Redis's clock) |
//! | `P{nodes}:addrs` | hash | cluster mode: node id → `host:port` |
//! | `P{nodes}:owners` | hash | cluster mode: node id → its current incarnation (the owner string its fences carry) |
//! | `P{nodes}:fence:<id>` | hash | cluster mode: the fence of a node's batches that only publish events |
//! | `P{nodes}:events` | channel | cluster mode: every node's events, `<node id> <channel length>\n<channel><message>` |
//! | `Pclock` | string | the persisted frame's offset from the wall clock, ms |
//!
//! `P` is `--redis-prefix`. A pool's keys carry the pool as their `{hash
//! tag}`, so they live in the Redis Cluster hash slot the pool itself maps
//! to (slot S, the slot tokend's cluster mode routes the pool by);
//! `τS` is a short tag that hashes to slot S, so a slot's fence and pool set
//! share that slot too, and every write of a slot is one atomic call on one
//! Redis node. A pool whose name holds `{` or `}` could not be its own tag
//! (its first `{…}` would pick another slot), so its keys are
//! `P{τS}:<pool>:tokens`, `P{τS}:<pool>:expired` and so on instead.
//!
//! A live token's record is kept at the place of the slot it holds in
//! tokend's slab, so recovery reads a pool as a few big strings (cheap for
//! Redis to send, and for tokend to read) and puts each token back in its
//! slot. A slot is held by one token at a time, here and there.

use super::super::store::Record;

pub use crate::cluster::{SLOTS, keyslot};

/// A short string whose hash slot is `slot` (the same for every prefix),
/// found once by trying `0`, `1`, … in base 36.
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS as usize];
        let mut left = SLOTS as usize;
        let mut n: u64 = 0;
        while left > 0 {
            let mut s = String::new();
            let mut k = n;
            loop {
                s.insert(0, char::from_digit((k % 36) as u32, 36).unwrap_or('0'));
                k /= 36;
                if k == 0 {
                    break;
                }
            }
            let slot = keyslot(s.as_bytes()) as usize;
            if tags[slot].is_empty() {
                tags[slot] = s;
                left -= 1;
            }
            n += 1;
        }
        tags
    });
    &tags[slot as usize]
}

/// True if a pool can be its own hash tag (no braces in its name).
fn own_tag(pool: &[u8]) -> bool {
    !pool.iter().any(|&b| b == b'{' || b == b'}')
}

/// Key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (which must not contain `{` or `}`: its tag
    /// would put every key in one slot).
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_string() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn pool_key(&self, pool: &[u8], suffix: &str) -> Vec<u8> {
        if own_tag(pool) {
            [self.prefix.as_bytes(), b"{", pool, b"}:", suffix.as_bytes()].concat()
        } else {
            let tag = slot_tag(keyslot(pool)).as_bytes();
            [self.prefix.as_bytes(), b"{", tag, b"}:", pool, b":", suffix.as_bytes()].concat()
        }
    }

    /// A pool's token hash.
    pub fn tokens(&self, pool: &[u8]) -> Vec<u8> {
        self.pool_key(pool, "tokens")
    }

    /// The string that holds the records of a pool's slots
    /// `k·SLAB_SLOTS…`.
    pub fn slab(&self, pool: &[u8], k: u32) -> Vec<u8> {
        self.pool_key(pool, &format!("slab:{k}"))
    }

    /// What [`Keys::slab`] puts before the number.
    pub fn slab_prefix(&self, pool: &[u8]) -> Vec<u8> {
        self.pool_key(pool, "slab:")
    }

    /// The set of the numbers of a pool's slab strings.
    pub fn slabs(&self, pool: &[u8]) -> Vec<u8> {
        self.pool_key(pool, "slabs")
    }

    /// A pool's remembered-expired hash.
    pub fn expired(&self, pool: &[u8]) -> Vec<u8> {
        self.pool_key(pool, "expired")
    }

    /// Earlier versions' key of a pool's token hash (`P{pool}:tokens`
    /// whatever the name holds).
    pub fn legacy_tokens(&self, pool: &[u8]) -> Vec<u8> {
        [self.prefix.as_bytes(), b"{", pool, b"}:tokens"].concat()
    }

    /// Earlier versions' key of a pool's remembered-expired hash.
    pub fn legacy_expired(&self, pool: &[u8]) -> Vec<u8> {
        [self.prefix.as_bytes(), b"{", pool, b"}:expired"].concat()
    }

    /// The set of the pools of hash slot `slot`.
    pub fn pool_set(&self, slot: u16) -> String {
        format!("{}{{{}}}:pools", self.prefix, slot_tag(slot))
    }

    /// Hash slot `slot`'s fence (owner, epoch, last batch applied).
    pub fn fence(&self, slot: u16) -> String {
        format!("{}{{{}}}:fence", self.prefix, slot_tag(slot))
    }

    /// Earlier versions' set of every pool name.
    pub fn legacy_pools(&self) -> String {
        format!("{}pools", self.prefix)
    }

    /// The slot-number key.
    pub fn slotkey(&self) -> String {
        format!("{}slotkey", self.prefix)
    }

    /// Cluster mode: live nodes, each scored with when its heartbeat
    /// lapses (ms, the backing Redis's clock).
    pub fn members(&self) -> String {
        format!("{}{{nodes}}:members", self.prefix)
    }

    /// Cluster mode: each node's address (`host:port`).
    pub fn addrs(&self) -> String {
        format!("{}{{nodes}}:addrs", self.prefix)
    }

    /// Cluster mode: each node's current incarnation (the owner string its
    /// fences carry).
    pub fn owners(&self) -> String {
        format!("{}{{nodes}}:owners", self.prefix)
    }

    /// Cluster mode: the channel every node publishes its events on, for
    /// the subscribers of the other nodes.
    pub fn events(&self) -> String {
        format!("{}{{nodes}}:events", self.prefix)
    }

    /// Cluster nodes starting (`<id> <address>`, scored by when the entry
    /// lapses): a tokend without cluster mode reads them along with the
    /// members; the slots are spread over the members only.
    pub fn joining(&self) -> String {
        format!("{}{{nodes}}:joining", self.prefix)
    }

    /// Cluster mode: the fence a node's batches of events alone check (for
    /// their exactly-once sequence number).
    pub fn node_fence(&self, node_id: &str) -> String {
        format!("{}{{nodes}}:fence:{node_id}", self.prefix)
    }

    /// The single-owner lease.
    pub fn lease(&self) -> String {
        format!("{}lease", self.prefix)
    }

    /// The persisted frame's offset from the wall clock.
    pub fn clock(&self) -> String {
        format!("{}clock", self.prefix)
    }
}

/// Slots per slab string.
pub const SLAB_SLOTS: u32 = 16_384;

/// Bytes of a slot's record in a slab string.
pub const SLOT_BYTES: usize = 64;

/// The format byte of a slot's record (its byte 52).
const SLOT_FORMAT: u8 = 1;

/// Where slot `slot`'s record is: the slab string's number and the byte
/// offset in it.
pub fn slot_place(slot: u32) -> (u32, usize) {
    (slot / SLAB_SLOTS, (slot % SLAB_SLOTS) as usize * SLOT_BYTES)
}

/// A slot's record in a slab string, its deadlines moved into the persisted
/// frame by `delta`: little-endian token (16 bytes), life deadline, lease
/// deadline (0 when free), lifetime ms, lease ms (8 bytes each), times
/// acquired (4 bytes), the format byte 1, zeros. All zeros: no token.
pub fn encode_slot(token: u128, r: &Record, delta: i64) -> [u8; SLOT_BYTES] {
    let mut b = [0u8; SLOT_BYTES];
    let lease = lease_shift(r.lease_deadline, -delta);
    b[0..16].copy_from_slice(&token.to_le_bytes());
    b[16..24].copy_from_slice(&shift(r.life_deadline, -delta).to_le_bytes());
    b[24..32].copy_from_slice(&lease.to_le_bytes());
    b[32..40].copy_from_slice(&r.lifetime.to_le_bytes());
    b[40..48].copy_from_slice(&r.lease.to_le_bytes());
    b[48..52].copy_from_slice(&r.times_acquired.to_le_bytes());
    b[52] = SLOT_FORMAT;
    b
}

/// What a slot's place in a slab string holds.
#[derive(Debug, PartialEq)]
pub enum SlotRecord {
    /// No token (all zeros, or past the string's end).
    Empty,
    /// Not a record this version can read.
    Malformed,
    /// A live token and its record, in the memory frame.
    Live(u128, Record),
}

/// Decodes a slot's record (`SLOT_BYTES` bytes, or fewer past the end of
/// the string) into the memory frame.
pub fn decode_slot(b: &[u8], delta: i64) -> SlotRecord {
    let Ok(b) = <&[u8; SLOT_BYTES]>::try_from(b) else { return SlotRecord::Empty };
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    let token = u128::from_le_bytes(b[0..16].try_into().unwrap_or_default());
    if token == 0 {
        return SlotRecord::Empty;
    }
    if b[52] != SLOT_FORMAT {
        return SlotRecord::Malformed;
    }
    let (life, lease_deadline) = (u64_at(16), u64_at(24));
    let times = u32::from_le_bytes(b[48..52].try_into().unwrap_or_default());
    let lease_deadline = lease_shift(lease_deadline, delta);
    SlotRecord::Live(token, Record::stored(shift(life, delta), lease_deadline, u64_at(32), u64_at(40), times))
}

/// Encodes a record as stored in the tokens hash, its deadlines moved into
/// the persisted frame by `delta` (memory frame − persisted frame, ms).
pub fn encode_record(r: &Record, delta: i64) -> String {
    let state = if r.lease_deadline != 0 { 'a' } else { 'f' };
    let lease = lease_shift(r.lease_deadline, -delta);
    format!("{state}:{}:{lease}:{}:{}:{}", shift(r.life_deadline, -delta), r.lifetime, r.lease, r.times_acquired)
}

/// Decodes a stored record into the memory frame; None if malformed.
pub fn decode_record(s: &[u8], delta: i64) -> Option<Record> {
    let s = std::str::from_utf8(s).ok()?;
    let mut it = s.split(':');
    let state = it.next()?;
    let mut n = || it.next().and_then(|v| v.parse::<u64>().ok());
    let (life, lease_deadline, lifetime, lease, times) = (n()?, n()?, n()?, n()?, n()?);
    match (state, lease_deadline) {
        ("a", d) if d > 0 => {}
        ("f", 0) => {}
        _ => return None,
    }
    let lease_deadline = lease_shift(lease_deadline, delta);
    Some(Record::stored(shift(life, delta), lease_deadline, lifetime, lease, times.min(u32::MAX as u64) as u32))
}

/// A lease deadline moved by `d`: 0 (free) stays 0, any other stays above
/// 0 (0 would read as free).
fn lease_shift(t: u64, d: i64) -> u64 {
    if t != 0 { shift(t, d).max(1) } else { 0 }
}

/// `t + d`, saturating at the ends of u64.
pub fn shift(t: u64, d: i64) -> u64 {
    if d >= 0 { t.saturating_add(d as u64) } else { t.saturating_sub(d.unsigned_abs()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyslot_is_redis_clusters() {
        // Values from Redis's CLUSTER KEYSLOT.
        assert_eq!(keyslot(b"123456789"), 12739);
        assert_eq!(keyslot(b"foo"), 12182);
        assert_eq!(keyslot(b"bar"), 5061);
        assert_eq!(keyslot(b"{user1000}.following"), keyslot(b"user1000"));
        assert_eq!(keyslot(b"foo{}{bar}"), keyslot(b"foo{}{bar}"), "an empty first tag: the whole key");
        assert_ne!(keyslot(b"foo{}{bar}"), keyslot(b"bar"));
        assert_eq!(keyslot(b"foo{{bar}}zap"), keyslot(b"{bar"));
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for slot in 0..SLOTS {
            assert_eq!(keyslot(slot_tag(slot).as_bytes()), slot);
            assert!(slot_tag(slot).len() <= 4);
        }
    }

    #[test]
    fn a_pools_keys_and_its_slots_keys_share_the_pools_slot() {
        let k = Keys::new("tokend:");
        for pool in [&b"p"[..], b"tenant:42", b"a{b}c", b"{x}", b"}{", b"x{}y"] {
            let slot = keyslot(pool);
            for key in [k.tokens(pool), k.expired(pool)] {
                assert_eq!(keyslot(&key), slot, "{:?}", String::from_utf8_lossy(&key));
            }
            assert_eq!(keyslot(k.fence(slot).as_bytes()), slot);
            assert_eq!(keyslot(k.pool_set(slot).as_bytes()), slot);
        }
        assert_eq!(k.tokens(b"p:x"), b"tokend:{p:x}:tokens", "the earlier layout for a brace-free pool");
        assert_eq!(k.legacy_tokens(b"a{b}c"), b"tokend:{a{b}c}:tokens");
        assert_ne!(k.tokens(b"a{b}c"), k.legacy_tokens(b"a{b}c"));
        assert_eq!(k.legacy_pools(), "tokend:pools");
    }

    #[test]
    fn record_round_trip_and_frames() {
        let r = Record::stored(1_700_000_000_500, 1_700_000_000_400, 300_000, 60_000, 7);
        let s = encode_record(&r, 0);
        assert_eq!(s, "a:1700000000500:1700000000400:300000:60000:7");
        assert_eq!(decode_record(s.as_bytes(), 0), Some(r));
        // Written with a frame 3,600,000 ms ahead of the persisted one, read
        // back into a frame 1,000 ms ahead of it.
        let s = encode_record(&r, 3_600_000);
        assert_eq!(s, "a:1699996400500:1699996400400:300000:60000:7");
        let back = decode_record(s.as_bytes(), 1_000).unwrap();
        assert_eq!(back.life_deadline, r.life_deadline - 3_599_000);
        let f = Record::stored(5, 0, 5, 0, 0);
        assert_eq!(decode_record(encode_record(&f, 0).as_bytes(), 0), Some(f));
        for bad in ["", "a:1:0:1:1:1", "f:1:5:1:1:1", "x:1:0:1:1:1", "f:1:0:1:1", "f:a:0:1:1:1"] {
            assert_eq!(decode_record(bad.as_bytes(), 0), None, "{bad}");
        }
    }
}

//! What the store takes and gives: settings, errors, the results of its
//! operations, and the changes it hands to the journal.

use super::Record;
use crate::token::TokenId;
use bytes::Bytes;

/// Store settings (from the command line).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Number of shards; more shards, less contention between pools.
    pub shards: usize,
    /// Lifetime (ms) when GEN gives none.
    pub default_lifetime_ms: u64,
    /// Lease (ms) when ACQUIRE gives none.
    pub default_lease_ms: u64,
    /// How long expired tokens are remembered (ms); 0 = not at all.
    pub expired_memory_ms: u64,
    /// At most this many expired tokens remembered per server.
    pub max_expired_remembered: usize,
    /// At most this many live tokens per server (GEN beyond it: `-OOM`).
    pub max_tokens: u64,
    /// Due deadlines fired per hold of a shard's lock (and at most a
    /// millisecond's worth): a mass expiry goes in batches, and commands
    /// on other pools of the shard wait for one batch at most.
    pub expiry_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            shards: 16,
            default_lifetime_ms: 300_000,
            default_lease_ms: 60_000,
            expired_memory_ms: 3_600_000,
            max_expired_remembered: 1_000_000,
            max_tokens: 50_000_000,
            expiry_batch: 4096,
        }
    }
}

/// Why a token command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The pool never had the token, or it was deleted or forgotten.
    NoToken,
    /// The token's lifetime ended (and it is still remembered).
    Expired,
    /// UNBLOCK of a free token.
    NotAssigned,
    /// The server's token limit would be exceeded.
    Oom,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::NoToken => "NOTOKEN no such token in this pool",
            TokenError::Expired => "EXPIRED the token's lifetime has ended",
            TokenError::NotAssigned => "NOTASSIGNED the token is not assigned",
            TokenError::Oom => "OOM command not allowed when the token limit (--max-tokens) is reached",
        })
    }
}

impl std::error::Error for TokenError {}

/// A token's state, as TOKEN.INFO reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    pub assigned: bool,
    pub lifetime_left_ms: u64,
    /// `None` while free.
    pub lease_left_ms: Option<u64>,
    pub times_acquired: u64,
}

/// A pool's counts, as TOKEN.STATS reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub total: u64,
    pub free: u64,
    pub assigned: u64,
    pub expired_remembered: u64,
    pub blocked_waiters: u64,
}

/// Server-wide counts (INFO, DBSIZE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub pools: u64,
    pub live: u64,
    pub assigned: u64,
    pub expired_remembered: u64,
    pub blocked: u64,
}

/// Expiry counts (see [`super::Store::expiry_totals`]).
#[derive(Debug, Default, Clone)]
pub struct ExpiryTotals {
    /// Lifetimes ended.
    pub expired: u64,
    /// Leases ended.
    pub lease_expired: u64,
    /// How late each ended, µs after its deadline.
    pub lateness: crate::hist::Hist,
    /// Times an expiry driver waited for subscribers, and µs waited in all.
    pub subscriber_waits: u64,
    pub subscriber_wait_us: u64,
}

/// A change to persist, in the order it happened. `slot` is where the
/// token is in its pool's slab: the backing store keeps records at the same
/// places, so a slot is never held by two tokens there either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The token in `slot` exists with this record.
    Put { pool: Bytes, token: TokenId, record: Record, slot: u32 },
    /// The token is gone (deleted; or expired and already forgotten); it
    /// left `slot` if it was live.
    Del { pool: Bytes, token: TokenId, slot: Option<u32> },
    /// The token expired; remembered until `forget_at`. It left `slot` if
    /// it was live.
    Expired { pool: Bytes, token: TokenId, forget_at: u64, slot: Option<u32> },
    /// Slots `first..first + records.len()` hold exactly these live tokens
    /// (None: no live token). Restates a stretch of the slab (rewrites).
    Slots { pool: Bytes, first: u32, records: Vec<Option<(TokenId, Record)>> },
    /// A remembered expired token is forgotten.
    Forget { pool: Bytes, token: TokenId },
    /// Every remembered expired token of the pool is forgotten (DELEXPIRED).
    ForgetAll { pool: Bytes },
    /// The pool is gone: deleted (DEL, FLUSHDB), or empty.
    DropPool { pool: Bytes },
}

impl Change {
    /// The pool the change is about.
    pub fn pool(&self) -> &Bytes {
        match self {
            Change::Put { pool, .. }
            | Change::Del { pool, .. }
            | Change::Expired { pool, .. }
            | Change::Slots { pool, .. }
            | Change::Forget { pool, .. }
            | Change::ForgetAll { pool }
            | Change::DropPool { pool } => pool,
        }
    }
}

/// Where changes go to be made durable (the backing Redis).
pub trait Journal: Send + Sync {
    /// Queues changes as one unit (written to the backing store in one
    /// atomic step) and returns its sequence number; called with the shard
    /// locks held, so it must not block.
    fn append(&self, changes: Vec<Change>) -> u64;
}

/// State recovered from the backing store.
#[derive(Debug, Clone)]
pub enum Restored {
    /// A live token; `at`: the slot the backing store keeps it in (None:
    /// kept by an earlier layout, in no slot).
    Live {
        pool: Bytes,
        token: TokenId,
        record: Record,
        at: Option<u32>,
    },
    Expired {
        pool: Bytes,
        token: TokenId,
        forget_at: u64,
    },
}

impl Restored {
    /// The pool it belongs to.
    pub fn pool(&self) -> &Bytes {
        match self {
            Restored::Live { pool, .. } | Restored::Expired { pool, .. } => pool,
        }
    }
}

//! Reading the backing Redis back at start-up: every pool of every hash
//! slot (and the pools earlier versions listed in `Ppools`).

use super::con::Con;
use super::layout::{Keys, SLAB_SLOTS, SLOT_BYTES, SLOTS, SlotRecord, decode_record, decode_slot, shift};
use crate::store::Restored;
use crate::token;
use bytes::Bytes;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Fields fetched per HSCAN call.
const SCAN_COUNT: usize = 20_000;

/// Recovery reads a hash of at most this many fields with one HGETALL, a
/// bigger one by HSCAN pages. HSCAN costs Redis about twice the CPU of
/// HGETALL (measured on 1M tokens: 1.45 s against 0.77 s of redis-server
/// CPU, more than half of the loading time), but one reply holds the whole
/// hash: at 1M tokens tokend's peak RSS during recovery is 287 MB against
/// 205 MB by pages (so about 160 MB more at this bound).
pub const HGETALL_MAX: usize = 2_000_000;

/// What was read back.
pub struct Recovered {
    pub items: Vec<Restored>,
    /// Pools found only in the earlier versions' pool set: to be listed in
    /// their slot's set (and, for names with braces, moved to new keys).
    pub legacy: Vec<Bytes>,
}

/// One HSCAN reply: the next cursor and field/value pairs.
type ScanPage = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// Reads every pool; deadlines are moved into the memory frame by `delta`.
pub async fn recover(con: &mut Con, keys: &Keys, delta: i64) -> Result<Recovered, redis::RedisError> {
    recover_with(con, keys, delta, HGETALL_MAX).await
}

/// [`recover`], reading hashes of up to `hgetall_max` fields in one go
/// (tests compare both ways).
pub async fn recover_with(
    con: &mut Con,
    keys: &Keys,
    delta: i64,
    hgetall_max: usize,
) -> Result<Recovered, redis::RedisError> {
    let started = Instant::now();
    let mut pools: Vec<Bytes> = Vec::new();
    let mut seen: HashSet<Bytes> = HashSet::new();
    let all: Vec<u16> = (0..SLOTS).collect();
    for p in pool_sets(con, keys, &all).await? {
        if seen.insert(p.clone()) {
            pools.push(p);
        }
    }
    let legacy_set: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(keys.legacy_pools()).query_async(con).await?;
    let legacy: Vec<Bytes> = legacy_set.into_iter().map(Bytes::from).filter(|p| !seen.contains(p)).collect();
    let current = pools.iter().map(|p| (p, true, keys.tokens(p), keys.expired(p)));
    let old = legacy.iter().map(|p| (p, false, keys.legacy_tokens(p), keys.legacy_expired(p)));
    let (out, bad) = read_pools(con, keys, current.chain(old), delta, hgetall_max).await?;
    if bad > 0 {
        tracing::warn!(entries = bad, "skipped malformed entries in the backing Redis");
    }
    tracing::info!(entries = out.len(), ms = started.elapsed().as_millis() as u64, "loaded from the backing Redis");
    Ok(Recovered { items: out, legacy })
}

/// Reads the pools of hash slots `slots` (cluster mode: slots this node just
/// claimed).
pub async fn load_slots(
    con: &mut Con,
    keys: &Keys,
    delta: i64,
    slots: &[u16],
) -> Result<Vec<Restored>, redis::RedisError> {
    let pools = pool_sets(con, keys, slots).await?;
    let current = pools.iter().map(|p| (p, true, keys.tokens(p), keys.expired(p)));
    let (out, bad) = read_pools(con, keys, current, delta, HGETALL_MAX).await?;
    if bad > 0 {
        tracing::warn!(entries = bad, "skipped malformed entries in the backing Redis");
    }
    Ok(out)
}

/// The pools listed in the sets of hash slots `slots`.
async fn pool_sets(con: &Con, keys: &Keys, slots: &[u16]) -> Result<Vec<Bytes>, redis::RedisError> {
    let cmds = slots.iter().map(|&s| redis::cmd("SMEMBERS").arg(keys.pool_set(s)).clone()).collect();
    let sets: Vec<Vec<Vec<u8>>> = con.query_each(cmds).await?;
    Ok(sets.into_iter().flatten().map(Bytes::from).collect())
}

/// Reads each `(pool, has slab strings, tokens key, expired key)`: its slab
/// strings (the current layout), then its token hash (earlier layouts) and
/// its expired hash; returns what was read and how many entries were
/// malformed.
async fn read_pools<'p>(
    con: &mut Con,
    keys: &Keys,
    pools: impl Iterator<Item = (&'p Bytes, bool, Vec<u8>, Vec<u8>)>,
    delta: i64,
    hgetall_max: usize,
) -> Result<(Vec<Restored>, usize), redis::RedisError> {
    let mut out = Vec::new();
    let mut bad = 0usize;
    let mut last_log = Instant::now();
    for (pool, slabs, tokens_key, expired_key) in pools {
        if slabs {
            match read_slabs(con, keys, pool, delta, &mut out).await {
                Ok(n) => bad += n,
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    tracing::error!(pool = %String::from_utf8_lossy(pool), error = %e, "skipping a backing key of the wrong type");
                }
                Err(e) => return Err(e),
            }
        }
        for (key, expired) in [(tokens_key, false), (expired_key, true)] {
            match read_hash(con, &key, hgetall_max, &mut out, |out, t, v| {
                let Some(id) = token::parse(t) else { return false };
                let item =
                    if expired {
                        std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()).map(|forget_at| {
                            Restored::Expired { pool: pool.clone(), token: id, forget_at: shift(forget_at, delta) }
                        })
                    } else {
                        decode_record(v, delta).map(|record| Restored::Live {
                            pool: pool.clone(),
                            token: id,
                            record,
                            at: None,
                        })
                    };
                match item {
                    Some(i) => {
                        out.push(i);
                        true
                    }
                    None => false,
                }
            })
            .await
            {
                Ok(n) => bad += n,
                // A key of another type (written by someone else): that
                // pool cannot be read; the rest can.
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    tracing::error!(key = %String::from_utf8_lossy(&key), error = %e, "skipping a backing key of the wrong type");
                }
                Err(e) => return Err(e),
            }
            if last_log.elapsed() > Duration::from_secs(1) {
                tracing::info!(loaded = out.len(), "loading tokens from the backing Redis");
                last_log = Instant::now();
            }
        }
    }
    Ok((out, bad))
}

/// Reads a pool's slab strings into `out`; returns how many records were
/// malformed. Each string is asked for while the one before is decoded.
async fn read_slabs(
    con: &mut Con,
    keys: &Keys,
    pool: &Bytes,
    delta: i64,
    out: &mut Vec<Restored>,
) -> Result<usize, redis::RedisError> {
    let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(keys.slabs(pool)).query_async(con).await?;
    let mut bad = 0;
    let mut numbers: Vec<u32> = Vec::with_capacity(members.len());
    for m in members {
        match std::str::from_utf8(&m).ok().and_then(|s| s.parse::<u32>().ok()).filter(|&k| k <= u32::MAX / SLAB_SLOTS) {
            Some(k) => numbers.push(k),
            None => bad += 1,
        }
    }
    numbers.sort_unstable();
    let get = |k: u32| {
        let (mut con, key) = (con.clone(), keys.slab(pool, k));
        tokio::spawn(async move { redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(&mut con).await })
    };
    let mut ahead = numbers.first().map(|&k| get(k));
    for (i, &k) in numbers.iter().enumerate() {
        let Some(this) = ahead.take() else { break };
        let bytes = this.await.map_err(|e| redis::RedisError::from(std::io::Error::other(e)))??;
        ahead = numbers.get(i + 1).map(|&k| get(k));
        // On a current-thread runtime, lets the request go out first.
        tokio::task::yield_now().await;
        let Some(bytes) = bytes else { continue };
        out.reserve(bytes.len() / SLOT_BYTES);
        for (j, record) in bytes.chunks(SLOT_BYTES).take(SLAB_SLOTS as usize).enumerate() {
            match decode_slot(record, delta) {
                SlotRecord::Empty => {}
                SlotRecord::Malformed => bad += 1,
                SlotRecord::Live(token, record) => {
                    let at = Some(k * SLAB_SLOTS + j as u32);
                    out.push(Restored::Live { pool: pool.clone(), token, record, at });
                }
            }
        }
    }
    Ok(bad)
}

/// Reads one hash, whole or by pages, handing each field and value to
/// `take` (false: malformed); returns how many were malformed.
///
/// Page by page, the next page is asked for before this one is decoded:
/// the backing Redis builds it meanwhile. Asked for after, the two took
/// turns (10M tokens: 18.5 s of Redis and 15 s of tokend, one after the
/// other).
async fn read_hash(
    con: &mut Con,
    key: &[u8],
    hgetall_max: usize,
    out: &mut Vec<Restored>,
    mut take: impl FnMut(&mut Vec<Restored>, &[u8], &[u8]) -> bool,
) -> Result<usize, redis::RedisError> {
    let len: usize = redis::cmd("HLEN").arg(key).query_async(con).await?;
    // Sized once: grown by doubling, the vector is copied (and its pages
    // faulted in) again and again at 10M tokens.
    out.reserve(len);
    let (mut next, mut fields): ScanPage = if len <= hgetall_max {
        (0, redis::cmd("HGETALL").arg(key).query_async(con).await?)
    } else {
        redis::cmd("HSCAN").arg(key).arg(0).arg("COUNT").arg(SCAN_COUNT).query_async(con).await?
    };
    let mut bad = 0;
    loop {
        let ahead = (next != 0).then(|| {
            let (mut con, key) = (con.clone(), key.to_vec());
            tokio::spawn(async move {
                redis::cmd("HSCAN")
                    .arg(key)
                    .arg(next)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async::<ScanPage>(&mut con)
                    .await
            })
        });
        if ahead.is_some() {
            // On a current-thread runtime, lets the request go out first.
            tokio::task::yield_now().await;
        }
        for (t, v) in fields {
            if !take(out, &t, &v) {
                bad += 1;
            }
        }
        let Some(ahead) = ahead else { return Ok(bad) };
        (next, fields) = ahead.await.map_err(|e| redis::RedisError::from(std::io::Error::other(e)))??;
    }
}

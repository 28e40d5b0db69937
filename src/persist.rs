//! The backing Redis: durability and notifications.
//!
//! # Key layout
//!
//! With the prefix `P` (`--redis-prefix`, default `tokend:`) and a pool `p`:
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P{p}:tokens` | hash | token → `state:life_deadline:lease_deadline:lifetime_ms:lease_ms:times_acquired` (`f` free / `a` assigned; deadlines in epoch ms, `lease_deadline` 0 when free) |
//! | `P{p}:expired` | hash | remembered expired token → epoch ms when it is forgotten |
//! | `Ppools` | set | every pool name (recovery reads it instead of scanning the keyspace) |
//! | `Pslotkey` | string | the key that masks slot numbers in tokens (a decimal u64, set once), so that recovered tokens still name their slots |
//!
//! The pool is the `{hash tag}`, so both keys of a pool live in one slot on
//! Redis Cluster. Every change is one `HSET`/`HDEL` on the token's field: no
//! command scans a pool on the hot path.
//!
//! # Writes
//!
//! The store hands every change, in order, to [`Backing::append`] while it
//! holds the shard lock (a non-blocking channel send). One writer task takes
//! everything queued, sends it as one pipeline, and on the reply advances the
//! durable sequence number. In `sync` mode a connection replies only when the
//! durable number passed what was queued when its commands ran — many
//! clients' changes share one round trip (group commit). In `async` mode
//! replies go out at once and the writer flushes every `--flush-interval`.
//!
//! # Outages
//!
//! A failed pipeline is retried, same batch, with backoff (10 ms doubling to
//! 1 s); the first failure is logged once, and the recovery once. Nothing
//! queued is dropped. Meanwhile reads are served; in sync mode writes wait up
//! to `--persist-timeout` and then answer `-TRYAGAIN` (their change stays
//! queued and is written when Redis returns); once Redis has been down longer
//! than that, writes are refused up front with `-TRYAGAIN` and change
//! nothing. In both modes the backlog is bounded ([`MAX_BACKLOG`]): beyond it
//! writes are refused the same way.

use crate::config::{Config, Durability as Mode};
use crate::durable::{Durability, LinkStatus};
use crate::notify::EventSink;
use crate::store::{Change, Journal, Record, Restored};
use crate::token::{self, TokenId};
use bytes::Bytes;
use redis::aio::ConnectionManager;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Most changes and messages queued for the backing Redis before writes are
/// refused: ~100 bytes each, so about 100 MB at worst.
pub const MAX_BACKLOG: usize = 1_000_000;

/// Most items sent in one pipeline: keeps one reply under a few MB.
const MAX_BATCH: usize = 20_000;

/// Fields fetched per HSCAN call at recovery.
const SCAN_COUNT: usize = 20_000;

/// Recovery reads a hash of at most this many fields with one HGETALL, a
/// bigger one by HSCAN pages. HSCAN costs Redis about twice the CPU of
/// HGETALL (measured on 1M tokens: 1.45 s against 0.77 s of redis-server
/// CPU, more than half of the loading time), but one reply holds the whole
/// hash: at 1M tokens tokend's peak RSS during recovery is 287 MB against
/// 205 MB by pages (so about 160 MB more at this bound).
const HGETALL_MAX: usize = 2_000_000;

/// How long start-up waits for the backing Redis before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One queued item.
enum Item {
    Changes(u64, Vec<Change>),
    Publish(u64, Bytes, Bytes),
}

struct Queue {
    seq: u64,
    tx: mpsc::UnboundedSender<Item>,
}

/// The handle the store, the notifier and the connections use.
pub struct Backing {
    prefix: String,
    mode: Mode,
    persist_timeout: Duration,
    /// Sender and the sequence number of the last item sent, under one lock
    /// so that sequence order is channel order.
    queue: Mutex<Queue>,
    /// Items queued and not yet acknowledged.
    backlog: AtomicUsize,
    /// Highest sequence number acknowledged by Redis.
    durable: watch::Receiver<u64>,
    /// Epoch ms since when writes fail (0 while healthy).
    down_since: AtomicU64,
    started: Instant,
}

/// Key of a pool's token hash.
pub fn tokens_key(prefix: &str, pool: &[u8]) -> Vec<u8> {
    [prefix.as_bytes(), b"{", pool, b"}:tokens"].concat()
}

/// Key of a pool's remembered-expired hash.
pub fn expired_key(prefix: &str, pool: &[u8]) -> Vec<u8> {
    [prefix.as_bytes(), b"{", pool, b"}:expired"].concat()
}

/// Key of the set of pool names.
pub fn pools_key(prefix: &str) -> String {
    format!("{prefix}pools")
}

/// Encodes a record as stored in the tokens hash.
pub fn encode_record(r: &Record) -> String {
    let state = if r.lease_deadline != 0 { 'a' } else { 'f' };
    format!("{state}:{}:{}:{}:{}:{}", r.life_deadline, r.lease_deadline, r.lifetime, r.lease, r.times_acquired)
}

/// Decodes a stored record; None if malformed.
pub fn decode_record(s: &[u8]) -> Option<Record> {
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
    Some(Record::stored(life, lease_deadline, lifetime, lease, times.min(u32::MAX as u64) as u32))
}

/// Connects to the backing Redis, failing within [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, tls: &Option<redis::TlsCertificates>) -> Result<ConnectionManager, String> {
    let client = match tls {
        None => redis::Client::open(url),
        Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
    }
    .map_err(|e| format!("invalid --redis URL {url:?}: {e}"))?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let fut = ConnectionManager::new_with_config(client, cfg);
    let mut con = match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("cannot connect to the backing Redis at {url}: {e}")),
        Err(_) => return Err(format!("cannot connect to the backing Redis at {url}: timed out")),
    };
    redis::cmd("PING")
        .query_async::<()>(&mut con)
        .await
        .map_err(|e| format!("the backing Redis at {url} does not answer PING: {e}"))?;
    Ok(con)
}

/// The key of the slot-number mask.
pub fn slot_key_key(prefix: &str) -> String {
    format!("{prefix}slotkey")
}

/// The slot-number key kept in the backing Redis: `candidate` if none was
/// kept yet (it is then kept), else the kept one. A malformed value is
/// replaced: tokens then miss their slots and are indexed, which is slower
/// but exact.
pub async fn slot_key(con: &mut ConnectionManager, prefix: &str, candidate: u64) -> Result<u64, redis::RedisError> {
    let key = slot_key_key(prefix);
    let _: Option<String> = redis::cmd("SET").arg(&key).arg(candidate).arg("NX").query_async(con).await?;
    let kept: Option<String> = redis::cmd("GET").arg(&key).query_async(con).await?;
    match kept.as_deref().map(str::parse::<u64>) {
        Some(Ok(k)) => Ok(k),
        _ => {
            tracing::warn!(key, "replacing a malformed slot key in the backing Redis");
            let _: () = redis::cmd("SET").arg(&key).arg(candidate).query_async(con).await?;
            Ok(candidate)
        }
    }
}

/// One HSCAN reply: the next cursor and field/value pairs.
type ScanPage = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// Reads every pool from the backing Redis.
pub async fn recover(con: &mut ConnectionManager, prefix: &str) -> Result<Vec<Restored>, redis::RedisError> {
    recover_with(con, prefix, HGETALL_MAX).await
}

/// [`recover`], reading hashes of up to `hgetall_max` fields in one go
/// (tests compare both ways).
pub async fn recover_with(
    con: &mut ConnectionManager,
    prefix: &str,
    hgetall_max: usize,
) -> Result<Vec<Restored>, redis::RedisError> {
    let started = Instant::now();
    let pools: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(pools_key(prefix)).query_async(con).await?;
    let mut out = Vec::new();
    let mut bad = 0usize;
    let mut last_log = Instant::now();
    for pool in pools {
        let pool = Bytes::from(pool);
        for (key, expired) in [(tokens_key(prefix, &pool), false), (expired_key(prefix, &pool), true)] {
            let len: usize = redis::cmd("HLEN").arg(&key).query_async(con).await?;
            let whole = len <= hgetall_max;
            let mut cursor: u64 = 0;
            loop {
                let (next, fields): ScanPage = if whole {
                    (0, redis::cmd("HGETALL").arg(&key).query_async(con).await?)
                } else {
                    redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(SCAN_COUNT).query_async(con).await?
                };
                for (t, v) in fields {
                    let Some(id) = token::parse(&t) else {
                        bad += 1;
                        continue;
                    };
                    let item = if expired {
                        std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()).map(|forget_at| Restored::Expired {
                            pool: pool.clone(),
                            token: id,
                            forget_at,
                        })
                    } else {
                        decode_record(&v).map(|record| Restored::Live { pool: pool.clone(), token: id, record })
                    };
                    match item {
                        Some(i) => out.push(i),
                        None => bad += 1,
                    }
                }
                if last_log.elapsed() > Duration::from_secs(1) {
                    tracing::info!(loaded = out.len(), "loading tokens from the backing Redis");
                    last_log = Instant::now();
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
    }
    if bad > 0 {
        tracing::warn!(entries = bad, "skipped malformed entries in the backing Redis");
    }
    tracing::info!(entries = out.len(), ms = started.elapsed().as_millis() as u64, "loaded from the backing Redis");
    Ok(out)
}

impl Backing {
    /// Starts the writer on an open connection.
    pub fn start(con: ConnectionManager, config: &Config) -> Arc<Backing> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let backing = Arc::new(Backing {
            prefix: config.redis_prefix.clone(),
            mode: config.durability,
            persist_timeout: config.persist_timeout,
            queue: Mutex::new(Queue { seq: 0, tx }),
            backlog: AtomicUsize::new(0),
            durable: durable_rx,
            down_since: AtomicU64::new(0),
            started: Instant::now(),
        });
        let flush_interval = match config.durability {
            Mode::Sync => None,
            Mode::Async => Some(config.flush_interval),
        };
        tokio::spawn(writer(backing.clone(), con, rx, durable_tx, flush_interval));
        backing
    }

    fn push(&self, make: impl FnOnce(u64) -> Item, n: usize) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.seq += 1;
        let item = make(q.seq);
        if q.tx.send(item).is_ok() {
            self.backlog.fetch_add(n, Ordering::Relaxed);
        }
        q.seq
    }

    /// The sequence number of the last item queued.
    fn queued_seq(&self) -> u64 {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).seq
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Waits until everything queued so far is in Redis (graceful shutdown).
    pub async fn flush(&self, limit: Duration) -> bool {
        let target = self.queued_seq();
        let mut rx = self.durable.clone();
        tokio::time::timeout(limit, rx.wait_for(|&d| d >= target)).await.is_ok_and(|r| r.is_ok())
    }

    /// Items not yet acknowledged.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }
}

impl Journal for Backing {
    fn append(&self, changes: Vec<Change>) -> u64 {
        let n = changes.len();
        self.push(|seq| Item::Changes(seq, changes), n)
    }
}

impl EventSink for Backing {
    fn publish(&self, channel: Bytes, payload: Bytes) {
        self.push(|seq| Item::Publish(seq, channel, payload), 1);
    }
}

impl Durability for Backing {
    fn status(&self) -> LinkStatus {
        LinkStatus { backlog: self.backlog(), down: self.down_since.load(Ordering::Relaxed) != 0 }
    }

    fn admit(&self) -> Result<(), String> {
        if self.backlog() > MAX_BACKLOG {
            return Err("TRYAGAIN the backing Redis is behind (backlog full); retry later".into());
        }
        let down = self.down_since.load(Ordering::Relaxed);
        if self.mode == Mode::Sync
            && down != 0
            && self.now_ms().saturating_sub(down) > self.persist_timeout.as_millis() as u64
        {
            return Err("TRYAGAIN the backing Redis is unreachable; nothing was changed".into());
        }
        Ok(())
    }

    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if self.mode == Mode::Async {
                return Ok(());
            }
            let target = self.queued_seq();
            if *self.durable.borrow() >= target {
                return Ok(());
            }
            let mut rx = self.durable.clone();
            match tokio::time::timeout(self.persist_timeout, rx.wait_for(|&d| d >= target)).await {
                Ok(Ok(_)) => Ok(()),
                _ => Err("TRYAGAIN the change is not yet confirmed by the backing Redis; it stays queued".into()),
            }
        })
    }
}

/// Adds one change to the pipeline.
fn add_change(
    pipe: &mut redis::Pipeline,
    prefix: &str,
    c: &Change,
    known_pools: &mut std::collections::HashSet<Bytes>,
) {
    let field = |t: &TokenId| token::format(*t);
    match c {
        Change::Put { pool, token, record } => {
            if !known_pools.contains(pool) {
                pipe.sadd(pools_key(prefix), pool.as_ref()).ignore();
                known_pools.insert(pool.clone());
            }
            pipe.hset(tokens_key(prefix, pool), &field(token)[..], encode_record(record)).ignore();
        }
        Change::Del { pool, token } => {
            pipe.hdel(tokens_key(prefix, pool), &field(token)[..]).ignore();
            pipe.hdel(expired_key(prefix, pool), &field(token)[..]).ignore();
        }
        Change::Expired { pool, token, forget_at } => {
            pipe.hdel(tokens_key(prefix, pool), &field(token)[..]).ignore();
            pipe.hset(expired_key(prefix, pool), &field(token)[..], *forget_at).ignore();
        }
        Change::Forget { pool, token } => {
            pipe.hdel(expired_key(prefix, pool), &field(token)[..]).ignore();
        }
        Change::ForgetAll { pool } => {
            pipe.del(expired_key(prefix, pool)).ignore();
        }
    }
}

/// The writer task: batches, sends, retries, advances the durable number.
async fn writer(
    backing: Arc<Backing>,
    mut con: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Item>,
    durable: watch::Sender<u64>,
    flush_interval: Option<Duration>,
) {
    let mut known_pools = std::collections::HashSet::new();
    let mut batch: Vec<Item> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        if let Some(d) = flush_interval {
            tokio::time::sleep(d).await;
        }
        let mut count = 0;
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(i) => {
                    count += 1;
                    batch.push(i);
                }
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let mut last = 0;
        let mut items = 0;
        for item in &batch {
            match item {
                Item::Changes(seq, cs) => {
                    last = *seq;
                    items += cs.len();
                    for c in cs {
                        add_change(&mut pipe, &backing.prefix, c, &mut known_pools);
                    }
                }
                Item::Publish(seq, ch, msg) => {
                    last = *seq;
                    items += 1;
                    pipe.publish(ch.as_ref(), msg.as_ref()).ignore();
                }
            }
        }
        let mut backoff = Duration::from_millis(10);
        loop {
            match pipe.query_async::<()>(&mut con).await {
                Ok(()) => break,
                Err(e) => {
                    if backing.down_since.load(Ordering::Relaxed) == 0 {
                        backing.down_since.store(backing.now_ms(), Ordering::Relaxed);
                        tracing::error!(error = %e, "backing Redis write failed; retrying with backoff, changes are kept");
                        // Pools registered on a Redis that lost its data must be registered again.
                        known_pools.clear();
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        if backing.down_since.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!(backlog = backing.backlog(), "backing Redis reachable again; writing the backlog");
        }
        backing.backlog.fetch_sub(items, Ordering::Relaxed);
        batch.clear();
        durable.send_replace(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let r = Record::stored(1_700_000_000_500, 1_700_000_000_400, 300_000, 60_000, 7);
        let s = encode_record(&r);
        assert_eq!(s, "a:1700000000500:1700000000400:300000:60000:7");
        assert_eq!(decode_record(s.as_bytes()), Some(r));
        let f = Record::stored(5, 0, 5, 0, 0);
        assert_eq!(decode_record(encode_record(&f).as_bytes()), Some(f));
        for bad in ["", "a:1:0:1:1:1", "f:1:5:1:1:1", "x:1:0:1:1:1", "f:1:0:1:1", "f:a:0:1:1:1"] {
            assert_eq!(decode_record(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn keys_share_the_pool_hash_tag() {
        assert_eq!(tokens_key("tokend:", b"p:x"), b"tokend:{p:x}:tokens");
        assert_eq!(expired_key("tokend:", b"p"), b"tokend:{p}:expired");
        assert_eq!(pools_key("tokend:"), "tokend:pools");
    }
}

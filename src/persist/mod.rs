//! The backing Redis: durability and notifications.
//!
//! The key layout is in [`layout`]. Deadlines are stored in a *persisted
//! frame*: the first tokend on a prefix writes them as its clock reads
//! them, and `Pclock` keeps how far that frame is from the wall clock; a
//! tokend started later reads `Pclock` and converts, so a wall-clock step
//! (NTP, a suspend) while tokend runs neither shortens nor stretches any
//! lifetime across a restart (its clock never steps; see [`crate::clock`]).
//!
//! # Writes
//!
//! The store hands every change, in order, to [`Backing::append`] while it
//! holds the shard lock (a non-blocking channel send); it gets the unit's
//! sequence number. One writer task takes what is queued (whole units, up to
//! [`MAX_BATCH_OPS`] operations), writes it with one atomic script call
//! ([`script`]: fenced, exactly once, command errors isolated), and on the
//! reply advances the durable sequence number. In `sync` mode a connection
//! replies to a write only when the durable number passed that write's unit
//! — many clients' changes share one round trip (group commit). In `async`
//! mode replies go out at once and the writer flushes every
//! `--flush-interval`.
//!
//! # Faults
//!
//! - **Unreachable or hung.** A failed call is retried, same batch, with
//!   backoff (10 ms doubling to 1 s); a call with no answer after
//!   `--persist-timeout` counts as down too. While down, sync-mode writes
//!   are refused before they change anything (`-TRYAGAIN …; nothing was
//!   changed`); a write admitted just before waits up to `--persist-timeout`
//!   and then gets `-TRYAGAIN` for its own reply (its change stays queued
//!   and is written when Redis answers).
//! - **Refusing writes** (`-OOM` at maxmemory, `-READONLY` after a
//!   failover, `-MISCONF`): the same as down, with Redis's reason.
//! - **One command failing** (`WRONGTYPE` on a key someone else wrote): the
//!   rest of the batch is applied; the failed change is reported in the log
//!   and counted in `INFO persistence` (`backing_refused_changes`), and the
//!   command whose change it was gets `-ERR` instead of its reply in sync
//!   mode. It stays in memory, not in the backing store.
//! - **Lost data** (FLUSHALL, a restart without persistence): every write
//!   finds its slot's fence missing and applies nothing; the writer claims
//!   the slots again and writes the whole state back through the journal,
//!   then carries on. Acknowledged changes are never lost.
//! - **Another owner** (this tokend was paused past its lease and another
//!   took the prefix over): nothing is written; the server stops.
//!
//! Each batch is applied at most once (a retry of a batch that was applied
//! but whose reply was lost is skipped), so no event is published twice.

pub mod cluster;
mod con;
pub mod layout;
mod owner;
mod recover;
mod script;
mod writer;

pub use con::Con;
pub use layout::Keys;
pub use owner::{Renewal, new_node_id};
pub use recover::{HGETALL_MAX, Recovered, recover, recover_with};

use crate::clock::Clock;
use crate::config::{Config, Durability as Mode};
use crate::durable::{Durability, Fate, LinkStatus};
use crate::notify::EventSink;
use crate::store::{Change, Journal, Store};
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Most changes and messages queued for the backing Redis before writes are
/// refused: ~100 bytes each, so about 100 MB at worst.
pub const MAX_BACKLOG: usize = 1_000_000;

/// Most operations in one write (whole units are never split: a bigger unit
/// goes alone). 20,000 HSETs are about 10 ms of Redis's time.
pub const MAX_BATCH_OPS: usize = 20_000;

/// Cluster mode: clients' PUBLISH messages waiting to be passed to the
/// other nodes, bytes at most (more are dropped, as a Redis Cluster bus
/// link drops what it cannot send); Redis's default hard limit of a
/// subscriber's output.
const RELAY_MAX_BYTES: usize = 32 << 20;

/// Refused units remembered for the replies that ask about them (a reply
/// asks within `--persist-timeout`, long before this many more fail).
const MAX_REFUSED_REMEMBERED: usize = 100_000;

/// How long start-up waits for the backing Redis before giving up.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call may go unanswered before its connection is dropped
/// (writes count the backing Redis as down long before: `--persist-timeout`).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// One queued item.
enum Item {
    /// A unit of changes (one command's, one transaction's, one chunk of a
    /// state write-back), written in one atomic step.
    Changes(u64, Vec<Change>),
    Publish(u64, Bytes, Bytes),
    /// Cluster mode: a client's PUBLISH, for the other nodes only.
    Relay(u64, Bytes, Bytes),
    /// A pool whose state was just written in the current layout (listed
    /// only in earlier versions' `Ppools`, or with tokens in the tokens
    /// hash of earlier layouts): list it in its slot's set, delete its
    /// tokens hash and drop the old entries.
    Legacy(u64, Bytes),
    /// The persisted frame's offset from the wall clock.
    Clock(u64, i64),
    /// A write of nothing that still checks a fence (it finds out whether
    /// the backing Redis lost its data).
    Probe(u64),
}

impl Item {
    fn seq(&self) -> u64 {
        match self {
            Item::Changes(s, _)
            | Item::Publish(s, ..)
            | Item::Relay(s, ..)
            | Item::Legacy(s, _)
            | Item::Clock(s, _)
            | Item::Probe(s) => *s,
        }
    }

    /// How many queued changes (or messages) it counts for in the backlog.
    fn weight(&self) -> usize {
        match self {
            Item::Changes(_, c) => c
                .iter()
                .map(|c| match c {
                    Change::Slots { records, .. } => records.len().max(1),
                    _ => 1,
                })
                .sum(),
            // Not durable and never waited for: not counted against the
            // writes' backlog (bounded by `RELAY_MAX_BYTES` instead).
            Item::Relay(..) => 0,
            _ => 1,
        }
    }

    /// Bytes of a relayed message held in memory.
    fn relayed_bytes(&self) -> usize {
        match self {
            Item::Relay(_, c, m) => c.len() + m.len(),
            _ => 0,
        }
    }
}

struct Queue {
    seq: u64,
    tx: mpsc::UnboundedSender<Item>,
}

/// Why writes are refused now (None: they are not).
#[derive(Default)]
struct Link {
    down: AtomicBool,
    reason: Mutex<String>,
}

/// The wait between tries of a call to the backing Redis: 10 ms, doubling
/// up to 1 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(10))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
    }
}

/// The handle the store, the notifier and the connections use.
pub struct Backing {
    keys: Keys,
    mode: Mode,
    persist_timeout: Duration,
    /// Memory frame − persisted frame, ms.
    delta: i64,
    /// Sender and the sequence number of the last item sent, under one lock
    /// so that sequence order is channel order.
    queue: Mutex<Queue>,
    /// Changes and messages queued and not yet acknowledged.
    backlog: AtomicUsize,
    /// Highest sequence number written (or given up on, see `refused`).
    durable: watch::Receiver<u64>,
    link: Link,
    /// Units the backing Redis refused, with its reason.
    refused: Mutex<BTreeMap<u64, String>>,
    refused_total: AtomicU64,
    /// Times the backing Redis was found to have lost its data.
    lost_total: AtomicU64,
    /// How long batches took to be written, µs, from the first attempt to
    /// the acknowledgement (retries included: what a sync write waits).
    write_latency: Mutex<crate::hist::Hist>,
    /// The single-owner lease is valid until this (ms since `started`).
    lease_until: AtomicU64,
    /// Cancelled when another tokend took the prefix over (the server
    /// stops).
    fenced: CancellationToken,
    started: Instant,
    /// Units queued up to this are dropped, not written (cluster mode: the
    /// node's heartbeat lapsed, so what it queued may be stale).
    discard_upto: AtomicU64,
    /// The writer left out changes of slots this node no longer holds: the
    /// membership task drops those pools.
    strays: AtomicBool,
    /// Cluster mode's slot map.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Bytes of clients' PUBLISH messages queued for the other nodes.
    relayed: AtomicUsize,
}

/// A client of the backing Redis (not connected yet).
pub fn client(url: &str, tls: &Option<redis::TlsCertificates>) -> Result<redis::Client, String> {
    match tls {
        None => redis::Client::open(url),
        Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
    }
    .map_err(|e| format!("invalid --redis URL {url:?}: {e}"))
}

/// Connects to the backing Redis, failing within [`CONNECT_TIMEOUT`]: a
/// redis-server, or, if the node `url` names has cluster mode on, the Redis
/// Cluster it belongs to.
pub async fn connect(url: &str, tls: &Option<redis::TlsCertificates>) -> Result<Con, String> {
    let client = client(url, tls)?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
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
    // A user whose ACL forbids INFO gets a redis-server connection, as
    // before Redis Cluster backing existed.
    let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut con).await.unwrap_or_default();
    if !info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        return Ok(Con::Single(con));
    }
    let mut builder = ClusterClient::builder(vec![url.to_string()])
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT);
    if let Some(certs) = tls {
        builder = builder.certs(certs.clone());
    }
    let cluster = builder.build().map_err(|e| format!("invalid --redis URL {url:?} for a Redis Cluster: {e}"))?;
    let con = match tokio::time::timeout(CONNECT_TIMEOUT, cluster.get_async_connection()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("cannot connect to the Redis Cluster of {url}: {e}")),
        Err(_) => return Err(format!("cannot connect to the Redis Cluster of {url}: timed out")),
    };
    tracing::info!(%url, "the backing store is a Redis Cluster");
    Ok(Con::Cluster(con))
}

/// The slot-number key kept in the backing Redis: `candidate` if none was
/// kept yet (it is then kept), else the kept one. A malformed value is
/// replaced: tokens then miss their slots and are indexed, which is slower
/// but exact.
pub async fn slot_key(con: &mut Con, keys: &Keys, candidate: u64) -> Result<u64, redis::RedisError> {
    let key = keys.slotkey();
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

/// The persisted frame's offset from the wall clock, as last written (0
/// when none was: earlier versions wrote wall-clock deadlines).
pub async fn clock_offset(con: &mut Con, keys: &Keys) -> Result<i64, redis::RedisError> {
    let v: Option<String> = redis::cmd("GET").arg(keys.clock()).query_async(con).await?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Who this tokend is in the backing Redis.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node_id: String,
    /// The address clients use (for the lease and the fences).
    pub addr: String,
    /// How long the lease lasts without renewal.
    pub lease: Duration,
}

impl Identity {
    /// The owner string written in the fences: node id and a start stamp,
    /// so that a restarted process never mistakes an old fence for its own.
    fn owner(&self) -> String {
        format!("{}:{}", self.node_id, crate::clock::wall_ms())
    }
}

/// A backing Redis this tokend owns: connected, its lease taken, its slots
/// claimed, not loaded yet.
pub struct Attached {
    pub con: Con,
    pub keys: Keys,
    pub me: Identity,
    /// The owner string the writes carry.
    pub owner: String,
    /// Memory frame − persisted frame, ms.
    pub delta: i64,
}

/// Connects to the backing Redis of `config`, takes the prefix (single
/// owner), claims every slot's fence, and agrees on the slot key (`store`'s
/// becomes the kept one) and the clock frame.
pub async fn attach(config: &Config, me: Identity, store: &Store) -> Result<Attached, String> {
    let url = config.redis.as_deref().ok_or("no --redis")?;
    let tls = config.backing_tls().map_err(|e| e.to_string())?;
    let mut con = connect(url, &tls).await?;
    let keys = Keys::new(&config.redis_prefix);
    let owner = me.owner();
    if config.cluster_enabled {
        // Slots are claimed one by one as membership hands them out.
        // The fence names the first incarnation (no lapse yet); the heartbeat
        // keeps it current.
        // A tokend without cluster mode writes every slot: not while it
        // still may.
        owner::wait_unheld(&mut con, &keys, &me.addr).await?;
        cluster::init_node_fence(&mut con, &keys, &me.node_id, &cluster::incarnation(&owner, 0)).await;
        // Joined, then the lease read again: of this node and a tokend
        // without cluster mode starting at once (which takes the lease,
        // then reads the members), one sees the other at least.
        let join = |e: redis::RedisError| format!("cannot join the cluster on the backing Redis: {e}");
        cluster::join(&mut con, &keys, &me.node_id, &me.addr, config.cluster_node_timeout).await.map_err(join)?;
        if let Err(e) = owner::wait_unheld(&mut con, &keys, &me.addr).await {
            cluster::unjoin(&mut con, &keys, &me.node_id, &me.addr).await;
            return Err(e);
        }
    } else {
        let in_use = |members: &[(String, String)]| match members.first() {
            Some((id, addr)) => Err(format!(
                "the backing Redis prefix {:?} is used by a tokend cluster ({} live, e.g. node {id} at {addr}); \
                 start this tokend with --cluster-enabled yes, or give it another --redis-prefix",
                config.redis_prefix,
                members.len()
            )),
            None => Ok(()),
        };
        let read = |e: redis::RedisError| format!("cannot read the cluster's members on the backing Redis: {e}");
        in_use(&owner::cluster_members(&mut con, &keys).await.map_err(read)?)?;
        let value = owner::lease_value(&me.node_id, &me.addr);
        owner::acquire(&mut con, &keys, &value, me.lease).await?;
        // The members read again, the lease held (see the cluster branch).
        let members = owner::cluster_members(&mut con, &keys).await.map_err(read)?;
        if let Err(e) = in_use(&members) {
            owner::release(&mut con, &keys, &value).await;
            return Err(e);
        }
        owner::claim_all(&mut con, &keys, &owner, &me.addr, true)
            .await
            .map_err(|e| format!("cannot claim the backing Redis's slots: {e}"))?;
    }
    let key = slot_key(&mut con, &keys, store.slot_key())
        .await
        .map_err(|e| format!("cannot read the slot key from the backing Redis: {e}"))?;
    store.set_slot_key(key);
    let offset = clock_offset(&mut con, &keys)
        .await
        .map_err(|e| format!("cannot read the clock offset from the backing Redis: {e}"))?;
    // Memory − persisted = (memory − wall) + (wall − persisted).
    let delta = offset - store.clock().wall_skew_ms();
    Ok(Attached { con, keys, me, owner, delta })
}

impl Backing {
    /// Records a batch written in `us`.
    pub(super) fn note_write(&self, us: u64) {
        self.write_latency.lock().unwrap_or_else(|e| e.into_inner()).record(us);
    }

    /// A handle with nothing written yet; the writer takes the receiver and
    /// advances the sender as batches are acknowledged.
    fn new(
        keys: Keys,
        config: &Config,
        delta: i64,
        fenced: CancellationToken,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> (Backing, mpsc::UnboundedReceiver<Item>, watch::Sender<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let backing = Backing {
            keys,
            mode: config.durability,
            persist_timeout: config.persist_timeout,
            delta,
            queue: Mutex::new(Queue { seq: 0, tx }),
            backlog: AtomicUsize::new(0),
            durable: durable_rx,
            link: Link::default(),
            refused: Mutex::new(BTreeMap::new()),
            refused_total: AtomicU64::new(0),
            write_latency: Mutex::default(),
            lost_total: AtomicU64::new(0),
            lease_until: AtomicU64::new(0),
            fenced,
            started: Instant::now(),
            discard_upto: AtomicU64::new(0),
            strays: AtomicBool::new(false),
            cluster,
            relayed: AtomicUsize::new(0),
        };
        (backing, rx, durable_tx)
    }

    /// Starts the writer, the lease's renewal and the clock watch on an
    /// attached backing Redis; `store` is what gets written back if the
    /// backing Redis loses its data, and `fenced` is cancelled if another
    /// tokend takes the prefix over.
    pub fn start(
        a: Attached,
        config: &Config,
        store: Store,
        fenced: CancellationToken,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Backing> {
        let Attached { con, keys, me, owner, delta } = a;
        let clock = *store.clock();
        let (backing, rx, durable_tx) = Backing::new(keys.clone(), config, delta, fenced, cluster.clone());
        let backing = Arc::new(backing);
        if cluster.is_some() {
            // No prefix lease: each slot's fence and the node's heartbeat
            // decide (see [`cluster`]).
            backing.lease_until.store(u64::MAX, Ordering::Release);
        } else {
            backing.lease_renewed(Instant::now(), me.lease);
        }
        let flush_interval = match config.durability {
            Mode::Sync => None,
            Mode::Async => Some(config.flush_interval),
        };
        let w = writer::Writer::new(backing.clone(), con.clone(), keys, owner, me.addr.clone(), durable_tx, store);
        tokio::spawn(w.run(rx, flush_interval));
        if cluster.is_none() {
            tokio::spawn(renew_lease(backing.clone(), con.clone(), me));
        }
        tokio::spawn(watch_clock(backing.clone(), clock));
        backing
    }

    /// Queues an item; returns its sequence number.
    fn push(&self, make: impl FnOnce(u64) -> Item) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.seq += 1;
        let item = make(q.seq);
        // Counted before it is sent, so the writer never subtracts what was
        // not added yet.
        let weight = item.weight();
        self.backlog.fetch_add(weight, Ordering::Relaxed);
        let relayed = item.relayed_bytes();
        if q.tx.send(item).is_err() {
            self.backlog.fetch_sub(weight, Ordering::Relaxed);
            self.relayed.fetch_sub(relayed, Ordering::Relaxed);
        }
        q.seq
    }

    /// Moves pools off earlier layouts (each once, however often named):
    /// queues their state for the current one ([`Store::rewrite`]), then
    /// the end of each move: it is listed in its slot's set, its tokens hash
    /// is deleted, and so are its entry in the earlier versions' pool set
    /// and its keys of their names.
    pub fn move_pools(&self, store: &Store, pools: impl IntoIterator<Item = Bytes>) {
        let mut seen = std::collections::HashSet::new();
        let pools: Vec<Bytes> = pools.into_iter().filter(|p| seen.insert(p.clone())).collect();
        if pools.is_empty() {
            return;
        }
        tracing::info!(pools = pools.len(), "moving pools to the current key layout");
        store.rewrite(Some(&pools));
        for pool in pools {
            self.push(|seq| Item::Legacy(seq, pool));
        }
    }

    /// Drops everything queued so far instead of writing it (its units are
    /// refused).
    pub fn discard_queued(&self) {
        self.discard_upto.fetch_max(self.queued_seq(), Ordering::AcqRel);
    }

    /// Another connection to the backing Redis just went through: if the
    /// link still counts as down with nothing queued that would say
    /// otherwise, a write of nothing checks it. A backstop: in sync mode
    /// nothing is admitted while down, so a path that took the link down
    /// and missed bringing it up would refuse writes until the next
    /// expiry's event.
    pub fn recheck_link(&self) {
        if self.link.down.load(Ordering::Acquire) && self.backlog() == 0 {
            self.probe();
        }
    }

    /// Makes the writer check its fence now (see [`Item::Probe`]).
    pub fn probe(&self) {
        self.push(Item::Probe);
    }

    /// True (once) if the writer left out changes of slots not held here.
    pub fn take_strays(&self) -> bool {
        self.strays.swap(false, Ordering::AcqRel)
    }

    /// The sequence number of the last item queued.
    fn queued_seq(&self) -> u64 {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).seq
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Waits until everything queued so far is in Redis (graceful shutdown).
    pub async fn flush(&self, limit: Duration) -> bool {
        let target = self.queued_seq();
        let mut rx = self.durable.clone();
        tokio::time::timeout(limit, rx.wait_for(|&d| d >= target)).await.is_ok_and(|r| r.is_ok())
    }

    /// Changes and messages not yet acknowledged.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Writes are refused for `reason` until [`Backing::set_up`].
    fn set_down(&self, reason: String) {
        // The reason before the flag: a request that finds the link down
        // reads why (else, in between, "the backing Redis ; nothing…").
        *self.link.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.clone();
        if !self.link.down.swap(true, Ordering::AcqRel) {
            tracing::error!(%reason, "backing Redis down; writes are refused, queued changes are kept");
        }
    }

    /// The backing Redis took a write again.
    fn set_up(&self) {
        if self.link.down.swap(false, Ordering::AcqRel) {
            tracing::info!(backlog = self.backlog(), "backing Redis reachable again; writing the backlog");
        }
    }

    /// Records that `seq`'s changes were refused for `why`.
    fn refuse(&self, seq: u64, why: String) {
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        r.insert(seq, why);
        while r.len() > MAX_REFUSED_REMEMBERED {
            r.pop_first();
        }
    }

    /// The lease was renewed by a request sent at `sent`: it is valid for a
    /// lease time from then, less a third for safety (the backing Redis
    /// started its TTL later than `sent`, never earlier).
    fn lease_renewed(&self, sent: Instant, lease: Duration) {
        let until = sent.saturating_duration_since(self.started) + lease - lease / 3;
        self.lease_until.store(until.as_millis() as u64, Ordering::Release);
    }
}

impl Journal for Backing {
    fn append(&self, changes: Vec<Change>) -> u64 {
        self.push(|seq| Item::Changes(seq, changes))
    }
}

impl EventSink for Backing {
    fn publish(&self, channel: Bytes, payload: Bytes) {
        self.push(|seq| Item::Publish(seq, channel, payload));
    }
}

impl Durability for Backing {
    fn write_latency(&self) -> crate::hist::Hist {
        self.write_latency.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn status(&self) -> LinkStatus {
        LinkStatus {
            backlog: self.backlog(),
            down: self.link.down.load(Ordering::Acquire),
            refused: self.refused_total.load(Ordering::Relaxed),
            lost: self.lost_total.load(Ordering::Relaxed),
        }
    }

    fn admit(&self) -> Result<(), String> {
        if self.fenced.is_cancelled() {
            return Err("TRYAGAIN this tokend no longer owns its backing Redis prefix; nothing was changed".into());
        }
        if self.backlog() > MAX_BACKLOG {
            return Err("TRYAGAIN the backing Redis is behind (backlog full); nothing was changed".into());
        }
        // The link's reason first: a lease lapses because the link is down,
        // and "refuses writes (OOM …)" says what to fix.
        if self.mode == Mode::Sync && self.link.down.load(Ordering::Acquire) {
            let reason = self.link.reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(format!("TRYAGAIN the backing Redis {reason}; nothing was changed"));
        }
        if self.now_ms() > self.lease_until.load(Ordering::Acquire) {
            return Err("TRYAGAIN this tokend cannot renew its lease on the backing Redis; nothing was changed".into());
        }
        Ok(())
    }

    fn waits(&self) -> bool {
        self.mode == Mode::Sync
    }

    fn relay(&self, channel: Bytes, message: Bytes) {
        // Best effort, as Redis Cluster's bus: dropped while the link is
        // down or the node is not sure it is a member, and past
        // `RELAY_MAX_BYTES` queued.
        let len = channel.len() + message.len();
        let may_write = self.cluster.as_ref().is_some_and(|c| c.may_write());
        if !may_write || self.link.down.load(Ordering::Acquire) {
            return;
        }
        if self.relayed.fetch_add(len, Ordering::Relaxed) + len > RELAY_MAX_BYTES {
            self.relayed.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        self.push(|seq| Item::Relay(seq, channel, message));
    }

    fn wait(&self, upto: u64) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            if *self.durable.borrow() >= upto {
                return true;
            }
            let mut rx = self.durable.clone();
            let done =
                matches!(tokio::time::timeout(self.persist_timeout, rx.wait_for(|&d| d >= upto)).await, Ok(Ok(_)));
            if !done && *self.durable.borrow() < upto && !self.link.down.load(Ordering::Acquire) {
                // A client waited the whole persist timeout: from now on the
                // link counts as down (until a write goes through), whether
                // or not the writer's own call has timed out yet. A reason
                // the writer already has (an error of Redis's) stays.
                self.set_down(format!("did not answer within --persist-timeout ({:?})", self.persist_timeout));
                // The writer's answer may have come just as this wait ran
                // out, and it said "up" before the line above: a write of
                // nothing, queued last, says so again (in sync mode nothing
                // else is admitted while down).
                self.probe();
            }
            done
        })
    }

    fn fate(&self, seq: u64) -> Fate {
        if *self.durable.borrow() < seq {
            return Fate::Pending(format!(
                "TRYAGAIN the backing Redis did not confirm this change within {:?}; it is applied here and stays queued",
                self.persist_timeout
            ));
        }
        match self.refused.lock().unwrap_or_else(|e| e.into_inner()).get(&seq) {
            Some(why) => Fate::Refused(format!("ERR the backing Redis refused this change ({why}); it is not durable")),
            None => Fate::Durable,
        }
    }
}

/// Renews the single-owner lease every third of its time; stops the
/// server if another tokend holds it now.
async fn renew_lease(backing: Arc<Backing>, mut con: Con, me: Identity) {
    let value = owner::lease_value(&me.node_id, &me.addr);
    let every = me.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        match owner::renew(&mut con, &backing.keys, &value, me.lease).await {
            Ok(Renewal::Held) => {
                backing.lease_renewed(sent, me.lease);
                backing.recheck_link();
            }
            Ok(Renewal::Lost(holder)) => {
                tracing::error!(%holder, "another tokend took the backing Redis prefix over; stopping");
                backing.fenced.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the lease on the backing Redis"),
        }
    }
}

/// Watches the wall clock against the store's: when the wall clock is
/// stepped, the persisted frame's offset from it changes, and `Pclock` is
/// rewritten so that a later start converts deadlines right.
async fn watch_clock(backing: Arc<Backing>, clock: Clock) {
    let mut written = None;
    loop {
        // Offset = wall − persisted = (wall − memory) + (memory − persisted).
        let offset = clock.wall_skew_ms() + backing.delta;
        // The two clocks are read apart: a millisecond either way is noise.
        if written.is_none_or(|w: i64| (offset - w).abs() > 1) {
            backing.push(|seq| Item::Clock(seq, offset));
            written = Some(offset);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Backing {
    /// Gives the lease up (graceful stop).
    pub async fn release(&self, mut con: Con, me: &Identity) {
        owner::release(&mut con, &self.keys, &owner::lease_value(&me.node_id, &me.addr)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sync-mode handle with no writer: the test plays the writer.
    fn backing() -> (Backing, mpsc::UnboundedReceiver<Item>, watch::Sender<u64>) {
        let mut config = Config::default_for_tests();
        config.durability = Mode::Sync;
        config.persist_timeout = Duration::from_millis(500);
        let (b, rx, durable) = Backing::new(Keys::new("t"), &config, 0, CancellationToken::new(), None);
        b.lease_until.store(u64::MAX, Ordering::Release);
        (b, rx, durable)
    }

    /// A wait that runs out takes the link down and queues a write of
    /// nothing after what it waited for. Were the writer's "up" just before
    /// it, nothing else would bring the link up again: while it is down, no
    /// change is admitted in sync mode.
    #[tokio::test(start_paused = true)]
    async fn a_wait_that_runs_out_queues_a_write_that_can_bring_the_link_up() {
        let (b, mut rx, durable) = backing();
        let seq = b.append(Vec::new());
        b.set_up();
        assert!(!b.wait(seq).await);
        assert!(b.status().down);
        assert!(b.admit().unwrap_err().contains("did not answer within --persist-timeout"));
        assert!(matches!(rx.try_recv(), Ok(Item::Changes(s, _)) if s == seq));
        let Ok(Item::Probe(probe)) = rx.try_recv() else { panic!("no write of nothing queued") };
        // Down already: a second wait that runs out queues nothing more.
        assert!(!b.wait(seq).await);
        assert!(rx.try_recv().is_err());
        // The writer: the change and the probe written, the link up.
        durable.send_replace(probe);
        b.set_up();
        assert!(b.wait(seq).await);
        assert!(b.admit().is_ok());
    }

    /// The backstop after a renewal on another connection: a probe only
    /// when the link is down with nothing queued (a queued write says
    /// what the link is when it is written).
    #[test]
    fn a_link_down_with_nothing_queued_is_checked_after_a_renewal() {
        let (b, mut rx, _durable) = backing();
        b.recheck_link();
        assert!(rx.try_recv().is_err(), "up: nothing to check");
        b.set_down("is unreachable (test)".into());
        b.backlog.store(1, Ordering::Relaxed);
        b.recheck_link();
        assert!(rx.try_recv().is_err(), "a write is queued: no probe");
        b.backlog.store(0, Ordering::Relaxed);
        b.recheck_link();
        assert!(matches!(rx.try_recv(), Ok(Item::Probe(_))));
    }
}

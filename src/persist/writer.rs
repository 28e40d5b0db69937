//! The writer task: takes queued units in order, writes them in batches of
//! whole units (one atomic script call each), and tells what became of them.

use super::layout::{Keys, encode_record, keyslot, shift};
use super::script::{Answer, Batch, Op, SOURCE};
use super::{Backing, Item, MAX_BATCH_OPS, owner};
use crate::store::{Change, Store};
use crate::token;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The slot whose fence a batch of events alone checks (for its exactly-once
/// sequence number).
const HOME_SLOT: u16 = 0;

/// Items taken off the channel ahead of writing (they wait in `carry`).
const MAX_CARRY: usize = 100_000;

pub(super) struct Writer {
    backing: Arc<Backing>,
    con: ConnectionManager,
    keys: Keys,
    owner: String,
    addr: String,
    durable: watch::Sender<u64>,
    script: redis::Script,
    /// Pools this writer listed in their slot's set (cleared when the
    /// backing Redis lost its data).
    known_pools: HashSet<Bytes>,
    /// Cluster mode: the slot moves `known_pools` is good for (a slot that
    /// left and came back may have lost its pools' entries meanwhile).
    known_moves: u64,
    /// The last batch's sequence number (what the fences remember).
    batch_seq: u64,
    carry: VecDeque<Item>,
    /// The store, for writing the whole state back after a loss.
    store: Store,
    /// Cluster mode: which slots this node holds.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// One batch, built.
struct Built {
    batch: Batch,
    /// (seq, first op, end op) of each unit in the batch.
    units: Vec<(u64, usize, usize)>,
    clock: Option<i64>,
    legacy: Vec<Bytes>,
    /// Units left out (wholly or in part): they are refused.
    dropped: Vec<u64>,
    /// The slot of each fence, in the batch's fence order.
    fence_slots: Vec<Option<u16>>,
    /// Sent even without operations (a probe of the fence).
    probe: bool,
    /// Pools this batch lists in their slot's set.
    new_pools: HashSet<Bytes>,
}

/// What became of one batch.
enum Written {
    /// Applied (or found applied): the operations that failed, 1-based.
    Applied(Vec<(usize, String)>),
    /// Not applied and never will be: every unit in it is refused.
    Refused(String),
    /// Another owner holds a fence (its index in the batch's fences, in
    /// cluster mode); outside cluster mode nothing more is written.
    Fenced(Option<usize>),
}

impl Writer {
    pub(super) fn new(
        backing: Arc<Backing>,
        con: ConnectionManager,
        keys: Keys,
        owner: String,
        addr: String,
        durable: watch::Sender<u64>,
        store: Store,
    ) -> Writer {
        let cluster = backing.cluster.clone();
        Writer {
            backing,
            con,
            keys,
            owner,
            addr,
            durable,
            script: redis::Script::new(SOURCE),
            known_pools: HashSet::new(),
            known_moves: 0,
            batch_seq: 0,
            carry: VecDeque::new(),
            cluster,
            store,
        }
    }

    /// Runs until the channel closes (the server stopped) or another
    /// tokend took the prefix over.
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>, flush_interval: Option<Duration>) {
        loop {
            if self.carry.is_empty() {
                let Some(first) = rx.recv().await else { return };
                self.carry.push_back(first);
                if let Some(d) = flush_interval {
                    tokio::time::sleep(d).await;
                }
            }
            while self.carry.len() < MAX_CARRY {
                match rx.try_recv() {
                    Ok(i) => self.carry.push_back(i),
                    Err(_) => break,
                }
            }
            if !self.write_some().await {
                return;
            }
        }
    }

    /// Writes the next batch of whole units off `carry`; false when the
    /// writer must stop.
    async fn write_some(&mut self) -> bool {
        let mut taken: Vec<Item> = Vec::new();
        let mut estimate = 0;
        while let Some(item) = self.carry.front() {
            let e = match item {
                Item::Changes(_, c) => 2 * c.len() + 1,
                _ => 1,
            };
            if !taken.is_empty() && estimate + e > MAX_BATCH_OPS {
                break;
            }
            estimate += e;
            let Some(item) = self.carry.pop_front() else { break };
            taken.push(item);
        }
        let weight: usize = taken.iter().map(Item::weight).sum();
        if let Some(moves) = self.cluster.as_ref().map(|cl| cl.moves())
            && moves != self.known_moves
        {
            self.known_pools.clear();
            self.known_moves = moves;
        }
        // Cluster mode: slots found fenced (another node owns them now);
        // their changes are left out and the batch is tried again.
        let mut fenced: HashSet<u16> = HashSet::new();
        loop {
            // Read again at each try: a lapse meanwhile drops what was queued.
            let discard = self.backing.discard_upto.load(Ordering::Acquire);
            let b = self.build(&taken, discard, &fenced);
            if let Some(offset) = b.clock {
                self.write_clock(offset).await;
            }
            for &seq in &b.dropped {
                self.backing.refuse(seq, "this node no longer serves the pool's hash slot".into());
            }
            let Built { mut batch, units, legacy, fence_slots, probe, new_pools, .. } = b;
            if batch.is_empty() && !probe {
                break;
            }
            if batch.fences().is_empty() {
                batch.fence(self.home_fence());
            }
            self.batch_seq += 1;
            match self.send(&batch).await {
                Written::Applied(failed) => {
                    // Listed in their slots' sets now (not before: a batch
                    // built again without them must list them again).
                    self.known_pools.extend(new_pools);
                    for (op, why) in failed {
                        // Operation `op` (1-based) belongs to the unit whose range holds it.
                        if let Some(&(seq, ..)) = units.iter().find(|(_, first, end)| op > *first && op <= *end) {
                            tracing::warn!(seq, %why, "the backing Redis refused a change; it stays in memory only");
                            self.backing.refuse(seq, why);
                        }
                    }
                    for pool in legacy {
                        self.drop_legacy(&pool).await;
                    }
                }
                Written::Refused(why) => {
                    for &(seq, ..) in &units {
                        self.backing.refuse(seq, why.clone());
                    }
                }
                Written::Fenced(Some(i)) => {
                    match fence_slots.get(i).copied().flatten() {
                        Some(slot) if fenced.insert(slot) => {
                            tracing::warn!(slot, "another node owns this hash slot now; its changes are not written");
                            if let Some(cl) = &self.cluster {
                                cl.set_state(slot, crate::cluster::SlotState::Unowned);
                            }
                            self.backing.strays.store(true, Ordering::Release);
                            continue;
                        }
                        // This node's own fence is gone: a new node id is
                        // needed; drop the batch rather than wedge.
                        _ => {
                            for &(seq, ..) in &units {
                                self.backing.refuse(seq, "fenced".into());
                            }
                        }
                    }
                }
                Written::Fenced(None) => return false,
            }
            break;
        }
        if let Some(last) = taken.last().map(Item::seq) {
            self.backing.backlog.fetch_sub(weight, Ordering::Relaxed);
            self.durable.send_replace(last);
        }
        true
    }

    /// The owner string the fences must name: in cluster mode, this node's
    /// current incarnation (a batch of an earlier one is fenced out).
    fn current_owner(&self) -> String {
        match &self.cluster {
            Some(cl) => super::cluster::incarnation(&self.owner, cl.generation()),
            None => self.owner.clone(),
        }
    }

    /// The fence a batch of events alone checks.
    fn home_fence(&self) -> String {
        match &self.cluster {
            Some(cl) => self.keys.node_fence(&cl.me().id),
            None => self.keys.fence(HOME_SLOT),
        }
    }

    /// True if this node may write `slot` (always, outside cluster mode).
    fn holds(&self, slot: u16) -> bool {
        use crate::cluster::SlotState::*;
        self.cluster.as_ref().is_none_or(|cl| matches!(cl.state(slot), Mine | Importing | Migrating(_)))
    }

    /// Builds one batch of `items`, leaving out units queued up to
    /// `discard` and (cluster mode) the changes of slots this node does not
    /// hold or found `fenced`.
    fn build(&mut self, items: &[Item], discard: u64, fenced: &HashSet<u16>) -> Built {
        let mut b = Built {
            batch: Batch::new(),
            units: Vec::new(),
            clock: None,
            legacy: Vec::new(),
            dropped: Vec::new(),
            fence_slots: Vec::new(),
            probe: false,
            new_pools: HashSet::new(),
        };
        for item in items {
            let (seq, first) = (item.seq(), b.batch.ops());
            if seq <= discard {
                b.dropped.push(seq);
                continue;
            }
            match item {
                Item::Changes(_, changes) => {
                    let mut skipped = false;
                    for c in changes {
                        let slot = keyslot(c.pool());
                        if fenced.contains(&slot) || !self.holds(slot) {
                            skipped = true;
                            continue;
                        }
                        let before = b.batch.fences().len();
                        self.add_change(&mut b.batch, &mut b.new_pools, c);
                        if b.batch.fences().len() > before {
                            b.fence_slots.push(Some(slot));
                        }
                    }
                    if skipped {
                        b.dropped.push(seq);
                    }
                }
                Item::Publish(_, channel, message) => {
                    b.batch.push(Op::Publish(channel, message));
                    if let Some(cl) = &self.cluster {
                        let m = super::cluster::encode_event(&cl.me().id, channel, message);
                        b.batch.push(Op::Publish(self.keys.events().as_bytes(), &m));
                    }
                }
                Item::Legacy(_, pool) => {
                    let slot = keyslot(pool);
                    let before = b.batch.fences().len();
                    b.batch.fence(self.keys.fence(slot));
                    if b.batch.fences().len() > before {
                        b.fence_slots.push(Some(slot));
                    }
                    b.batch.push(Op::SAdd(self.keys.pool_set(slot).as_bytes(), pool));
                    b.legacy.push(pool.clone());
                }
                Item::Clock(_, offset) => b.clock = Some(*offset),
                Item::Probe(_) => b.probe = true,
            }
            b.units.push((seq, first, b.batch.ops()));
        }
        b
    }

    /// The operations of one change.
    fn add_change(&mut self, batch: &mut Batch, new_pools: &mut HashSet<Bytes>, c: &Change) {
        let pool = c.pool();
        let slot = keyslot(pool);
        let keys = &self.keys;
        batch.fence(keys.fence(slot));
        let field = |t: &u128| token::format(*t);
        let delta = self.backing.delta;
        match c {
            Change::Put { token, record, .. } => {
                if !self.known_pools.contains(pool) && new_pools.insert(pool.clone()) {
                    batch.push(Op::SAdd(keys.pool_set(slot).as_bytes(), pool));
                }
                batch.push(Op::HSet(&keys.tokens(pool), &field(token), encode_record(record, delta).as_bytes()));
            }
            Change::Del { token, .. } => {
                batch.push(Op::HDel(&keys.tokens(pool), &field(token)));
                batch.push(Op::HDel(&keys.expired(pool), &field(token)));
            }
            Change::Expired { token, forget_at, .. } => {
                batch.push(Op::HDel(&keys.tokens(pool), &field(token)));
                let at = shift(*forget_at, -delta).to_string();
                batch.push(Op::HSet(&keys.expired(pool), &field(token), at.as_bytes()));
            }
            Change::Forget { token, .. } => batch.push(Op::HDel(&keys.expired(pool), &field(token))),
            Change::ForgetAll { .. } => batch.push(Op::Del(&keys.expired(pool))),
            Change::DropPool { .. } => {
                batch.push(Op::Del(&keys.tokens(pool)));
                batch.push(Op::Del(&keys.expired(pool)));
                batch.push(Op::SRem(keys.pool_set(slot).as_bytes(), pool));
                self.known_pools.remove(pool);
                new_pools.remove(pool);
            }
        }
    }

    /// Writes one batch, retrying until Redis applied it (or refuses it for
    /// good, or another tokend owns its slots).
    async fn send(&mut self, batch: &Batch) -> Written {
        let mut backoff = Duration::from_millis(10);
        let timeout = self.backing.persist_timeout;
        let started = std::time::Instant::now();
        let done = |b: &Backing| b.note_write(started.elapsed().as_micros() as u64);
        loop {
            let result = {
                let owner = self.current_owner();
                let inv = batch.invocation(&self.script, &owner, self.batch_seq);
                let call = inv.invoke_async::<redis::Value>(&mut self.con);
                tokio::pin!(call);
                tokio::select! {
                    r = &mut call => r,
                    _ = tokio::time::sleep(timeout) => {
                        // Hung (a long fork, a network black hole): down
                        // until it answers; the call goes on.
                        self.backing.set_down(format!("did not answer within --persist-timeout ({timeout:?})"));
                        call.await
                    }
                }
            };
            let why = match result {
                Ok(v) => match Answer::parse(v) {
                    Ok(Answer::Ok(failed)) => {
                        self.backing.set_up();
                        done(&self.backing);
                        return Written::Applied(failed);
                    }
                    Ok(Answer::Dup) => {
                        self.backing.set_up();
                        done(&self.backing);
                        return Written::Applied(Vec::new());
                    }
                    Ok(Answer::Lost(_)) => match self.recover_lost().await {
                        Ok(()) => continue,
                        Err(w) => return w,
                    },
                    Ok(Answer::Fenced(i, _)) if self.cluster.is_some() => return Written::Fenced(Some(i)),
                    Ok(Answer::Fenced(_, holder)) => {
                        tracing::error!(%holder, "another tokend owns the backing Redis prefix now; this one stops");
                        self.backing.set_down("is owned by another tokend".into());
                        self.backing.fenced.cancel();
                        return Written::Fenced(None);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the backing Redis answered the write script strangely; the batch is dropped");
                        return Written::Refused(e);
                    }
                },
                Err(e) if is_transient(&e) => describe(&e),
                Err(e) => {
                    // A script error is a bug, not a state of Redis: retrying
                    // would wedge every later write behind it.
                    tracing::error!(error = %e, "the backing Redis refused the write script; the batch is dropped");
                    return Written::Refused(e.to_string());
                }
            };
            self.backing.set_down(why);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// The backing Redis lost its data: claim the slots again, write the
    /// slot key, and queue the whole state to be written back (after
    /// whatever is queued already, which it supersedes).
    async fn recover_lost(&mut self) -> Result<(), Written> {
        self.backing.lost_total.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            "the backing Redis lost its data (a slot's fence is gone): claiming the slots again and writing the whole state back"
        );
        if let Some(cl) = self.cluster.clone() {
            return self.recover_lost_cluster(&cl).await;
        }
        loop {
            match owner::claim_all(&mut self.con, &self.keys, &self.owner, &self.addr, false).await {
                Ok(None) => break,
                Ok(Some(holder)) => {
                    tracing::error!(%holder, "another tokend claimed the slots meanwhile; this one stops");
                    self.backing.fenced.cancel();
                    return Err(Written::Fenced(None));
                }
                Err(e) => {
                    self.backing.set_down(describe(&e));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.write_back().await;
        Ok(())
    }

    /// After a loss, once the slots are claimed again: the slot key, then
    /// the whole state queued to be written back.
    async fn write_back(&mut self) {
        self.known_pools.clear();
        let store = self.store.clone();
        let _: Result<(), _> =
            redis::cmd("SET").arg(self.keys.slotkey()).arg(store.slot_key()).query_async(&mut self.con).await;
        tokio::task::spawn_blocking(move || store.rewrite(None));
    }

    /// [`Writer::recover_lost`] in cluster mode: this node's own fence and
    /// the slots it holds are claimed again (those another node claimed
    /// meanwhile are given up), then its whole state is written back.
    async fn recover_lost_cluster(&mut self, cl: &crate::cluster::Cluster) -> Result<(), Written> {
        use crate::cluster::SlotState::{Migrating, Mine};
        // Not the slots being loaded: their owner may still hold them.
        let todo: Vec<(u16, String)> = (0..crate::cluster::SLOTS)
            .filter(|&s| matches!(cl.state(s), Mine | Migrating(_)))
            .map(|s| (s, String::new()))
            .collect();
        let owner = self.current_owner();
        loop {
            super::cluster::init_node_fence(&mut self.con, &self.keys, &cl.me().id, &owner).await;
            match super::cluster::claim_fences(&mut self.con, &self.keys, &owner, &self.addr, &todo).await {
                Ok(epochs) => {
                    for (slot, epoch) in epochs {
                        if epoch <= 0 {
                            cl.set_state(slot, crate::cluster::SlotState::Unowned);
                            self.backing.strays.store(true, Ordering::Release);
                        }
                    }
                    break;
                }
                Err(e) => {
                    self.backing.set_down(describe(&e));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.write_back().await;
        Ok(())
    }

    /// Writes the persisted frame's offset (not fenced: it is a fact about
    /// the clocks, the same whoever writes it).
    async fn write_clock(&mut self, offset: i64) {
        let mut backoff = Duration::from_millis(10);
        while let Err(e) = redis::cmd("SET").arg(self.keys.clock()).arg(offset).query_async::<()>(&mut self.con).await {
            if !is_transient(&e) {
                tracing::warn!(error = %e, "cannot write the clock offset");
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Drops a pool's entry in the earlier versions' pool set, and its old
    /// keys where the current layout names them differently.
    async fn drop_legacy(&mut self, pool: &[u8]) {
        let mut pipe = redis::pipe();
        pipe.cmd("SREM").arg(self.keys.legacy_pools()).arg(pool).ignore();
        for (old, new) in [
            (self.keys.legacy_tokens(pool), self.keys.tokens(pool)),
            (self.keys.legacy_expired(pool), self.keys.expired(pool)),
        ] {
            if old != new {
                pipe.cmd("DEL").arg(old).ignore();
            }
        }
        if let Err(e) = pipe.query_async::<()>(&mut self.con).await {
            tracing::warn!(error = %e, "cannot clean up an earlier version's keys (harmless: read again, written again)");
        }
    }
}

/// Errors that say the backing Redis cannot take writes now but may later:
/// the connection, or its state (`-OOM`, `-READONLY`, `-MISCONF`,
/// `-LOADING`, `-BUSY`, `-MASTERDOWN`, `-TRYAGAIN`, `-CLUSTERDOWN`).
fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.code(),
            Some(
                "OOM"
                    | "READONLY"
                    | "MISCONF"
                    | "LOADING"
                    | "BUSY"
                    | "MASTERDOWN"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "NOREPLICAS"
            )
        )
}

/// How the link looks, for `-TRYAGAIN the backing Redis <this>`.
fn describe(e: &redis::RedisError) -> String {
    match e.code() {
        Some(_) => format!("refuses writes ({e})"),
        None => format!("is unreachable ({e})"),
    }
}

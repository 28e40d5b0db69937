//! The writer task: takes queued units in order, writes them in batches of
//! whole units (one atomic script call each), and tells what became of them.

use super::con::Con;
use super::layout::{Keys, SLAB_SLOTS, SLOT_BYTES, encode_slot, keyslot, shift, slot_place};
use super::script::{Answer, Batch, Op, SOURCE};
use super::{Backing, Backoff, Item, MAX_BATCH_OPS, owner};
use crate::store::{Change, Store};
use crate::token;
use bytes::Bytes;
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
    con: Con,
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
    /// The owner string the batch being written carries: the incarnation
    /// it was built under, through all its retries (after a lapse, what an
    /// earlier incarnation queued must not pass the new one's fences).
    batch_owner: String,
    carry: VecDeque<Item>,
    /// The store, for writing the whole state back after a loss.
    store: Store,
    /// Cluster mode: which slots this node holds.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// One call's worth of a batch: the whole batch on a redis-server, one hash
/// slot's share (or the events) on a Redis Cluster.
#[derive(Default)]
struct Part {
    batch: Batch,
    /// The slot of each fence, in the batch's fence order (None: the home
    /// fence).
    fence_slots: Vec<Option<u16>>,
}

/// One batch, built.
struct Built {
    /// The calls: the slots' first, the one with the events last.
    parts: Vec<Part>,
    clock: Option<i64>,
    legacy: Vec<Bytes>,
    /// Units left out (wholly or in part): they are refused.
    dropped: Vec<u64>,
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
    /// Not applied, and built by an earlier incarnation of this node (its
    /// heartbeat lapsed since): built again, which leaves out what was
    /// queued before the lapse.
    Stale,
}

impl Writer {
    pub(super) fn new(
        backing: Arc<Backing>,
        con: Con,
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
            batch_owner: String::new(),
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
            // A restated stretch of slots weighs as its records.
            let e = match item {
                Item::Changes(..) => 2 * item.weight() + 1,
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
        // their changes are left out and the batch is tried again (on a
        // Redis Cluster, where the other slots' parts were written, they are
        // only refused).
        let mut fenced: HashSet<u16> = HashSet::new();
        let split = self.con.is_cluster();
        loop {
            self.while_unsure_of_membership().await;
            // Read again at each try: a lapse meanwhile drops what was
            // queued. The owner first: a lapse sets the discard mark before
            // it names a new incarnation, so a batch carrying the new one
            // never holds what the lapse dropped.
            self.batch_owner = self.current_owner();
            let discard = self.backing.discard_upto.load(Ordering::Acquire);
            let b = self.build(&taken, discard, &fenced, split);
            if let Some(offset) = b.clock {
                self.write_clock(offset).await;
            }
            for &seq in &b.dropped {
                self.backing.refuse(seq, "this node no longer serves the pool's hash slot".into());
            }
            let Built { parts, legacy, new_pools, .. } = b;
            if parts.is_empty() {
                break;
            }
            self.batch_seq += 1;
            let started = std::time::Instant::now();
            let outcomes = self.send_parts(&parts).await;
            let mut again = false;
            let mut all_applied = true;
            for (part, written) in parts.iter().zip(outcomes) {
                let refuse_part = |why: &str| {
                    let mut seqs: Vec<u64> = (1..=part.batch.ops()).filter_map(|op| part.batch.unit_of(op)).collect();
                    seqs.dedup();
                    for seq in seqs {
                        self.backing.refuse(seq, why.to_string());
                    }
                };
                match written {
                    Written::Applied(failed) => {
                        for (op, why) in failed {
                            if let Some(seq) = part.batch.unit_of(op) {
                                tracing::warn!(seq, %why, "the backing Redis refused a change; it stays in memory only");
                                self.backing.refuse(seq, why);
                            }
                        }
                        continue;
                    }
                    Written::Refused(why) => refuse_part(&why),
                    Written::Fenced(Some(i)) => match part.fence_slots.get(i).copied().flatten() {
                        Some(slot) if fenced.insert(slot) => {
                            tracing::warn!(slot, "another node owns this hash slot now; its changes are not written");
                            if let Some(cl) = &self.cluster {
                                cl.set_state(slot, crate::cluster::SlotState::Unowned);
                            }
                            self.backing.strays.store(true, Ordering::Release);
                            if split {
                                refuse_part("this node no longer serves the pool's hash slot");
                            } else {
                                again = true;
                            }
                        }
                        // This node's own fence is gone: a new node id is
                        // needed; drop the batch rather than wedge.
                        _ => refuse_part("fenced"),
                    },
                    Written::Fenced(None) => return false,
                    // Built again, its units are under the lapse's mark and
                    // refused; on a Redis Cluster, only this part's are (the
                    // others' may have been written).
                    Written::Stale if split => refuse_part("this node's heartbeat lapsed"),
                    Written::Stale => again = true,
                }
                all_applied = false;
            }
            if again {
                continue;
            }
            self.backing.note_write(started.elapsed().as_micros() as u64);
            // Listed in their slots' sets now (not before: a batch built
            // again without them must list them again).
            self.known_pools.extend(new_pools);
            if all_applied {
                // Before the batch counts as written: a graceful stop waits
                // for it, and an entry left in the earlier versions' pool
                // set would load the pool again after it was dropped.
                for pool in legacy {
                    self.drop_legacy(&pool).await;
                }
            }
            break;
        }
        if let Some(last) = taken.last().map(Item::seq) {
            self.backing.backlog.fetch_sub(weight, Ordering::Relaxed);
            let relayed: usize = taken.iter().map(Item::relayed_bytes).sum();
            self.backing.relayed.fetch_sub(relayed, Ordering::Relaxed);
            self.durable.send_replace(last);
        }
        true
    }

    /// Cluster mode: waits while this node is not sure it is still a
    /// member (as long as it serves no command: two thirds of the node
    /// timeout after its last renewal went out, so paused or cut off),
    /// until a renewal goes through or the lapse is found, which drops
    /// what was queued. What it queued meanwhile (the events of expiries
    /// that fired as it resumed, in pools whose slots have another owner
    /// now) is guarded by its own fence only, which nobody else takes:
    /// written, they would repeat what the new owner published. A node
    /// that left after handing every slot over holds no pool to write.
    async fn while_unsure_of_membership(&self) {
        let Some(cl) = &self.cluster else { return };
        while !cl.may_write() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The owner string the fences must name for a batch built now: in
    /// cluster mode, this node's current incarnation (a batch keeps the one
    /// it was built under, see `batch_owner`).
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
    /// hold or found `fenced`; `split`: one part per hash slot (a Redis
    /// Cluster).
    fn build(&mut self, items: &[Item], discard: u64, fenced: &HashSet<u16>, split: bool) -> Built {
        let mut parts: std::collections::BTreeMap<Option<u16>, Part> = Default::default();
        let mut b = Built {
            parts: Vec::new(),
            clock: None,
            legacy: Vec::new(),
            dropped: Vec::new(),
            new_pools: HashSet::new(),
        };
        let mut probe = false;
        let key = |slot: u16| if split { Some(slot) } else { None };
        // The events' part. Outside cluster mode its fence is slot 0's:
        // on a Redis Cluster, slot 0's changes and the events then share
        // one part (two parts checking one fence with one batch number
        // would find the second a duplicate).
        let home = if split && self.cluster.is_none() { Some(HOME_SLOT) } else { None };
        for item in items {
            let seq = item.seq();
            if seq <= discard {
                // Refused whatever it is: a served blocked client asks the
                // fate of the last number queued, which may be any item's.
                b.dropped.push(seq);
                // Still written: the clock offset is a fact about the
                // clocks, and a probe checks the link.
                if !matches!(item, Item::Clock(..) | Item::Probe(_)) {
                    continue;
                }
            }
            match item {
                Item::Changes(_, changes) => {
                    let mut skipped = false;
                    let runs = coalesce(changes);
                    for c in runs.as_deref().unwrap_or(changes) {
                        let slot = keyslot(c.pool());
                        if fenced.contains(&slot) || !self.holds(slot) {
                            skipped = true;
                            continue;
                        }
                        let part = parts.entry(key(slot)).or_default();
                        part.batch.set_unit(seq);
                        let before = part.batch.fences().len();
                        self.add_change(&mut part.batch, &mut b.new_pools, c);
                        if part.batch.fences().len() > before {
                            part.fence_slots.push(Some(slot));
                        }
                    }
                    if skipped {
                        b.dropped.push(seq);
                    }
                }
                // An event goes to the backing Redis's own subscribers and,
                // in cluster mode, to the other nodes; a relayed PUBLISH to
                // the other nodes only.
                Item::Publish(_, channel, message) | Item::Relay(_, channel, message) => {
                    let part = parts.entry(home).or_default();
                    part.batch.set_unit(seq);
                    if matches!(item, Item::Publish(..)) {
                        part.batch.push(Op::Publish(channel, message));
                    }
                    if let Some(cl) = &self.cluster {
                        let m = super::cluster::encode_event(&cl.me().id, channel, message);
                        part.batch.push(Op::Publish(self.keys.events().as_bytes(), &m));
                    }
                }
                Item::Legacy(_, pool) => {
                    let slot = keyslot(pool);
                    let part = parts.entry(key(slot)).or_default();
                    part.batch.set_unit(seq);
                    let before = part.batch.fences().len();
                    part.batch.fence(self.keys.fence(slot));
                    if part.batch.fences().len() > before {
                        part.fence_slots.push(Some(slot));
                    }
                    part.batch.push(Op::SAdd(self.keys.pool_set(slot).as_bytes(), pool));
                    // Its tokens are in slots now (restated before this).
                    part.batch.push(Op::Del(&self.keys.tokens(pool)));
                    b.legacy.push(pool.clone());
                }
                Item::Clock(_, offset) => b.clock = Some(*offset),
                Item::Probe(_) => probe = true,
            }
        }
        if probe {
            parts.entry(home).or_default();
        }
        // The part with the events goes last: on a Redis Cluster, they are
        // published once the changes they tell of are written.
        let last = parts.remove(&home);
        b.parts = parts.into_values().collect();
        if let Some(mut part) = last {
            if part.batch.fences().is_empty() {
                part.batch.fence(self.home_fence());
                part.fence_slots.push(None);
            }
            b.parts.push(part);
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
        // The tokens hash of earlier layouts is read at recovery and
        // deleted once its tokens are in slots; until then a token that
        // goes must go from it too.
        match c {
            Change::Put { token, record, slot: at, .. } => {
                if !self.known_pools.contains(pool) && new_pools.insert(pool.clone()) {
                    batch.push(Op::SAdd(keys.pool_set(slot).as_bytes(), pool));
                }
                set_slots(batch, keys, pool, *at, &encode_slot(*token, record, delta));
            }
            Change::Del { token, slot: at, .. } => {
                if let Some(at) = at {
                    set_slots(batch, keys, pool, *at, &[0; SLOT_BYTES]);
                }
                batch.push(Op::HDel(&keys.tokens(pool), &field(token)));
                batch.push(Op::HDel(&keys.expired(pool), &field(token)));
            }
            Change::Expired { token, forget_at, slot: at, .. } => {
                if let Some(at) = at {
                    set_slots(batch, keys, pool, *at, &[0; SLOT_BYTES]);
                }
                batch.push(Op::HDel(&keys.tokens(pool), &field(token)));
                let at = shift(*forget_at, -delta).to_string();
                batch.push(Op::HSet(&keys.expired(pool), &field(token), at.as_bytes()));
            }
            Change::Slots { first, records, .. } => {
                if !self.known_pools.contains(pool) && new_pools.insert(pool.clone()) {
                    batch.push(Op::SAdd(keys.pool_set(slot).as_bytes(), pool));
                }
                let mut bytes = Vec::with_capacity(records.len() * SLOT_BYTES);
                for r in records {
                    match r {
                        Some((token, record)) => bytes.extend_from_slice(&encode_slot(*token, record, delta)),
                        None => bytes.extend_from_slice(&[0; SLOT_BYTES]),
                    }
                }
                set_slots(batch, keys, pool, *first, &bytes);
            }
            Change::Forget { token, .. } => batch.push(Op::HDel(&keys.expired(pool), &field(token))),
            Change::ForgetAll { .. } => batch.push(Op::Del(&keys.expired(pool))),
            Change::DropPool { .. } => {
                batch.push(Op::DelSlabs(&keys.slabs(pool), &keys.slab_prefix(pool)));
                batch.unlist(&keys.slab_prefix(pool));
                batch.push(Op::Del(&keys.tokens(pool)));
                batch.push(Op::Del(&keys.expired(pool)));
                batch.push(Op::SRem(keys.pool_set(slot).as_bytes(), pool));
                self.known_pools.remove(pool);
                new_pools.remove(pool);
            }
        }
    }

    /// Writes the parts of one batch: on a Redis Cluster, the slots' parts
    /// at once (one try each; whichever did not go through is then written
    /// by [`Writer::send`], retried as long as it takes), then the events.
    async fn send_parts(&mut self, parts: &[Part]) -> Vec<Written> {
        let [data @ .., last] = parts else { return Vec::new() };
        if data.is_empty() {
            return vec![self.send(&last.batch).await];
        }
        let owner = self.batch_owner.clone();
        let (seq, timeout, script) = (self.batch_seq, self.backing.persist_timeout, &self.script);
        let first = self
            .con
            .each(parts[..data.len()].iter().collect(), |mut c, part| {
                let inv = part.batch.invocation(script, &owner, seq);
                async move {
                    match tokio::time::timeout(timeout, inv.invoke_async::<redis::Value>(&mut c)).await {
                        Ok(Ok(v)) => match Answer::parse(v) {
                            Ok(Answer::Ok(failed)) => Ok(Written::Applied(failed)),
                            Ok(Answer::Dup) => Ok(Written::Applied(Vec::new())),
                            _ => Err(false),
                        },
                        Ok(Err(_)) => Err(false),
                        Err(_) => Err(true),
                    }
                }
            })
            .await;
        if first.iter().any(|w| matches!(w, Err(true))) {
            self.backing.set_down(format!("did not answer within --persist-timeout ({timeout:?})"));
        } else if first.iter().any(Result::is_ok) {
            self.backing.set_up();
        }
        let mut out = Vec::with_capacity(parts.len());
        for (part, w) in parts.iter().zip(first) {
            out.push(match w {
                Ok(w) => w,
                // Tried again, as long as it takes (a part that was applied
                // after all is found a duplicate).
                Err(_) => self.send(&part.batch).await,
            });
        }
        // The events tell of changes written: none after a part found the
        // batch stale (this node's heartbeat lapsed).
        if out.iter().any(|w| matches!(w, Written::Stale)) {
            out.push(Written::Stale);
        } else {
            out.push(self.send(&last.batch).await);
        }
        out
    }

    /// Writes one batch, retrying until Redis applied it (or refuses it for
    /// good, or another tokend owns its slots, or the batch is stale).
    async fn send(&mut self, batch: &Batch) -> Written {
        let mut backoff = Backoff::new();
        let timeout = self.backing.persist_timeout;
        loop {
            let result = {
                let inv = batch.invocation(&self.script, &self.batch_owner, self.batch_seq);
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
            let answer = match result {
                Ok(v) => Answer::parse(v),
                Err(e) if is_transient(&e) => {
                    if self.stale() {
                        return Written::Stale;
                    }
                    self.backing.set_down(describe(&e));
                    backoff.wait().await;
                    continue;
                }
                Err(e) => {
                    // A script error is a bug, not a state of Redis: retrying
                    // would wedge every later write behind it. Redis
                    // answered, so the link is up: later writes are admitted
                    // and each is told what became of it.
                    tracing::error!(error = %e, "the backing Redis refused the write script; the batch is dropped");
                    self.backing.set_up();
                    return Written::Refused(in_redis_words(&e));
                }
            };
            match answer {
                Ok(Answer::Ok(failed)) => {
                    self.backing.set_up();
                    return Written::Applied(failed);
                }
                Ok(Answer::Dup) => {
                    self.backing.set_up();
                    return Written::Applied(Vec::new());
                }
                // Not applied: an earlier incarnation's batch is built
                // again (which drops it) rather than judged by what the
                // fences say about the new one.
                _ if self.stale() => return Written::Stale,
                Ok(Answer::Lost(_)) => {
                    if let Err(w) = self.recover_lost().await {
                        return w;
                    }
                    // Not at full speed if the loss is still there.
                    backoff.wait().await;
                }
                Ok(Answer::Fenced(i, _)) if self.cluster.is_some() => {
                    self.backing.set_up();
                    return Written::Fenced(Some(i));
                }
                Ok(Answer::Fenced(_, holder)) => {
                    tracing::error!(%holder, "another tokend owns the backing Redis prefix now; this one stops");
                    self.backing.set_down("is owned by another tokend".into());
                    self.backing.fenced.cancel();
                    return Written::Fenced(None);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the backing Redis answered the write script strangely; the batch is dropped");
                    self.backing.set_up();
                    return Written::Refused(e);
                }
            }
        }
    }

    /// True if this node's heartbeat lapsed since the batch being written
    /// was built (cluster mode).
    fn stale(&self) -> bool {
        self.batch_owner != self.current_owner()
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
        let mut backoff = Backoff::new();
        loop {
            match redis::cmd("SET").arg(self.keys.clock()).arg(offset).query_async::<()>(&mut self.con).await {
                // Up again as after any write that went through (in sync
                // mode no change is admitted while down, so no other write
                // would come to say so before the next renewal's check).
                Ok(()) => return self.backing.set_up(),
                Err(e) if is_transient(&e) => {
                    // Writes wait behind this one: clients are told why, as
                    // by `send` (else they read only "did not answer").
                    self.backing.set_down(describe(&e));
                    backoff.wait().await;
                }
                Err(e) => {
                    // Redis answered: up, as in `send`.
                    tracing::warn!(error = %e, "cannot write the clock offset");
                    self.backing.set_up();
                    return;
                }
            }
        }
    }

    /// Drops a pool's entry in the earlier versions' pool set, and its old
    /// keys where the current layout names them differently.
    async fn drop_legacy(&mut self, pool: &[u8]) {
        let mut cmds = vec![redis::cmd("SREM").arg(self.keys.legacy_pools()).arg(pool).clone()];
        for (old, new) in [
            (self.keys.legacy_tokens(pool), self.keys.tokens(pool)),
            (self.keys.legacy_expired(pool), self.keys.expired(pool)),
        ] {
            if old != new {
                cmds.push(redis::cmd("DEL").arg(old).clone());
            }
        }
        if let Err(e) = self.con.query_each::<redis::Value>(cmds).await {
            tracing::warn!(error = %e, "cannot clean up an earlier version's keys (harmless: read again, written again)");
        }
    }
}

/// The changes of one unit with each run of `Put`s into consecutive slots of
/// one pool made one `Slots` change (a GEN's tokens are written as a few
/// strings, not one SETRANGE a token); None if there is no such run.
fn coalesce(changes: &[Change]) -> Option<Vec<Change>> {
    let run = |a: &Change, b: &Change| {
        matches!((a, b), (Change::Put { pool: p, slot: s, .. }, Change::Put { pool: q, slot: t, .. })
            if p == q && s.checked_add(1) == Some(*t))
    };
    if !changes.windows(2).any(|w| run(&w[0], &w[1])) {
        return None;
    }
    let mut out: Vec<Change> = Vec::new();
    for c in changes {
        let Change::Put { pool, token, record, slot } = c else {
            out.push(c.clone());
            continue;
        };
        if let Some(Change::Slots { pool: p, first, records }) = out.last_mut()
            && p == pool
            && u64::from(*first) + records.len() as u64 == u64::from(*slot)
        {
            records.push(Some((*token, *record)));
            continue;
        }
        out.push(Change::Slots { pool: pool.clone(), first: *slot, records: vec![Some((*token, *record))] });
    }
    Some(out)
}

/// Writes the records `bytes` (whole slot records) from slot `first` on,
/// one SETRANGE per slab string they fall in; a slab string a batch
/// writes first is listed in the pool's set of slab strings.
fn set_slots(batch: &mut Batch, keys: &Keys, pool: &[u8], first: u32, bytes: &[u8]) {
    let mut slot = first;
    let mut rest = bytes;
    while !rest.is_empty() {
        let (k, offset) = slot_place(slot);
        let room = (SLAB_SLOTS - slot % SLAB_SLOTS) as usize * SLOT_BYTES;
        let (now, later) = rest.split_at(room.min(rest.len()));
        let key = keys.slab(pool, k);
        if batch.first_listing(&key) {
            batch.push(Op::SAdd(&keys.slabs(pool), k.to_string().as_bytes()));
        }
        if now.len() == SLAB_SLOTS as usize * SLOT_BYTES {
            // A whole slab string: SET makes it exactly this long, where
            // SETRANGE grows it by doubling (up to 2 MiB held for 1 MiB).
            batch.push(Op::Set(&key, now));
        } else {
            batch.push(Op::SetRange(&key, offset, now));
        }
        slot += (now.len() / SLOT_BYTES) as u32;
        rest = later;
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
        Some(_) => format!("refuses writes ({})", in_redis_words(e)),
        None => format!("is unreachable ({e})"),
    }
}

/// An error as Redis said it ("READONLY You can't write…"), not the client
/// library's name for its kind ("ReadOnly: …"); other errors as the
/// library describes them.
fn in_redis_words(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        (None, _) => e.to_string(),
    }
}

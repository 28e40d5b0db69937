//! Cluster mode's membership, kept in the backing Redis (the arbiter: no
//! consensus of tokend's own).
//!
//! - **Heartbeat.** Every node renews its entry in `P{nodes}:members`,
//!   scored with when it lapses by the backing Redis's own clock, every
//!   twentieth of `--cluster-node-timeout`, and names its current
//!   incarnation (the owner string its fences carry) in `P{nodes}:owners`;
//!   the same call drops lapsed entries and returns the live nodes. A node
//!   serves its slots only until two thirds of the timeout after it *sent*
//!   its last renewal that went through, so it stops before anyone can see
//!   its entry lapse; a renewal that arrives after the entry lapsed does
//!   not revive it.
//! - **Spread.** Every node gives blocks of slots to the live nodes by
//!   rendezvous hashing with bounded load ([`crate::cluster::targets`]).
//! - **Handover.** A node that holds a slot another node should have
//!   answers its clients `-TRYAGAIN`, waits for the commands already
//!   running, forgets the slot's pools (blocked clients get `-MOVED`),
//!   flushes its writes, and releases the slot's fence (owner emptied,
//!   epoch kept); it answers `-MOVED` there once the fence names the new
//!   owner (a node leaving: `-TRYAGAIN` till it exits); the new owner
//!   claims the fence with the next epoch and loads the pools.
//! - **Takeover.** A slot whose fence names an incarnation that is no
//!   longer live is claimed (compare-and-set on the owner it names) and
//!   loaded by the node it falls to; what fell due meanwhile fires on load.
//! - **Fencing.** Every write checks its slots' fences (see
//!   [`super::script`]) against the incarnation that queued it: a node
//!   that lost a slot cannot write it, and what an earlier incarnation
//!   queued cannot pass a later one's fences.
//! - **Lapse.** A node that finds its heartbeat lapsed (paused, cut off)
//!   drops every slot and everything queued for the backing Redis, and
//!   rejoins as a new incarnation.
//! - **Lost data.** A node whose own fence vanished (`FLUSHALL`, a restart
//!   of the backing Redis without persistence) writes its state back and
//!   changes no slot for a node timeout, while the others join again.

use super::Backing;
use super::con::Con;
use super::layout::Keys;
use super::recover::load_slots;
use crate::cluster::{Cluster, NO_NODE, Node, SLOTS, SlotState, keyslot, targets};
use crate::pubsub::PubSub;
use crate::store::Store;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Renews this node's heartbeat. KEYS: the members, the addresses, the
/// incarnations, the node's own fence. ARGV: id, address, timeout ms,
/// whether this is the node's first renewal (since start or a lapse), its
/// incarnation (also written in its own fence). Drops lapsed nodes; returns `OK` (`LOST` when the node's
/// own fence is gone: the backing Redis lost its data) and the live nodes
/// as id, address pairs. A renewal after the entry lapsed (delayed past the
/// node timeout) does not revive it, since others may have taken its slots
/// already: it answers `LAPSED` and the node rejoins as a new incarnation.
/// A node that left (its fence marked `left`) gets `LEFT`, whatever it sends.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fence = redis.call('EXISTS', KEYS[4]) == 1
-- Left (graceful stop): never made again.
if redis.call('HEXISTS', KEYS[4], 'left') == 1 then return {'LEFT'} end
if ARGV[4] ~= '1' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  -- An entry missing along with the node's own fence (which nobody else
  -- deletes): the backing Redis lost its data, not this node its place.
  local lost = not s and not fence
  if not lost and (not s or tonumber(s) <= now) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[3], ARGV[1])
    return {'LAPSED'}
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
if fence then redis.call('HSET', KEYS[4], 'owner', ARGV[5]) end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
local out = {'OK'}
if not fence then out[1] = 'LOST' end
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"#;

/// Which incarnations are no longer live, by the backing Redis's clock.
/// KEYS: the members, the incarnations, then the own fence of each node
/// asked about. ARGV: the incarnations asked about (KEYS[i + 2] is the
/// fence of ARGV[i]'s node). Returns 1 for each that is not live and never
/// will be again, else 0: its entry lapsed, or its node runs a later
/// incarnation, or its entry is gone while its node's fence is there (a
/// node that lapsed or left). An entry gone along with the node's fence is
/// a loss of the backing Redis's data, not a death: that node is about to
/// join again as the same incarnation, so it counts as live.
const DEAD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #ARGV do
  local node = string.match(ARGV[i], '^[^:]*')
  local s = redis.call('ZSCORE', KEYS[1], node)
  local dead
  if s then
    dead = tonumber(s) <= now or redis.call('HGET', KEYS[2], node) ~= ARGV[i]
  else
    dead = redis.call('EXISTS', KEYS[i + 2]) == 1
  end
  out[#out + 1] = dead and 1 or 0
end
return out
"#;

/// Claims fences by compare-and-set. KEYS: the fences. ARGV: the claimer's
/// incarnation, its address, then for each fence KEYS[i] the owner
/// expected, ARGV[i + 2] (empty: none). A fence is taken, with the next
/// epoch, if it names the owner expected (which the caller found it may
/// take: see [`claim_fences`]) or the claimer already. Returns each new
/// epoch, or -1.
const CLAIM: &str = r#"
local out = {}
for i = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'owner', 'epoch')
  local cur = f[1] or ''
  if cur == ARGV[1] or cur == ARGV[i + 2] then
    local epoch = (tonumber(f[2]) or 0) + 1
    redis.call('HSET', KEYS[i], 'owner', ARGV[1], 'epoch', epoch, 'addr', ARGV[2], 'seq', 0)
    out[#out + 1] = epoch
  else
    out[#out + 1] = -1
  end
end
return out
"#;

/// Releases the fences in KEYS that ARGV[1] owns (owner emptied, epoch
/// kept: the next claim goes higher).
const RELEASE: &str = r#"
local n = 0
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'owner') == ARGV[1] then
    redis.call('HSET', KEYS[i], 'owner', '', 'addr', '', 'seq', 0)
    n = n + 1
  end
end
return n
"#;

/// The owner string of this node's current incarnation: the process's own
/// (node id and start time) and how many times its heartbeat lapsed.
pub(super) fn incarnation(base: &str, generation: u64) -> String {
    format!("{base}:{generation}")
}

/// True for a slot this node holds (serves, loads, or is handing over).
fn held(st: SlotState) -> bool {
    matches!(st, SlotState::Mine | SlotState::Importing | SlotState::Migrating(_))
}

/// The membership task's state.
pub struct Membership {
    cluster: Arc<Cluster>,
    con: Con,
    keys: Keys,
    store: Store,
    backing: Arc<Backing>,
    /// The process's part of the owner string (see [`incarnation`]).
    base: String,
    timeout: Duration,
    delta: i64,
    /// The live nodes, as the heartbeat task last saw them (None: do not
    /// change any slot now).
    live: watch::Receiver<Option<Vec<Node>>>,
    live_tx: Arc<watch::Sender<Option<Vec<Node>>>>,
    /// Leaving the cluster (graceful stop): no more rounds. The heartbeat
    /// goes on until the slots are handed over ([`Cluster::mark_left`]):
    /// the writer waits while the node's lease runs out, and the others
    /// would take the slots over before the hand-over's flush ended.
    leaving: bool,
}

impl Membership {
    /// The membership of a node whose backing store is `backing` (in
    /// cluster mode), its fences carrying `base` (see [`incarnation`]).
    pub fn new(backing: Arc<Backing>, con: Con, store: Store, base: String, timeout: Duration) -> Option<Membership> {
        let (live_tx, live) = watch::channel(None);
        Some(Membership {
            cluster: backing.cluster.clone()?,
            keys: backing.keys.clone(),
            delta: backing.delta,
            con,
            store,
            backing,
            base,
            timeout,
            live,
            live_tx: Arc::new(live_tx),
            leaving: false,
        })
    }

    /// How often the heartbeat is renewed and the slot map looked at.
    pub fn interval(&self) -> Duration {
        (self.timeout / 20).max(Duration::from_millis(10))
    }

    fn owner(&self) -> String {
        incarnation(&self.base, self.cluster.generation())
    }

    /// One round, on the live nodes the heartbeat last saw: hand over what
    /// others should have and claim what this node should have. True while
    /// slots this node released wait for their new owners.
    ///
    /// A released slot answers `-TRYAGAIN` until its fence names the node
    /// it goes to, not `-MOVED` there: that node learns of the change at
    /// its own next heartbeat, and till then it sends the slot's clients
    /// back here (a join moves some blocks between the old nodes too). A
    /// client follows a `-MOVED` at once, and a few rounds of that use up
    /// its retries; it waits before retrying a `-TRYAGAIN`.
    pub async fn tick(&mut self) -> bool {
        if self.leaving || !self.cluster.serving() {
            return false;
        }
        let Some(live) = self.live.borrow_and_update().clone() else { return false };
        let Some(me) = live.iter().position(|n| n.id == self.cluster.me().id) else { return false };
        let map = targets(&live);
        let mut give = Vec::new();
        let mut want = Vec::new();
        let mut waiting = Vec::new();
        let mut set = Vec::new();
        for slot in 0..SLOTS {
            let t = map[slot as usize] as usize;
            let st = self.cluster.state(slot);
            // Every state that names a node is set again: by its index
            // in the new list.
            if t == me {
                if st != SlotState::Mine {
                    set.push((slot, SlotState::Importing));
                    want.push(slot);
                }
            } else if let SlotState::Released(_) = st {
                set.push((slot, SlotState::Released(t as u16)));
                waiting.push(slot);
            } else if held(st) {
                if let SlotState::Migrating(_) = st {
                    set.push((slot, SlotState::Migrating(t as u16)));
                }
                give.push(slot);
            } else {
                set.push((slot, SlotState::Other(t as u16)));
            }
        }
        // A slot's state names its node by its index in the node list: the
        // list and the states change together, here, or a redirect would
        // name whichever node took the old index (the list is sorted, so a
        // node joining or leaving shifts the others).
        self.cluster.set_nodes(live.clone());
        for (slot, st) in set {
            self.cluster.set_state(slot, st);
        }
        if !waiting.is_empty() {
            waiting = self.redirect_claimed(&waiting, &live, &map).await;
        }
        if !give.is_empty() {
            for s in self.hand_over(&give, |s| Some(map[s as usize])).await {
                self.cluster.set_state(s, SlotState::Released(map[s as usize]));
                waiting.push(s);
            }
        }
        if !want.is_empty() {
            self.claim(&want).await;
        }
        if self.backing.take_strays() {
            let cluster = self.cluster.clone();
            let n = self.store.evict(|p| cluster.state(keyslot(p)) != SlotState::Mine);
            if n > 0 {
                tracing::info!(pools = n, "dropped pools of slots this node does not serve");
            }
        }
        !waiting.is_empty()
    }

    /// Of `slots`, released by this node: those whose fence names the node
    /// `map` gives them to (in `live`) are redirected there; returns the
    /// others, still waiting. A fence that names another node (claimed on
    /// another view of the membership) waits too: a `-MOVED` to a node
    /// that does not hold the slot could come back here.
    async fn redirect_claimed(&mut self, slots: &[u16], live: &[Node], map: &[u16]) -> Vec<u16> {
        let holders = match self.fence_holders(slots).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the new owners of released slots");
                return slots.to_vec();
            }
        };
        let mut waiting = Vec::new();
        for (&s, (owner, addr)) in slots.iter().zip(holders) {
            let t = map[s as usize];
            let claimed = !owner.is_empty() && live.get(usize::from(t)).is_some_and(|n| n.addr() == addr);
            if !claimed {
                waiting.push(s);
            } else if let SlotState::Released(_) = self.cluster.state(s) {
                self.cluster.set_state(s, SlotState::Other(t));
            }
        }
        waiting
    }

    /// Gives `slots` up, each to `target(slot)` (None: not known): redirect
    /// its clients, wait for the commands already running, forget its pools,
    /// flush, release its fence. Returns the slots released, still
    /// migrating: the caller marks them released (or nobody's), which
    /// recovery from a data loss does not claim back. A slot whose fence
    /// could not be released stays migrating, and the next round tries
    /// again.
    async fn hand_over(&mut self, slots: &[u16], target: impl Fn(u16) -> Option<u16>) -> Vec<u16> {
        tracing::info!(slots = slots.len(), "handing slots over");
        for &s in slots {
            self.cluster.set_state(s, SlotState::Migrating(target(s).unwrap_or(NO_NODE)));
        }
        self.cluster.note_moves();
        // Every command admitted before has queued its changes after this;
        // none is admitted after (they are redirected), and with the pools
        // gone no expiry changes them either: the flush covers everything.
        wait_for_running(&self.cluster).await;
        let leaving: HashSet<u16> = slots.iter().copied().collect();
        self.store.evict(|p| leaving.contains(&keyslot(p)));
        if !self.backing.flush(self.backing.persist_timeout).await {
            tracing::error!(backlog = self.backing.backlog(), "cannot flush before handing slots over; retrying later");
            return Vec::new();
        }
        let script = redis::Script::new(RELEASE);
        let owner = self.owner();
        let released = self
            .con
            .each(self.con.groups(slots), |mut c, group| {
                let mut inv = script.prepare_invoke();
                for &s in &group {
                    inv.key(self.keys.fence(s));
                }
                inv.arg(&owner);
                async move { (inv.invoke_async::<i64>(&mut c).await, group) }
            })
            .await;
        let mut done = Vec::new();
        for (r, group) in released {
            match r {
                Ok(_) => done.extend(group),
                Err(e) => tracing::warn!(error = %e, "cannot release slots on the backing Redis; retrying later"),
            }
        }
        done
    }

    /// The owner each of `slots`' fences names (empty: none).
    async fn fence_owners(&self, slots: &[u16]) -> redis::RedisResult<Vec<String>> {
        Ok(self.fence_holders(slots).await?.into_iter().map(|(owner, _)| owner).collect())
    }

    /// The owner and the address each of `slots`' fences names (empty:
    /// none).
    async fn fence_holders(&self, slots: &[u16]) -> redis::RedisResult<Vec<(String, String)>> {
        let reads = slots
            .iter()
            .map(|&s| redis::cmd("HMGET").arg(self.keys.fence(s)).arg("owner").arg("addr").clone())
            .collect();
        let holders: Vec<(Option<String>, Option<String>)> = self.con.query_each(reads).await?;
        Ok(holders.into_iter().map(|(o, a)| (o.unwrap_or_default(), a.unwrap_or_default())).collect())
    }

    /// Claims and loads `slots` (this node's share); the claim script
    /// decides which can be taken now.
    async fn claim(&mut self, slots: &[u16]) {
        let owners = match self.fence_owners(slots).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the slots' owners from the backing Redis");
                return;
            }
        };
        let todo: Vec<(u16, String)> = slots.iter().copied().zip(owners).collect();
        let started = Instant::now();
        let generation = self.cluster.generation();
        let owner = self.owner();
        let mut got = Vec::new();
        match claim_fences(&mut self.con, &self.keys, &owner, &self.cluster.me().addr(), &todo).await {
            Ok(epochs) => {
                for (s, e) in epochs {
                    if e > 0 {
                        self.cluster.note_epoch(e as u64, true);
                        got.push(s);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim slots on the backing Redis"),
        }
        if got.is_empty() {
            return;
        }
        self.cluster.note_moves();
        let claimed: HashSet<u16> = got.iter().copied().collect();
        // What memory still holds of these slots (a write that was fenced)
        // is older than what is loaded now.
        self.store.evict(|p| claimed.contains(&keyslot(p)));
        let items = match load_slots(&mut self.con, &self.keys, self.delta, &got).await {
            Ok(items) => items,
            Err(e) => {
                // Claimed but not loaded: serving them empty would lose
                // what they hold. Release; the next round tries again.
                tracing::error!(error = %e, "cannot load claimed slots; releasing them");
                for s in self.hand_over(&got, |_| None).await {
                    self.cluster.set_state(s, SlotState::Unowned);
                }
                return;
            }
        };
        let tokens = items.len();
        let store = self.store.clone();
        let repack = tokio::task::spawn_blocking(move || store.restore_live(items)).await.unwrap_or_default();
        for &s in &got {
            self.cluster.set_state(s, SlotState::Mine);
        }
        // Pools whose tokens are not all in slots in the backing Redis (an
        // earlier layout's): restated in the current layout.
        self.backing.move_pools(&self.store, repack);
        if self.cluster.generation() != generation {
            // The heartbeat lapsed meanwhile (before or after the states
            // were set): what was claimed may be another node's already.
            for &s in &got {
                self.cluster.set_state(s, SlotState::Unowned);
            }
            self.store.evict(|p| claimed.contains(&keyslot(p)));
            return;
        }
        tracing::info!(
            slots = got.len(),
            tokens,
            ms = started.elapsed().as_millis() as u64,
            "claimed and loaded slots"
        );
    }

    /// Graceful stop: hands every slot over and leaves the membership, so
    /// that the others take the slots over at once (not after the node
    /// timeout).
    pub async fn leave(&mut self) {
        if std::mem::replace(&mut self.leaving, true) {
            return;
        }
        let held_now: Vec<u16> = (0..SLOTS).filter(|&s| held(self.cluster.state(s))).collect();
        // Released earlier and not claimed yet: waited for as well.
        let mut mine: Vec<u16> =
            (0..SLOTS).filter(|&s| matches!(self.cluster.state(s), SlotState::Released(_))).collect();
        let others: Vec<Node> = self.cluster.nodes().iter().filter(|n| n.id != self.cluster.me().id).cloned().collect();
        let map = targets(&others);
        // The other nodes' slots stay theirs (till they learn of this).
        self.cluster.replace_nodes(others.clone());
        let target = |s: u16| (!others.is_empty()).then(|| map[s as usize]);
        // The slots released answer `-TRYAGAIN` until this node exits (see
        // `await_new_owners`).
        for s in self.hand_over(&held_now, target).await {
            self.cluster.set_state(s, SlotState::Released(target(s).unwrap_or(NO_NODE)));
        }
        mine.extend(held_now);
        // A renewal still on its way after this finds the node's fence
        // marked as left (see `remove_entry`): the entry is not made again.
        // Lapsed meanwhile, and the heartbeat has not dropped what the
        // old incarnation queued yet (it stops now): dropped here, or the
        // writer, open once the node has left, would publish its events.
        if !self.cluster.serving() {
            self.backing.discard_queued();
        }
        self.cluster.mark_left();
        let id = self.cluster.me().id.clone();
        if let Err(e) = remove_entry(&mut self.con, &self.keys, &id).await {
            tracing::warn!(error = %e, "cannot leave the cluster membership; the others wait for the node timeout");
        } else if !others.is_empty() {
            self.await_new_owners(&mine).await;
        }
        tracing::info!(slots = mine.len(), "left the cluster");
    }

    /// After leaving: waits, at most the node timeout, until every slot in
    /// `slots` has a new owner, and then one heartbeat interval more, so
    /// that the other nodes know this one left before it stops answering.
    /// Till then a node that does not know yet sends the slot's clients
    /// here, and they get `-TRYAGAIN` (clients wait before retrying it); a
    /// closed port would send them back at once, and a client retries a
    /// refused connection and a `-MOVED` without waiting, so a few rounds
    /// of that use up its retries.
    async fn await_new_owners(&mut self, slots: &[u16]) {
        let until = Instant::now() + self.timeout;
        let mut open = slots.to_vec();
        while !open.is_empty() && Instant::now() < until {
            tokio::time::sleep(self.interval()).await;
            match self.fence_owners(&open).await {
                Ok(owners) => {
                    open = open.into_iter().zip(owners).filter(|(_, o)| o.is_empty()).map(|(s, _)| s).collect();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the slots' new owners; stopping now");
                    return;
                }
            }
        }
        if !open.is_empty() {
            tracing::warn!(slots = open.len(), "stopping with slots no other node claimed yet");
        }
        tokio::time::sleep(self.interval()).await;
    }
}

/// Runs the heartbeat and the membership rounds until `stop`; the
/// caller's handle ([`MembershipHandle::leave`]) hands the slots over at a
/// graceful stop.
pub fn spawn(m: Membership, stop: CancellationToken) -> MembershipHandle {
    let every = m.interval();
    let hb = Heartbeat {
        cluster: m.cluster.clone(),
        con: m.con.clone(),
        keys: m.keys.clone(),
        backing: m.backing.clone(),
        store: m.store.clone(),
        base: m.base.clone(),
        timeout: m.timeout,
        live: m.live_tx.clone(),
        first: true,
        lost_until: None,
    };
    tokio::spawn(hb.run(every, stop.clone()));
    let mut live = m.live.clone();
    let m = Arc::new(tokio::sync::Mutex::new(m));
    let task = m.clone();
    tokio::spawn(async move {
        loop {
            // Released slots answer `-TRYAGAIN` until this round sees them
            // claimed: looked at more often than the heartbeat.
            let waiting = task.lock().await.tick().await;
            let pause = if waiting { every / 5 } else { every };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = live.changed() => {}
                _ = stop.cancelled() => return,
            }
        }
    });
    MembershipHandle(m)
}

/// A handle on the membership task.
#[derive(Clone)]
pub struct MembershipHandle(Arc<tokio::sync::Mutex<Membership>>);

impl MembershipHandle {
    pub async fn leave(&self) {
        self.0.lock().await.leave().await;
    }
}

/// The heartbeat task: renews this node's entry every interval, whatever
/// the membership task is busy with (a claim can take longer than the
/// node timeout), and drops everything when it finds the entry lapsed.
struct Heartbeat {
    cluster: Arc<Cluster>,
    con: Con,
    keys: Keys,
    backing: Arc<Backing>,
    store: Store,
    base: String,
    timeout: Duration,
    live: Arc<watch::Sender<Option<Vec<Node>>>>,
    /// No renewal went through since start (or since a lapse).
    first: bool,
    /// The backing Redis lost its data: until then, the membership it
    /// shows is being rebuilt (each node joins again at its next renewal),
    /// and no slot changes hands.
    lost_until: Option<Instant>,
}

impl Heartbeat {
    async fn run(mut self, every: Duration, stop: CancellationToken) {
        loop {
            if self.cluster.has_left() {
                return;
            }
            if !self.first && !self.cluster.serving() {
                self.lapse().await;
            }
            let sent = Instant::now();
            // A hung backing Redis must not hold the next renewal up.
            match tokio::time::timeout(self.timeout / 3, self.beat()).await {
                _ if self.cluster.has_left() => return,
                Ok(Ok(None)) => {
                    tracing::error!("the backing Redis found this node's heartbeat lapsed");
                    self.cluster.stop_serving();
                    self.lapse().await;
                }
                Ok(Ok(Some(live))) => {
                    self.cluster.renewed(sent, self.timeout - self.timeout / 3);
                    self.backing.recheck_link();
                    self.first = false;
                    // The membership task sets the node list along with the
                    // slots' states (see `Membership::tick`).
                    if self.live.borrow().as_ref().is_some_and(|l| *l != live) {
                        tracing::info!(nodes = live.len(), "cluster membership changed");
                    }
                    let rebuilding = self.lost_until.is_some_and(|t| Instant::now() < t);
                    self.live.send_replace(if rebuilding { None } else { Some(live) });
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the cluster heartbeat on the backing Redis"),
                Err(_) => tracing::warn!("the backing Redis did not answer the cluster heartbeat in time"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One renewal: the live nodes, or None if this node's entry had
    /// lapsed.
    async fn beat(&mut self) -> Result<Option<Vec<Node>>, redis::RedisError> {
        let me = self.cluster.me().clone();
        let reply: Vec<String> = redis::Script::new(HEARTBEAT)
            .key(self.keys.members())
            .key(self.keys.addrs())
            .key(self.keys.owners())
            .key(self.keys.node_fence(&me.id))
            .arg(&me.id)
            .arg(me.addr())
            .arg(self.timeout.as_millis() as u64)
            .arg(if self.first { "1" } else { "0" })
            .arg(incarnation(&self.base, self.cluster.generation()))
            .invoke_async(&mut self.con)
            .await?;
        let Some((status, reply)) = reply.split_first() else { return Ok(None) };
        match status.as_str() {
            "OK" => {}
            "LOST" => {
                if self.lost_until.is_none_or(|t| Instant::now() >= t) {
                    // A fenced write finds out and writes this node's state
                    // back (the writer would only notice at its next write).
                    tracing::error!("the backing Redis lost its data; writing this node's state back");
                    self.backing.probe();
                }
                self.lost_until = Some(Instant::now() + self.timeout);
            }
            _ => return Ok(None),
        }
        let mut nodes: Vec<Node> = reply
            .chunks(2)
            .filter_map(|p| {
                let [id, addr] = p else { return None };
                let (host, port) = addr.rsplit_once(':')?;
                Some(Node { id: id.clone(), host: host.to_string(), port: port.parse().ok()? })
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Some(nodes))
    }

    /// This node's heartbeat lapsed: whatever it held may be someone
    /// else's now. Forget it all, and what is queued for it, and rejoin as
    /// a new incarnation.
    async fn lapse(&mut self) {
        if (0..SLOTS).any(|s| held(self.cluster.state(s))) {
            tracing::error!("this node's cluster heartbeat lapsed: dropping every slot; it rejoins as a new member");
        }
        for slot in 0..SLOTS {
            if self.cluster.state(slot).is_here() {
                self.cluster.set_state(slot, SlotState::Unowned);
            }
        }
        self.cluster.note_moves();
        // Nothing of the old incarnation is queued after the mark: no
        // command is admitted now, those admitted before have finished,
        // and with the pools gone no expiry changes them. The new
        // incarnation is named only then: the writer reads it before the
        // mark, so a batch that carries it holds nothing from before.
        // (A batch built under the old one can still pass only the old
        // fences: nobody else has held those slots since.)
        wait_for_running(&self.cluster).await;
        self.store.evict(|_| true);
        self.backing.discard_queued();
        self.cluster.bump_generation();
        self.live.send_replace(None);
        self.first = true;
    }
}

/// Waits, off the runtime's threads, until every command that entered the
/// cluster gate before has finished ([`Cluster::barrier`]).
async fn wait_for_running(cluster: &Arc<Cluster>) {
    let cluster = cluster.clone();
    let _ = tokio::task::spawn_blocking(move || cluster.barrier()).await;
}

/// The channel message that carries one event to the other nodes:
/// `<node id> <channel length>\n<channel><message>`.
pub(super) fn encode_event(node_id: &str, channel: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = format!("{node_id} {}\n", channel.len()).into_bytes();
    out.extend_from_slice(channel);
    out.extend_from_slice(message);
    out
}

/// Reads [`encode_event`]'s message: (node id, channel, message).
fn decode_event(m: &[u8]) -> Option<(&[u8], Bytes, Bytes)> {
    let nl = m.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&m[..nl]).ok()?;
    let (id, len) = head.split_once(' ')?;
    let len: usize = len.parse().ok()?;
    let rest = &m[nl + 1..];
    if rest.len() < len {
        return None;
    }
    Some((&m[..id.len()], Bytes::copy_from_slice(&rest[..len]), Bytes::copy_from_slice(&rest[len..])))
}

/// Delivers the other nodes' events to this node's subscribers (each
/// event once: a node's own events reach its subscribers directly).
pub fn spawn_events(client: redis::Client, keys: Keys, me: String, pubsub: Arc<PubSub>, stop: CancellationToken) {
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let channel = keys.events();
        let mut backoff = super::Backoff::new();
        loop {
            let session = async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                let mut stream = ps.on_message();
                while let Some(msg) = stream.next().await {
                    if let Some((id, ch, payload)) = decode_event(msg.get_payload_bytes())
                        && id != me.as_bytes()
                    {
                        pubsub.publish(&ch, &payload);
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                r = session => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "the cluster event subscription failed; reconnecting");
                    }
                }
                _ = stop.cancelled() => return,
            }
            backoff.wait().await;
        }
    });
}

/// Claims fences by compare-and-set: each `(slot, owner expected)`
/// (empty: none); returns each slot's new epoch, or -1 where it was not
/// taken. A fence is taken if it still names the owner expected and that
/// owner is nobody, an earlier incarnation of the claimer, or an
/// incarnation that is not live by the backing Redis's clock (the
/// claimer's own view of the membership may be older than the holder).
///
/// Liveness is asked first ([`DEAD`], on the membership's slot), then each
/// fence is compared-and-set ([`CLAIM`], on its own slot), so that this
/// works on a Redis Cluster too. Asked apart, the answer still holds when
/// the fence is set: an incarnation found not live never is again (a node
/// whose entry lapsed takes a new one before it renews), and a fence that
/// vanished meanwhile no longer names the owner expected.
pub(super) async fn claim_fences(
    con: &mut Con,
    keys: &Keys,
    owner: &str,
    addr: &str,
    todo: &[(u16, String)],
) -> Result<Vec<(u16, i64)>, redis::RedisError> {
    let mynode = owner.split(':').next().unwrap_or_default();
    let node_of = |o: &str| o.split(':').next().unwrap_or_default().to_string();
    let mut asked: Vec<String> = todo
        .iter()
        .map(|(_, cur)| cur.clone())
        .filter(|cur| !cur.is_empty() && cur != owner && node_of(cur) != mynode)
        .collect();
    asked.sort();
    asked.dedup();
    let mut dead: HashSet<String> = HashSet::new();
    // A tokend without cluster mode (the prefix's earlier user) is not a
    // member: it is dead once it no longer holds the prefix's lease (a
    // cluster node joins only after that, see `owner::wait_unheld`).
    let (standalone, asked): (Vec<String>, Vec<String>) =
        asked.into_iter().partition(|o| super::owner::is_standalone_owner(o));
    if !standalone.is_empty() {
        let lease: Option<String> = redis::cmd("GET").arg(keys.lease()).query_async(con).await?;
        let holder = lease.as_deref().and_then(|l| l.split(' ').next()).unwrap_or_default();
        dead.extend(standalone.into_iter().filter(|o| node_of(o) != holder));
    }
    if !asked.is_empty() {
        let script = redis::Script::new(DEAD);
        let mut inv = script.prepare_invoke();
        inv.key(keys.members()).key(keys.owners());
        for cur in &asked {
            inv.key(keys.node_fence(&node_of(cur)));
        }
        for cur in &asked {
            inv.arg(cur);
        }
        let flags: Vec<i64> = inv.invoke_async(con).await?;
        dead.extend(asked.into_iter().zip(flags).filter(|(_, f)| *f == 1).map(|(c, _)| c));
    }
    let mut out: Vec<(u16, i64)> = Vec::with_capacity(todo.len());
    let mut take: Vec<u16> = Vec::new();
    let mut expected: std::collections::HashMap<u16, &str> = std::collections::HashMap::new();
    for (s, cur) in todo {
        if cur.is_empty() || cur == owner || node_of(cur) == mynode || dead.contains(cur) {
            take.push(*s);
            expected.insert(*s, cur);
        } else {
            out.push((*s, -1));
        }
    }
    let script = redis::Script::new(CLAIM);
    let replies = con
        .each(con.groups(&take), |mut c, group| {
            let mut inv = script.prepare_invoke();
            for &s in &group {
                inv.key(keys.fence(s));
            }
            inv.arg(owner).arg(addr);
            for s in &group {
                inv.arg(expected.get(s).copied().unwrap_or_default());
            }
            async move { (inv.invoke_async::<Vec<i64>>(&mut c).await, group) }
        })
        .await;
    for (r, group) in replies {
        out.extend(group.into_iter().zip(r?));
    }
    Ok(out)
}

/// Says this node is starting to join, for a node timeout: a tokend
/// without cluster mode that takes the prefix's lease after this sees it
/// (see `attach`). Not a membership entry: no slot goes to a node that
/// fails to start after this.
pub(super) async fn join(
    con: &mut Con,
    keys: &Keys,
    id: &str,
    addr: &str,
    timeout: Duration,
) -> Result<(), redis::RedisError> {
    redis::Script::new(
        r#"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
        "#,
    )
    .key(keys.joining())
    .arg(joining_entry(id, addr))
    .arg(timeout.as_millis() as u64)
    .invoke_async(con)
    .await
}

/// Withdraws [`join`]'s entry (the start failed).
pub(super) async fn unjoin(con: &mut Con, keys: &Keys, id: &str, addr: &str) {
    let _: Result<(), _> = redis::cmd("ZREM").arg(keys.joining()).arg(joining_entry(id, addr)).query_async(con).await;
}

/// A node's entry in [`Keys::joining`].
fn joining_entry(id: &str, addr: &str) -> String {
    format!("{id} {addr}")
}

/// Takes the node's entry out of the membership at a graceful stop, and
/// marks its own fence so that no renewal still on its way (one sent
/// before, or sent again by the client) makes the entry again.
async fn remove_entry(con: &mut Con, keys: &Keys, id: &str) -> Result<(), redis::RedisError> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("HSET").arg(keys.node_fence(id)).arg("left").arg(1).ignore();
    pipe.cmd("ZREM").arg(keys.members()).arg(id).ignore();
    pipe.cmd("HDEL").arg(keys.addrs()).arg(id).ignore();
    pipe.cmd("HDEL").arg(keys.owners()).arg(id).ignore();
    pipe.query_async(con).await
}

/// Creates this node's own fence (for its batches of events alone).
pub(super) async fn init_node_fence(con: &mut Con, keys: &Keys, node_id: &str, owner: &str) {
    let _: Result<(), _> = redis::cmd("HSET")
        .arg(keys.node_fence(node_id))
        .arg("owner")
        .arg(owner)
        .arg("epoch")
        .arg(1)
        .arg("seq")
        .arg(0)
        .query_async(con)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let m = encode_event("abc", b"__keyevent@0__:expired", b"pool:with\nnewline");
        let (id, ch, payload) = decode_event(&m).unwrap();
        assert_eq!(id, b"abc");
        assert_eq!(&ch[..], b"__keyevent@0__:expired");
        assert_eq!(&payload[..], b"pool:with\nnewline");
        assert!(decode_event(b"abc 99\nshort").is_none());
    }
}

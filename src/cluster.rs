//! Cluster mode's routing view: which node serves each hash slot, as this
//! node knows it. The command core reads it for every command that names a
//! pool (`-MOVED`, `-TRYAGAIN`, `-CLUSTERDOWN`) and for `CLUSTER …`; the
//! membership task in [`crate::persist`] (heartbeats, claims, handovers in
//! the backing Redis) is the only writer.
//!
//! A slot's state is one atomic word, so the check a command makes is a
//! CRC16 and one load. The node list behind `MOVED`'s address changes only
//! when membership does.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Redis Cluster's number of hash slots.
pub const SLOTS: u16 = 16384;

/// The hash slot of a key, by Redis Cluster's rules: CRC16 (XMODEM) of the
/// key's first non-empty `{…}` tag, or of the whole key, mod 16384.
pub fn keyslot(key: &[u8]) -> u16 {
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % SLOTS
}

/// Slots by owner, as `(first, last, node)`, in slot order.
pub type Ranges = Arc<Vec<(u16, u16, Node)>>;

/// A node of the cluster, as clients reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// 40 hex digits, as Redis Cluster node ids are.
    pub id: String,
    pub host: String,
    pub port: u16,
}

impl Node {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What a slot is to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Nobody serves it (its owner died and nobody claimed it yet).
    Unowned,
    /// This node serves it.
    Mine,
    /// This node is claiming it and loading its pools (`-TRYAGAIN`).
    Importing,
    /// This node is handing it to another (its index in
    /// [`Cluster::nodes`], or [`NO_NODE`]): commands get `-TRYAGAIN` (the
    /// other node may not know yet that it will have it: a `-MOVED` there
    /// could come straight back, and a client following redirects without
    /// a pause gives up after a few), this node's writes of it are still
    /// flushed.
    Migrating(u16),
    /// This node released it to another (its index in [`Cluster::nodes`])
    /// that has not claimed it yet: commands still get `-TRYAGAIN`, for the
    /// same reason; nothing of it is this node's any more.
    Released(u16),
    /// Another node (its index in [`Cluster::nodes`]) serves it.
    Other(u16),
}

/// A [`SlotState::Migrating`] whose new owner is not known.
pub const NO_NODE: u16 = u16::MAX;

const UNOWNED: u32 = 0;
const MINE: u32 = 1;
const IMPORTING: u32 = 2;
const OTHER: u32 = 1 << 16;
const MIGRATING: u32 = 1 << 17;
const RELEASED: u32 = 1 << 18;

impl SlotState {
    /// Answered by this node (served, or `-TRYAGAIN` while it moves), not
    /// redirected: what `CLUSTER SLOTS` shows as this node's.
    pub fn is_here(self) -> bool {
        !matches!(self, SlotState::Other(_) | SlotState::Unowned)
    }

    fn pack(self) -> u32 {
        match self {
            SlotState::Unowned => UNOWNED,
            SlotState::Mine => MINE,
            SlotState::Importing => IMPORTING,
            SlotState::Migrating(i) => MIGRATING | u32::from(i),
            SlotState::Released(i) => RELEASED | u32::from(i),
            SlotState::Other(i) => OTHER | u32::from(i),
        }
    }

    fn unpack(v: u32) -> SlotState {
        match v {
            MINE => SlotState::Mine,
            IMPORTING => SlotState::Importing,
            v if v & MIGRATING != 0 => SlotState::Migrating((v & 0xffff) as u16),
            v if v & RELEASED != 0 => SlotState::Released((v & 0xffff) as u16),
            v if v & OTHER != 0 => SlotState::Other((v & 0xffff) as u16),
            _ => SlotState::Unowned,
        }
    }
}

/// Where a command on a slot goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Here,
    /// `-MOVED <slot> <host:port>`.
    Moved(u16, String),
    /// `-TRYAGAIN`: the slot is being handed over.
    TryAgain,
    /// `-CLUSTERDOWN`: nobody serves it, or this node cannot renew its lease.
    Down(&'static str),
}

impl Route {
    /// The error reply, for anything but [`Route::Here`].
    pub fn error(&self) -> Option<String> {
        match self {
            Route::Here => None,
            Route::Moved(slot, addr) => Some(format!("MOVED {slot} {addr}")),
            Route::TryAgain => {
                Some("TRYAGAIN the hash slot is being handed over between nodes; retry shortly".to_string())
            }
            Route::Down(why) => Some(format!("CLUSTERDOWN {why}")),
        }
    }
}

/// This node's view of the cluster.
pub struct Cluster {
    me: Node,
    started: Instant,
    /// This node may serve its slots until this (ms since `started`): its
    /// heartbeat was last renewed by a request sent then, plus the node
    /// timeout, less a margin.
    serving_until: AtomicU64,
    slots: Box<[AtomicU32]>,
    /// Every live node, this one included, in the order slots are spread
    /// over them.
    nodes: RwLock<Arc<Vec<Node>>>,
    /// The highest epoch this node claimed a slot with.
    my_epoch: AtomicU64,
    /// The highest epoch seen on any slot.
    current_epoch: AtomicU64,
    /// Held (shared) by every command from its routing check to the end of
    /// its run; a handover takes it exclusively once, after marking its
    /// slots, so that every command admitted before has queued its changes
    /// when the flush starts.
    gate: RwLock<()>,
    /// Bumped when this node's heartbeat lapses and it drops every slot.
    generation: AtomicU64,
    /// Out of the membership after a graceful stop, every slot handed over.
    left: AtomicBool,
    /// Bumped whenever slots come or go (the writer then forgets which
    /// pools it listed in the backing Redis).
    moves: AtomicU64,
    /// Bumped after every change of a slot's state or of the node list:
    /// after, so that whoever reads a value also sees the change.
    layout: AtomicU64,
    /// [`Cluster::ranges`]' last answer and the `layout` read before it
    /// was worked out.
    ranges_cache: Mutex<Option<(u64, Ranges)>>,
}

impl Cluster {
    pub fn new(me: Node) -> Cluster {
        let slots = (0..SLOTS).map(|_| AtomicU32::new(UNOWNED)).collect();
        Cluster {
            nodes: RwLock::new(Arc::new(vec![me.clone()])),
            me,
            started: Instant::now(),
            serving_until: AtomicU64::new(0),
            left: AtomicBool::new(false),
            slots,
            my_epoch: AtomicU64::new(0),
            current_epoch: AtomicU64::new(0),
            gate: RwLock::new(()),
            generation: AtomicU64::new(0),
            moves: AtomicU64::new(0),
            layout: AtomicU64::new(0),
            ranges_cache: Mutex::new(None),
        }
    }

    pub fn me(&self) -> &Node {
        &self.me
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// This node dropped every slot (its heartbeat lapsed).
    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Slots came or went.
    pub fn note_moves(&self) {
        self.moves.fetch_add(1, Ordering::AcqRel);
    }

    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Acquire)
    }

    /// Enters the gate: held while a command is checked and run.
    pub fn enter(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every command that entered the gate before has finished.
    pub fn barrier(&self) {
        drop(self.gate.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// The heartbeat sent at `sent` was stored: serve until `sent + valid`.
    pub fn renewed(&self, sent: Instant, valid: std::time::Duration) {
        let until = sent.saturating_duration_since(self.started) + valid;
        self.serving_until.fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// Stops serving at once (the lease lapsed, or the node is leaving).
    pub fn stop_serving(&self) {
        self.serving_until.store(0, Ordering::Release);
    }

    /// A graceful stop handed every slot over and takes the node out of
    /// the membership: its heartbeat stops, and nothing it still writes
    /// (published messages, no pool of a slot) needs its lease.
    pub fn mark_left(&self) {
        self.left.store(true, Ordering::Release);
    }

    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::Acquire)
    }

    /// True while what this node queued may go to the backing Redis: it
    /// serves, or it left after handing every slot over (it holds no pool
    /// then, so nothing it writes can repeat another owner's).
    pub fn may_write(&self) -> bool {
        self.serving() || self.has_left()
    }

    /// True while this node's heartbeat is fresh enough to serve.
    pub fn serving(&self) -> bool {
        self.now_ms() < self.serving_until.load(Ordering::Acquire)
    }

    pub fn state(&self, slot: u16) -> SlotState {
        SlotState::unpack(self.slots[slot as usize].load(Ordering::Acquire))
    }

    pub fn set_state(&self, slot: u16, s: SlotState) {
        self.slots[slot as usize].store(s.pack(), Ordering::Release);
        self.layout.fetch_add(1, Ordering::Release);
    }

    /// The live nodes.
    pub fn nodes(&self) -> Arc<Vec<Node>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the node list; the caller sets every slot state that names
    /// a node (by index) along with it.
    pub fn set_nodes(&self, nodes: Vec<Node>) {
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(nodes);
        self.layout.fetch_add(1, Ordering::Release);
    }

    /// Replaces the node list and renames every slot state's node to its
    /// index in the new list (a node not in it: nobody).
    pub fn replace_nodes(&self, nodes: Vec<Node>) {
        let old = self.nodes();
        let index =
            |i: u16| old.get(usize::from(i)).and_then(|n| nodes.iter().position(|m| m.id == n.id)).map(|j| j as u16);
        let states: Vec<SlotState> = (0..SLOTS)
            .map(|slot| match self.state(slot) {
                SlotState::Other(i) => index(i).map_or(SlotState::Unowned, SlotState::Other),
                SlotState::Migrating(i) => SlotState::Migrating(index(i).unwrap_or(NO_NODE)),
                SlotState::Released(i) => SlotState::Released(index(i).unwrap_or(NO_NODE)),
                st => st,
            })
            .collect();
        self.set_nodes(nodes);
        for (slot, st) in (0..SLOTS).zip(states) {
            self.set_state(slot, st);
        }
    }

    pub fn note_epoch(&self, epoch: u64, mine: bool) {
        self.current_epoch.fetch_max(epoch, Ordering::AcqRel);
        if mine {
            self.my_epoch.fetch_max(epoch, Ordering::AcqRel);
        }
    }

    pub fn epochs(&self) -> (u64, u64) {
        (self.current_epoch.load(Ordering::Acquire), self.my_epoch.load(Ordering::Acquire))
    }

    /// Where a command on `slot` goes.
    pub fn route(&self, slot: u16) -> Route {
        let state = self.state(slot);
        // Only a slot served here is refused for that: one being loaded or
        // handed over answers TRYAGAIN either way (a node that left stops
        // renewing, and answers so till it exits).
        if state == SlotState::Mine && !self.serving() {
            return Route::Down("this node cannot renew its lease on the backing Redis");
        }
        match state {
            SlotState::Mine => Route::Here,
            SlotState::Importing | SlotState::Migrating(_) | SlotState::Released(_) => Route::TryAgain,
            SlotState::Other(i) => match self.nodes().get(i as usize) {
                // A node on this very address is an earlier process here
                // (killed, its entry not lapsed yet): no redirect to itself.
                Some(n) if n.addr() == self.me.addr() => Route::TryAgain,
                Some(n) => Route::Moved(slot, n.addr()),
                None => Route::Down("Hash slot not served"),
            },
            SlotState::Unowned => Route::Down("Hash slot not served"),
        }
    }

    /// Where a blocked client of a slot that left this node is sent: the
    /// node it is being handed to (`-MOVED`, as Redis answers a blocked
    /// client whose slot moved), else as [`Cluster::route`].
    pub fn redirect(&self, slot: u16) -> Route {
        if let SlotState::Migrating(i) | SlotState::Released(i) = self.state(slot)
            && let Some(n) = self.nodes().get(i as usize)
            && n.addr() != self.me.addr()
        {
            return Route::Moved(slot, n.addr());
        }
        self.route(slot)
    }

    /// The node each slot is routed to (this one for its own, importing
    /// and migrating slots), as `(first, last, node)` ranges: what
    /// `CLUSTER SLOTS`, `SHARDS` and `NODES` show.
    pub fn ranges(&self) -> Ranges {
        // Worked out again only after a change: clients ask for it after
        // every -MOVED (ioredis, for every command it sends to the wrong
        // node), and the walk over 16384 slots is most of its cost.
        let layout = self.layout.load(Ordering::Acquire);
        let mut cache = self.ranges_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, ranges)) = &*cache
            && *at == layout
        {
            return ranges.clone();
        }
        let ranges = Arc::new(self.walk_ranges());
        *cache = Some((layout, ranges.clone()));
        ranges
    }

    fn walk_ranges(&self) -> Vec<(u16, u16, Node)> {
        let nodes = self.nodes();
        // Runs of one owner, by index into `nodes` (`ME` for this node), so
        // a node is cloned once a range, not once a slot: CLUSTER SLOTS,
        // which clients ask after every -MOVED, walks all 16384.
        const ME: usize = usize::MAX;
        let mine = nodes.iter().position(|n| n.id == self.me.id);
        let owner = |slot: u16| -> Option<usize> {
            // A slot being handed over is answered here (`-TRYAGAIN`) until
            // its new owner claimed it.
            match self.state(slot) {
                SlotState::Other(i) if Some(usize::from(i)) == mine => Some(ME),
                SlotState::Other(i) => (usize::from(i) < nodes.len()).then_some(usize::from(i)),
                st => st.is_here().then_some(ME),
            }
        };
        let mut runs: Vec<(u16, u16, usize)> = Vec::new();
        for slot in 0..SLOTS {
            let Some(o) = owner(slot) else { continue };
            match runs.last_mut() {
                Some((_, last, who)) if *last + 1 == slot && *who == o => *last = slot,
                _ => runs.push((slot, slot, o)),
            }
        }
        runs.into_iter()
            .map(|(first, last, o)| (first, last, if o == ME { self.me.clone() } else { nodes[o].clone() }))
            .collect()
    }

    /// Slots this node is importing or handing over.
    pub fn moving(&self) -> usize {
        (0..SLOTS).map(|s| self.state(s)).filter(|&st| st.is_here() && st != SlotState::Mine).count()
    }

    /// Slots by state: (served here, assigned anywhere).
    pub fn counts(&self) -> (usize, usize) {
        let mut mine = 0;
        let mut assigned = 0;
        for slot in 0..SLOTS {
            match self.state(slot) {
                SlotState::Unowned => {}
                SlotState::Mine => {
                    mine += 1;
                    assigned += 1;
                }
                _ => assigned += 1,
            }
        }
        (mine, assigned)
    }
}

/// Slots are spread in blocks of this many: a node's slots are then a few
/// hundred ranges at most (what `CLUSTER SLOTS` lists), not thousands.
const BLOCK: usize = 64;

/// The node (an index into `nodes`) each slot belongs to, the same on
/// every node for the same list. Blocks of [`BLOCK`] slots go by
/// rendezvous hashing with bounded load: each block, in a fixed
/// pseudo-random order, to the node that ranks it highest among those not
/// yet at `ceil(blocks / nodes)`. So the spread is even to a few blocks
/// (within 3 blocks of a fair share: 192 slots), and a node joining or
/// leaving moves mostly the blocks it gains or loses (in the unit test, a
/// joining node's share plus at most a quarter of it between the others;
/// a failover reloads mostly the dead node's pools).
pub fn targets(nodes: &[Node]) -> Vec<u16> {
    let blocks = SLOTS as usize / BLOCK;
    if nodes.is_empty() {
        return vec![0; SLOTS as usize];
    }
    let seeds: Vec<u64> = nodes.iter().map(|n| fnv1a(n.id.as_bytes())).collect();
    let cap = blocks.div_ceil(nodes.len());
    let mut order: Vec<usize> = (0..blocks).collect();
    order.sort_by_key(|&b| mix(b as u64 ^ 0xA5A5_5A5A_C3C3_3C3C));
    let mut load = vec![0usize; nodes.len()];
    let mut owner = vec![0u16; blocks];
    let mut ranked: Vec<(u64, usize)> = Vec::with_capacity(nodes.len());
    for b in order {
        ranked.clear();
        ranked.extend(
            seeds.iter().enumerate().map(|(i, &seed)| (mix(seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)), i)),
        );
        ranked.sort_unstable_by(|x, y| y.cmp(x));
        if let Some(&(_, i)) = ranked.iter().find(|(_, i)| load[*i] < cap) {
            load[i] += 1;
            owner[b] = i as u16;
        }
    }
    (0..SLOTS as usize).map(|slot| owner[slot / BLOCK]).collect()
}

/// FNV-1a, 64 bits: stable across builds and machines (the map must be
/// the same on every node).
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyslot_matches_redis() {
        // Values from CLUSTER KEYSLOT on redis-server 7.
        assert_eq!(keyslot(b"foo"), 12182);
        assert_eq!(keyslot(b"{user1000}.following"), keyslot(b"user1000"));
        assert_eq!(keyslot(b"foo{}{bar}"), keyslot(b"foo{}{bar}"));
        assert_eq!(keyslot(b"{}x"), keyslot(b"{}x"));
    }

    fn node(i: usize) -> Node {
        let id = format!("{:040x}", (i as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
        Node { id, host: "127.0.0.1".into(), port: 7000 + i as u16 }
    }

    /// A node that cannot renew its lease (or left, and stopped renewing)
    /// refuses the slots it serves, and still answers TRYAGAIN for those it
    /// hands over or loads, as while it renews.
    #[test]
    fn only_served_slots_are_down_when_the_lease_runs_out() {
        let cl = Cluster::new(node(0));
        cl.replace_nodes(vec![node(0), node(1)]);
        cl.set_state(1, SlotState::Mine);
        cl.set_state(2, SlotState::Released(1));
        cl.set_state(3, SlotState::Importing);
        assert!(!cl.serving());
        assert!(matches!(cl.route(1), Route::Down(_)));
        assert!(matches!(cl.route(2), Route::TryAgain));
        assert!(matches!(cl.route(3), Route::TryAgain));
        cl.renewed(Instant::now(), std::time::Duration::from_secs(1));
        assert!(matches!(cl.route(1), Route::Here));
        assert!(matches!(cl.route(2), Route::TryAgain));
    }

    #[test]
    fn spread_is_even_and_moves_little() {
        for n in 1..=6 {
            let nodes: Vec<Node> = (0..n).map(node).collect();
            let t = targets(&nodes);
            let mut counts = vec![0usize; n];
            for &i in &t {
                counts[i as usize] += 1;
            }
            let fair = SLOTS as usize / n;
            for &c in &counts {
                assert!(c.abs_diff(fair) <= 3 * BLOCK, "{n} nodes: {counts:?}");
            }
            // Few ranges: CLUSTER SLOTS stays small.
            let ranges = 1 + t.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(ranges <= SLOTS as usize / BLOCK, "{n}: {ranges} ranges");
            // A node joining: slots move mostly to it, about its share.
            let mut more = nodes.clone();
            more.push(node(n));
            let t2 = targets(&more);
            let share = SLOTS as usize / (n + 1);
            let to_new = t2.iter().filter(|&&b| b as usize == n).count();
            let between_old = t
                .iter()
                .zip(&t2)
                .filter(|(a, b)| **b as usize != n && nodes[**a as usize].id != more[**b as usize].id)
                .count();
            assert!(to_new.abs_diff(share) <= 2 * BLOCK, "{n}: {to_new} to the new node");
            assert!(between_old * 100 <= share * 25, "{n}: {between_old} slots moved between old nodes");
        }
    }

    #[test]
    fn routes() {
        let c = Cluster::new(Node { id: "a".into(), host: "127.0.0.1".into(), port: 7000 });
        c.set_nodes(vec![c.me().clone(), Node { id: "b".into(), host: "127.0.0.1".into(), port: 7001 }]);
        c.set_state(1, SlotState::Mine);
        c.set_state(2, SlotState::Other(1));
        c.set_state(3, SlotState::Importing);
        c.set_state(5, SlotState::Migrating(1));
        c.set_state(6, SlotState::Released(1));
        assert!(matches!(c.route(1), Route::Down(_)), "not serving before a heartbeat");
        c.renewed(Instant::now(), std::time::Duration::from_secs(10));
        assert_eq!(c.route(1), Route::Here);
        assert_eq!(c.route(2), Route::Moved(2, "127.0.0.1:7001".into()));
        assert_eq!(c.route(3), Route::TryAgain);
        assert!(matches!(c.route(4), Route::Down(_)));
        assert_eq!(c.route(5), Route::TryAgain, "being handed over: not a MOVED the other may send back");
        assert_eq!(c.redirect(5), Route::Moved(5, "127.0.0.1:7001".into()), "a blocked client is told where");
        assert_eq!(c.redirect(3), Route::TryAgain);
        assert_eq!(c.route(6), Route::TryAgain, "released, not claimed yet: not a MOVED either");
        assert_eq!(c.redirect(6), Route::Moved(6, "127.0.0.1:7001".into()));
        assert_eq!(c.moving(), 3);
        let ranges = |c: &Cluster| -> Vec<(u16, u16, String)> {
            c.ranges().iter().map(|(a, b, n)| (*a, *b, n.id.clone())).collect()
        };
        let owned = |v: &[(u16, u16, &str)]| -> Vec<(u16, u16, String)> {
            v.iter().map(|&(a, b, id)| (a, b, id.to_string())).collect()
        };
        // Slot 1 here, 2 there, 3 here, (4 nobody's), 5 and 6 still here.
        assert_eq!(ranges(&c), owned(&[(1, 1, "a"), (2, 2, "b"), (3, 3, "a"), (5, 6, "a")]));
        // A slot marked as another node's that is this one's own entry in
        // the list is shown as this node's, in the same range.
        c.set_state(7, SlotState::Other(0));
        assert_eq!(ranges(&c), owned(&[(1, 1, "a"), (2, 2, "b"), (3, 3, "a"), (5, 7, "a")]));
        c.set_state(7, SlotState::Unowned);
        // The answer is kept until a slot or the node list changes.
        assert!(Arc::ptr_eq(&c.ranges(), &c.ranges()));
        c.set_nodes(vec![c.me().clone(), Node { id: "b".into(), host: "127.0.0.1".into(), port: 7009 }]);
        assert_eq!(c.ranges()[1].2.port, 7009, "a node's new address is shown at once");
        c.set_nodes(vec![c.me().clone(), Node { id: "b".into(), host: "127.0.0.1".into(), port: 7001 }]);
        c.stop_serving();
        assert!(matches!(c.route(1), Route::Down(_)));
        assert_eq!(c.route(2), Route::Moved(2, "127.0.0.1:7001".into()), "redirects still");
    }

    #[test]
    fn replacing_the_node_list_keeps_each_slot_on_its_node() {
        let n = |id: &str, port: u16| Node { id: id.into(), host: "127.0.0.1".into(), port };
        let c = Cluster::new(n("b", 7001));
        c.set_nodes(vec![n("a", 7000), n("b", 7001), n("c", 7002)]);
        c.renewed(Instant::now(), std::time::Duration::from_secs(10));
        c.set_state(1, SlotState::Other(0));
        c.set_state(2, SlotState::Other(2));
        c.set_state(3, SlotState::Migrating(2));
        c.set_state(4, SlotState::Mine);
        c.set_state(5, SlotState::Other(1));
        // b leaves: c moves from index 2 to 1.
        c.replace_nodes(vec![n("a", 7000), n("c", 7002)]);
        assert_eq!(c.route(1), Route::Moved(1, "127.0.0.1:7000".into()));
        assert_eq!(c.route(2), Route::Moved(2, "127.0.0.1:7002".into()));
        assert_eq!(c.redirect(3), Route::Moved(3, "127.0.0.1:7002".into()));
        assert_eq!(c.route(4), Route::Here);
        assert_eq!(c.state(5), SlotState::Unowned, "a node not in the list any more");
    }
}

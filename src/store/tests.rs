//! Store tests on a clock the test controls (tokio's paused time): exact
//! deadlines, the cover rule, the same-instant rule, blocking order, and a
//! property test that random command sequences keep every invariant.

use super::*;
use crate::notify::EventClasses;
use crate::pubsub::{PubMsg, PubSub};
use rand::RngExt;
use std::collections::HashMap as Map;
use std::time::Duration;
use tokio::time::advance;

const T0: u64 = 1_700_000_000_000;

fn store_with(cfg: StoreConfig) -> (Store, Arc<PubSub>) {
    store_on(cfg, Clock::starting_at(T0))
}

fn store_on(cfg: StoreConfig, clock: Clock) -> (Store, Arc<PubSub>) {
    let ps = Arc::new(PubSub::default());
    let n = Arc::new(Notifier::new(EventClasses::parse("KExlg").unwrap(), ps.clone()));
    (Store::new(cfg, clock, n), ps)
}

fn store() -> (Store, Arc<PubSub>) {
    store_with(StoreConfig::default())
}

async fn ms(n: u64) {
    advance(Duration::from_millis(n)).await;
}

/// Client 1 of `ps`, subscribed to every expired event.
fn expired_events(ps: &PubSub) -> crate::pubsub::Inbox {
    let rx = ps.attach(1, crate::reply::Protocol::Resp2);
    ps.subscribe(1, Bytes::from_static(b"__keyevent@0__:expired"), false);
    rx
}

fn one(s: &Store, pool: &str, px: u64) -> TokenId {
    s.gen_tokens(pool.as_bytes(), Some(px), 1).unwrap()[0]
}

fn acquire(s: &Store, pool: &str, px: u64) -> Option<TokenId> {
    match s.acquire(pool.as_bytes(), Some(px), false) {
        Acquired::Token(t) => Some(t),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn lease_ends_exactly_at_its_deadline() {
    let (s, _) = store();
    let t = one(&s, "p", 10_000);
    assert_eq!(acquire(&s, "p", 100), Some(t));
    assert_eq!(acquire(&s, "p", 100), None);
    ms(99).await;
    assert!(s.info(b"p", t).unwrap().assigned, "still assigned 1 ms before the deadline");
    assert_eq!(s.info(b"p", t).unwrap().lease_left_ms, Some(1));
    ms(1).await;
    let i = s.info(b"p", t).unwrap();
    assert!(!i.assigned, "free at the deadline");
    assert_eq!(i.lease_left_ms, None);
    assert_eq!(i.times_acquired, 1);
    assert_eq!(acquire(&s, "p", 100), Some(t));
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn lifetime_end_deletes_and_is_remembered() {
    let (s, _) = store();
    let t = one(&s, "p", 100);
    ms(99).await;
    assert_eq!(s.keepalive(b"p", t), Ok(100), "keepalive restarts the lifetime");
    ms(100).await;
    assert_eq!(s.keepalive(b"p", t), Err(TokenError::Expired));
    assert_eq!(s.unblock(b"p", t), Err(TokenError::Expired));
    assert_eq!(s.info(b"p", t), Err(TokenError::Expired));
    assert_eq!(s.stats(b"p"), PoolStats { expired_remembered: 1, ..Default::default() });
    assert_eq!(s.del_expired(b"p"), 1);
    assert_eq!(s.keepalive(b"p", t), Err(TokenError::NoToken));
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn expired_memory_is_bounded_in_time_and_count() {
    let (s, _) =
        store_with(StoreConfig { expired_memory_ms: 1000, max_expired_remembered: 3, shards: 1, ..Default::default() });
    let ts: Vec<_> = s.gen_tokens(b"p", Some(10), 5).unwrap();
    ms(10).await;
    // Five expired, at most three remembered: the oldest two are forgotten.
    assert_eq!(s.stats(b"p").expired_remembered, 3);
    let expired = ts.iter().filter(|&&t| s.info(b"p", t) == Err(TokenError::Expired)).count();
    assert_eq!(expired, 3);
    ms(1000).await;
    assert_eq!(s.stats(b"p").expired_remembered, 0);
    for t in ts {
        assert_eq!(s.info(b"p", t), Err(TokenError::NoToken));
    }
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn cover_rule_extends_lifetime_and_keepalive_restarts_it() {
    let (s, _) = store();
    let t = one(&s, "p", 100);
    acquire(&s, "p", 1000).unwrap();
    assert_eq!(s.info(b"p", t).unwrap().lifetime_left_ms, 1000);
    ms(500).await;
    s.unblock(b"p", t).unwrap();
    // The extension stays after UNBLOCK.
    assert_eq!(s.info(b"p", t).unwrap().lifetime_left_ms, 500);
    // KEEPALIVE restarts from the GEN lifetime (shorter than what is left).
    assert_eq!(s.keepalive(b"p", t), Ok(100));
    ms(100).await;
    assert_eq!(s.info(b"p", t), Err(TokenError::Expired));
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn keepalive_of_assigned_token_restarts_both_and_covers() {
    let (s, _) = store();
    let t = one(&s, "p", 100);
    acquire(&s, "p", 300).unwrap();
    ms(250).await;
    assert_eq!(s.keepalive(b"p", t), Ok(300));
    let i = s.info(b"p", t).unwrap();
    assert_eq!((i.lease_left_ms, i.lifetime_left_ms), (Some(300), 300));
    ms(299).await;
    assert!(s.info(b"p", t).unwrap().assigned);
    ms(1).await;
    // Lease and (covered) lifetime end together: the lifetime wins.
    assert_eq!(s.info(b"p", t), Err(TokenError::Expired));
}

#[tokio::test(start_paused = true)]
async fn a_lease_kept_alive_ends_at_its_last_deadline_not_its_first() {
    let (s, _) = store();
    let t = one(&s, "p", 10_000);
    acquire(&s, "p", 100).unwrap();
    ms(60).await;
    assert_eq!(s.keepalive(b"p", t), Ok(10_000));
    // Past the first deadline (100): the lease runs to 160.
    ms(60).await;
    assert_eq!(s.info(b"p", t).unwrap().lease_left_ms, Some(40));
    assert_eq!(s.keepalive(b"p", t), Ok(10_000));
    ms(99).await;
    assert_eq!(s.info(b"p", t).unwrap().lease_left_ms, Some(1));
    ms(1).await;
    let i = s.info(b"p", t).unwrap();
    assert!(!i.assigned, "free at the last deadline");
    assert_eq!(i.lifetime_left_ms, 10_000 - 100);
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lease_ended_by_unblock_never_ends_a_later_lease() {
    let (s, _) = store();
    let t = one(&s, "p", 10_000);
    acquire(&s, "p", 100).unwrap();
    s.unblock(b"p", t).unwrap();
    ms(50).await;
    assert_eq!(acquire(&s, "p", 100), Some(t));
    // The first lease's entry fires now; the second lease goes on.
    ms(50).await;
    assert_eq!(s.info(b"p", t).unwrap().lease_left_ms, Some(50));
    ms(49).await;
    assert!(s.info(b"p", t).unwrap().assigned);
    ms(1).await;
    assert!(!s.info(b"p", t).unwrap().assigned, "free at the second lease's deadline");
    // Both lease entries are gone and nothing was re-armed for the
    // lifetime: its entry from GEN is the one pending.
    assert_eq!(s.pending_timers(), 1);
    ms(10_000 - 150).await;
    assert_eq!(s.info(b"p", t), Err(TokenError::Expired));
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reused_slot_ignores_the_lease_entry_of_the_token_before() {
    let (s, _) = store();
    // A second token keeps the pool (and its slots) alive across the DEL.
    let keep = one(&s, "p", 10_000);
    let old = one(&s, "p", 10_000);
    let got = acquire(&s, "p", 100).unwrap();
    let (leased, other) = if got == old { (old, keep) } else { (keep, old) };
    assert!(s.del(b"p", leased));
    let new = one(&s, "p", 10_000);
    assert_eq!(s.stats(b"p").total, 2);
    // Lease the newcomer (it took the deleted token's slot) past the old deadline.
    ms(50).await;
    while s.info(b"p", new).is_ok_and(|i| !i.assigned) {
        let t = acquire(&s, "p", 100).unwrap();
        if t != new {
            s.unblock(b"p", t).unwrap();
        }
    }
    ms(50).await;
    assert_eq!(s.info(b"p", new).unwrap().lease_left_ms, Some(50), "the old entry ended nothing");
    assert!(!s.info(b"p", other).unwrap().assigned);
    ms(50).await;
    assert!(!s.info(b"p", new).unwrap().assigned);
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn same_instant_lifetime_wins_and_only_expired_is_published() {
    let (s, ps) = store();
    let mut rx = ps.attach(1, crate::reply::Protocol::Resp2);
    ps.subscribe(1, Bytes::from_static(b"__keyevent@0__:*"), true);
    let t = one(&s, "p", 100);
    acquire(&s, "p", 100).unwrap();
    while rx.try_recv().is_ok() {} // tokengen, tokenacquire
    ms(100).await;
    assert_eq!(s.info(b"p", t), Err(TokenError::Expired));
    let mut events = Vec::new();
    while let Ok(PubMsg::PMessage { channel, .. }) = rx.try_recv() {
        events.push(String::from_utf8_lossy(&channel).into_owned());
    }
    assert_eq!(events, vec!["__keyevent@0__:expired"]);
}

#[tokio::test(start_paused = true)]
async fn driver_fires_on_time_without_any_command() {
    let (s, ps) = store();
    let _drivers = expiry::spawn(&s);
    let mut rx = ps.attach(1, crate::reply::Protocol::Resp2);
    ps.subscribe(1, Bytes::from_static(b"__keyevent@0__:leaseexpired"), false);
    ps.subscribe(1, Bytes::from_static(b"__keyevent@0__:expired"), false);
    let t = one(&s, "p", 5_000);
    acquire(&s, "p", 1_234).unwrap();
    let start = s.clock().now_ms();
    let msg = rx.recv().await.unwrap();
    assert_eq!(s.clock().now_ms() - start, 1_234, "leaseexpired at the exact millisecond");
    let want = format!("p:{}", std::str::from_utf8(&crate::token::format(t)).unwrap());
    assert_eq!(msg, PubMsg::Message { channel: "__keyevent@0__:leaseexpired".into(), payload: want.clone().into() });
    let msg = rx.recv().await.unwrap();
    assert_eq!(s.clock().now_ms() - start, 5_000, "expired at the exact millisecond");
    assert_eq!(msg, PubMsg::Message { channel: "__keyevent@0__:expired".into(), payload: want.into() });
}

#[tokio::test(start_paused = true)]
async fn driver_is_woken_for_an_earlier_deadline() {
    let (s, ps) = store_with(StoreConfig { shards: 1, ..Default::default() });
    let _drivers = expiry::spawn(&s);
    let mut rx = expired_events(&ps);
    one(&s, "p", 60_000); // the driver now sleeps for a minute
    tokio::task::yield_now().await;
    let start = s.clock().now_ms();
    one(&s, "p", 7);
    rx.recv().await.unwrap();
    assert_eq!(s.clock().now_ms() - start, 7);
}

/// A slot too big to cascade in one go is spread by the driver shortly
/// before its time, and its tokens still expire at their exact millisecond.
#[tokio::test(start_paused = true)]
async fn driver_spreads_a_big_cascade_ahead_and_expiries_stay_exact() {
    spreads_a_big_cascade_ahead(0).await;
}

/// The same when the wheel was small when the driver last looked: it went
/// to sleep until the slot's time, and the pool filled up after that.
#[tokio::test(start_paused = true)]
async fn driver_spreads_a_slot_that_filled_up_while_it_slept() {
    spreads_a_big_cascade_ahead(1_000).await;
}

/// Makes `first` tokens and lets the driver look, then `PREPARE_MIN` and
/// 5,000 more with the same lifetime: every slot holding them is spread
/// before its time (no cascade moves a big slot's entries in one go), and
/// they expire at their exact millisecond.
async fn spreads_a_big_cascade_ahead(first: u64) {
    let n = crate::wheel::PREPARE_MIN as u64 + 5_000;
    let (s, _) = store_with(StoreConfig { shards: 1, max_expired_remembered: 0, ..Default::default() });
    let _drivers = expiry::spawn(&s);
    let life = 20_000;
    let start = s.clock().now_ms();
    if first > 0 {
        s.gen_tokens(b"p", Some(life), first).unwrap();
        tokio::task::yield_now().await;
        let asleep_until = s.shard_cells()[0].wake_at.load(std::sync::atomic::Ordering::Acquire);
        assert!(asleep_until > start + 1_000, "the driver sleeps until the slot's time");
    }
    s.gen_tokens(b"p", Some(life), n).unwrap();
    let spread = || lock(&s.shard_cells()[0].state).wheel.prepared_entries();
    // Far from any cascade: nothing is copied yet.
    tokio::task::yield_now().await;
    assert_eq!(spread(), 0);
    // The slot is spread whole before its time (a chunk each time the
    // driver runs), maybe more than once as it moves down the levels.
    let mut whole = 0;
    while s.clock().now_ms() - start < life - 1 {
        ms(10.min(life - 1 - (s.clock().now_ms() - start))).await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        if spread() == (first + n) as usize {
            whole += 1;
        }
    }
    assert!(whole > 0, "never spread whole");
    let cold = lock(&s.shard_cells()[0].state).wheel.cold_cascade_max();
    assert!(cold < crate::wheel::PREPARE_MIN, "a cascade moved {cold} entries not spread ahead");
    assert_eq!(s.clock().now_ms() - start, life - 1);
    assert_eq!(s.stats(b"p").total, first + n, "all alive 1 ms before the deadline");
    ms(1).await;
    assert_eq!(s.stats(b"p").total, 0, "all gone at the deadline");
    s.check_invariants().unwrap();
}

/// The thread drivers run on real time: a few short real deadlines.
#[tokio::test]
async fn thread_drivers_fire_on_real_time_and_are_woken_for_an_earlier_deadline() {
    let (s, ps) = store_on(StoreConfig { shards: 1, ..Default::default() }, Clock::new());
    let drivers = expiry::spawn_threads(&s).unwrap();
    let mut rx = expired_events(&ps);
    one(&s, "p", 3_600_000); // the driver now sleeps for an hour
    tokio::time::sleep(Duration::from_millis(20)).await;
    for ttl in [30, 1, 45] {
        // Read before GEN: the token's deadline is at least this (read
        // after, the clock may have turned a millisecond past GEN's).
        let deadline = s.clock().now_ms() + ttl;
        let t = one(&s, "p", ttl);
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("expired within 10 s").unwrap();
        assert!(s.clock().now_ms() >= deadline, "not before its deadline");
        let want = format!("p:{}", std::str::from_utf8(&crate::token::format(t)).unwrap());
        assert_eq!(msg, PubMsg::Message { channel: "__keyevent@0__:expired".into(), payload: want.into() });
    }
    // Dropping the drivers stops and joins the threads.
    drop(drivers);
    let t = one(&s, "p", 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err(), "no driver is left to fire it");
    assert_eq!(s.info(b"p", t), Err(TokenError::Expired), "a command still fires it");
}

#[tokio::test(start_paused = true)]
async fn blocked_clients_are_served_oldest_first() {
    let (s, _) = store();
    let mut waits = Vec::new();
    for _ in 0..3 {
        match s.acquire(b"p", Some(1000), true) {
            Acquired::Wait(w) => waits.push(w),
            _ => panic!("expected to wait"),
        }
    }
    assert_eq!(s.stats(b"p").blocked_waiters, 3);
    // The second gives up; the others must still be served in order.
    let second = waits.remove(1);
    assert_eq!(second.cancel(), None);
    let a = one(&s, "p", 10_000);
    let b = one(&s, "p", 10_000);
    assert_eq!(waits[0].recv().await, Handed::Token(a));
    assert_eq!(waits[1].recv().await, Handed::Token(b));
    // A newcomer does not jump the queue: nothing is free now anyway.
    assert_eq!(acquire(&s, "p", 10), None);
    let i = s.info(b"p", a).unwrap();
    assert!(i.assigned && i.lease_left_ms == Some(1000), "lease starts when served");
    s.check_invariants().unwrap();
}

/// A WATCH of a pool whose hash slot leaves this node fails its EXEC,
/// whether the pool was held here or not: another node may change it
/// before the slot comes back (and is loaded again, at the same version).
#[tokio::test(start_paused = true)]
async fn a_watch_of_a_pool_that_leaves_fails_its_exec() {
    let (s, _) = store();
    one(&s, "held", 10_000);
    let (held, absent, stays) = (s.watch(b"held"), s.watch(b"absent"), s.watch(b"stays"));
    assert_eq!(s.evict(|p| p != b"stays"), 1);
    let mut t = s.txn([&b"held"[..], b"absent", b"stays"], false);
    assert!(!t.unchanged_since(b"held", held).unwrap());
    assert!(!t.unchanged_since(b"absent", absent).unwrap());
    assert!(t.unchanged_since(b"stays", stays).unwrap());
}

/// A journal that numbers its units and keeps them.
#[derive(Default)]
struct Units(std::sync::Mutex<Vec<Vec<Change>>>);

impl Journal for Units {
    fn append(&self, changes: Vec<Change>) -> u64 {
        let mut u = self.0.lock().unwrap();
        u.push(changes);
        u.len() as u64
    }
}

impl Units {
    fn last(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }

    /// Whether unit `seq` assigns `t` (a lease is written for it).
    fn assigns(&self, seq: u64, t: TokenId) -> bool {
        self.0.lock().unwrap()[seq as usize - 1]
            .iter()
            .any(|c| matches!(c, Change::Put { token, record, .. } if *token == t && record.lease_deadline != 0))
    }
}

/// A blocked client's reply is made durable with the unit that assigned
/// its token, not with whatever unit was queued last when it woke: later
/// units may be queued first (or, in cluster mode, have another fate).
#[tokio::test(start_paused = true)]
async fn a_served_waiter_knows_the_unit_that_assigned_its_token() {
    let (s, _) = store();
    let units = Arc::new(Units::default());
    s.set_journal(units.clone());
    let wait = |pool: &str| match s.acquire(pool.as_bytes(), Some(1000), true) {
        Acquired::Wait(w) => w,
        _ => panic!("expected to wait"),
    };
    let (mut served, timed_out) = (wait("p"), wait("q"));
    let t = one(&s, "p", 10_000);
    let assigned = units.last();
    let u = one(&s, "q", 10_000);
    let also = units.last();
    one(&s, "other", 10_000);
    assert_eq!(served.recv().await, Handed::Token(t));
    assert_eq!(served.assigned_in(), Some(assigned));
    assert!(units.assigns(assigned, t));
    // Handed over as it timed out: the token is the client's, with its unit.
    assert_eq!(timed_out.cancel(), Some((u, Some(also))));
    assert!(units.assigns(also, u));
    assert!(also < units.last());
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn released_waiter_gives_back_a_token_it_was_handed() {
    let (s, _) = store();
    let w = match s.acquire(b"p", None, true) {
        Acquired::Wait(w) => w,
        _ => panic!("expected to wait"),
    };
    let t = one(&s, "p", 10_000);
    assert!(s.info(b"p", t).unwrap().assigned, "handed to the waiter");
    drop(w); // the client went away before reading it
    assert!(!s.info(b"p", t).unwrap().assigned);
    assert_eq!(acquire(&s, "p", 10), Some(t));
}

#[tokio::test(start_paused = true)]
async fn lease_end_serves_a_blocked_client() {
    let (s, _) = store();
    let t = one(&s, "p", 10_000);
    acquire(&s, "p", 50).unwrap();
    let mut w = match s.acquire(b"p", Some(500), true) {
        Acquired::Wait(w) => w,
        _ => panic!("expected to wait"),
    };
    let _drivers = expiry::spawn(&s);
    let start = s.clock().now_ms();
    assert_eq!(w.recv().await, Handed::Token(t));
    assert_eq!(s.clock().now_ms() - start, 50);
    assert_eq!(s.info(b"p", t).unwrap().times_acquired, 2);
}

#[tokio::test(start_paused = true)]
async fn token_limit_is_all_or_nothing() {
    let (s, _) = store_with(StoreConfig { max_tokens: 10, ..Default::default() });
    s.gen_tokens(b"p", None, 8).unwrap();
    assert_eq!(s.gen_tokens(b"p", None, 3), Err(TokenError::Oom));
    assert_eq!(s.stats(b"p").total, 8);
    s.gen_tokens(b"q", None, 2).unwrap();
    assert_eq!(s.live_tokens(), 10);
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn random_pick_is_uniform_enough() {
    let (s, _) = store();
    let ts = s.gen_tokens(b"p", Some(1_000_000), 10).unwrap();
    let mut hits: Map<TokenId, u32> = Map::new();
    for _ in 0..10_000 {
        let t = acquire(&s, "p", 1000).unwrap();
        *hits.entry(t).or_default() += 1;
        s.unblock(b"p", t).unwrap();
    }
    for t in ts {
        let h = hits.get(&t).copied().unwrap_or(0);
        // Expected 1000 each; 6 sigma is about ±180.
        assert!((800..1200).contains(&h), "token picked {h} times of 10000");
    }
}

#[tokio::test(start_paused = true)]
async fn restore_puts_tokens_at_their_slots_and_indexes_the_rest() {
    let (s, _) = store();
    s.set_slot_key(77);
    let far = T0 + 600_000;
    let free = |life| Record::stored(life, 0, 600_000, 0, 0);
    let live = |token| Restored::Live { pool: Bytes::from_static(b"p"), token, record: free(far), at: None };
    let mut items = Vec::new();
    let mut want = Vec::new();
    // Tokens naming slots 0..40 under this key, one of them twice (a
    // duplicate entry) and two naming the same slot (the second is placed
    // elsewhere and indexed).
    for slot in 0..40u32 {
        let id = crate::token::with_slot([slot as u8 + 1; 16], slot, 77);
        items.push(live(id));
        want.push(id);
    }
    items.push(live(want[3]));
    let clash = crate::token::with_slot([200; 16], 5, 77);
    items.push(live(clash));
    want.push(clash);
    // Tokens made under another key or by nobody: random slots.
    for n in 0..40u8 {
        let id = if n % 2 == 0 {
            crate::token::with_slot([n; 16], n as u32, 1)
        } else {
            crate::token::from_random([n ^ 0x5a; 16])
        };
        items.push(live(id));
        want.push(id);
    }
    let assigned = crate::token::from_random([0xee; 16]);
    items.push(Restored::Live {
        pool: Bytes::from_static(b"p"),
        token: assigned,
        record: Record::stored(far, T0 + 1000, 600_000, 1000, 1),
        at: None,
    });
    want.push(assigned);
    assert_eq!(s.restore(items), [Bytes::from_static(b"p")], "kept in no slot: to be put in slots");
    s.check_invariants().unwrap();
    let st = s.stats(b"p");
    assert_eq!((st.total, st.assigned), (want.len() as u64, 1));
    for &id in &want {
        assert!(s.info(b"p", id).is_ok(), "{id:x} is found");
    }
    // All of them can be taken; new tokens fill the gaps; all can go.
    let new = s.gen_tokens(b"p", Some(600_000), 100).unwrap();
    let mut seen = std::collections::HashSet::new();
    while let Some(t) = acquire(&s, "p", 1000) {
        assert!(seen.insert(t), "handed out twice");
    }
    assert_eq!(seen.len() + 1, want.len() + new.len());
    s.check_invariants().unwrap();
    // The restored lease was armed: it ends on time, like the new ones.
    ms(999).await;
    assert!(s.info(b"p", assigned).unwrap().assigned);
    ms(1).await;
    assert!(!s.info(b"p", assigned).unwrap().assigned);
    assert_eq!(s.stats(b"p").assigned, 0);
    for id in want.iter().chain(&new) {
        assert!(s.del(b"p", *id));
    }
    s.check_invariants().unwrap();
    assert_eq!(s.stats(b"p").total, 0);
}

#[tokio::test(start_paused = true)]
async fn past_due_tokens_fire_in_deadline_order_however_they_were_placed() {
    let (s, ps) = store();
    s.set_slot_key(9);
    let mut rx = expired_events(&ps);
    // Deadlines that passed during the downtime, alternating between tokens
    // that name their slot (placed first) and foreign ones (placed after);
    // every third kept in a slot by the backing store (placed before all).
    let mut items = Vec::new();
    let mut want = Vec::new();
    for n in 0..10u32 {
        let id = if n % 2 == 0 {
            crate::token::with_slot([n as u8 + 1; 16], n, 9)
        } else {
            crate::token::from_random([n as u8 + 100; 16])
        };
        let life = T0 - 1000 + u64::from(n) * 10;
        items.push(Restored::Live {
            pool: Bytes::from_static(b"p"),
            token: id,
            record: Record::stored(life, 0, 5, 0, 0),
            at: (n % 3 == 0).then_some(20 + n),
        });
        want.push(format!("p:{}", std::str::from_utf8(&crate::token::format(id)).unwrap()));
    }
    items.reverse(); // the order the backing Redis happened to give
    s.restore(items);
    s.check_invariants().unwrap();
    assert_eq!(s.live_tokens(), 10, "nothing fires during recovery");
    // The first command on the pool's shard fires everything past due.
    assert_eq!(s.stats(b"p").total, 0);
    let mut got = Vec::new();
    while let Ok(PubMsg::Message { payload, .. }) = rx.try_recv() {
        got.push(String::from_utf8_lossy(&payload).into_owned());
    }
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn tokens_kept_in_slots_get_those_slots_before_any_other_token() {
    let (s, _) = store();
    s.set_slot_key(5);
    let far = T0 + 600_000;
    let pool = Bytes::from_static(b"p");
    let live = |token, at| Restored::Live { pool: pool.clone(), token, record: Record::stored(far, 0, 1, 0, 0), at };
    // Kept in slots 0..8 but made under another key: they name other slots.
    let kept: Vec<TokenId> = (0..8u32).map(|n| crate::token::with_slot([n as u8 + 1; 16], n, 99)).collect();
    // From an earlier layout, listed first, each naming one of those slots.
    let old: Vec<TokenId> = (0..8u32).map(|n| crate::token::with_slot([n as u8 + 50; 16], n, 5)).collect();
    let mut items: Vec<Restored> = old.iter().map(|&t| live(t, None)).collect();
    items.extend(kept.iter().zip(0..).map(|(&t, at)| live(t, Some(at))));
    assert_eq!(s.restore(items), std::slice::from_ref(&pool), "the earlier layout's tokens are to be put in slots");
    s.check_invariants().unwrap();
    assert_eq!(s.stats(b"p").total, 16);
    {
        let g = s.lock_shard_of(b"p");
        let p = g.pools.get(&g.pid(b"p").unwrap()).unwrap();
        for (n, &t) in kept.iter().enumerate() {
            assert_eq!(p.find(t), Some(n as SlotIdx), "kept in slot {n}");
        }
        for &t in &old {
            assert!(p.find(t).is_some_and(|slot| slot >= 8), "put after the kept ones");
        }
    }

    // Only tokens kept where they are: nothing to put elsewhere.
    let (s, _) = store();
    s.set_slot_key(5);
    let items = kept.iter().zip(0..).map(|(&t, at)| live(t, Some(at))).collect();
    assert!(s.restore(items).is_empty());
    s.check_invariants().unwrap();

    // A slot kept twice, a token kept twice, a slot far past the bound:
    // each is put somewhere, and the pool is to be restated.
    let (s, _) = store();
    s.set_slot_key(5);
    let stray = crate::token::from_random([0x77; 16]);
    let far_slot = crate::token::from_random([0x78; 16]);
    let items =
        vec![live(kept[0], Some(0)), live(stray, Some(0)), live(kept[0], Some(3)), live(far_slot, Some(1 << 30))];
    assert_eq!(s.restore(items), std::slice::from_ref(&pool));
    s.check_invariants().unwrap();
    assert_eq!(s.stats(b"p").total, 3);
    for t in [kept[0], stray, far_slot] {
        assert!(s.info(b"p", t).is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn prefetch_is_only_a_hint() {
    let (s, _) = store();
    let small = s.gen_tokens(b"small", None, 100).unwrap();
    let big = s.gen_tokens(b"big", None, 40_000).unwrap();
    let read = std::cell::Cell::new(0);
    #[allow(clippy::unnecessary_to_owned)] // the closure's result must not borrow `ids`
    // A small pool, or one that does not exist: the ids are not even read.
    let lazy = |ids: &[TokenId]| ids.to_vec().into_iter().inspect(|_| read.set(read.get() + 1));
    s.prefetch(b"small", lazy(&small));
    s.prefetch(b"nope", lazy(&small));
    assert_eq!(read.get(), 0);
    // A big pool: every id is read.
    s.prefetch(b"big", lazy(&big[..16]));
    assert_eq!(read.get(), 16);
    // A busy shard: no waiting (this thread holds the lock: waiting would
    // never end), nothing read.
    {
        let _held = s.lock_shard_of(b"big");
        s.prefetch(b"big", lazy(&big[..16]));
    }
    assert_eq!(read.get(), 16);
    // Nothing changed.
    assert_eq!(s.stats(b"big").total, 40_000);
    assert_eq!(s.stats(b"big").free, 40_000);
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_large_pool_never_hands_a_token_out_twice() {
    // Large enough that ACQUIRE draws its next token ahead (freeset.rs).
    let (s, _) = store();
    let mut toks = s.gen_tokens(b"big", Some(10_000_000), 40_000).unwrap();
    let mut held: Vec<TokenId> = Vec::new();
    let mut holding = std::collections::HashSet::new();
    let mut rng = StdRng::seed_from_u64(5);
    for round in 0..60_000u32 {
        match rng.random_range(0..10) {
            0..=4 => {
                if let Some(t) = acquire(&s, "big", 1_000_000) {
                    assert!(holding.insert(t), "token handed out twice");
                    held.push(t);
                }
            }
            5..=7 if !held.is_empty() => {
                let t = held.swap_remove(rng.random_range(0..held.len()));
                holding.remove(&t);
                s.unblock(b"big", t).unwrap();
            }
            8 => {
                let t = toks.swap_remove(rng.random_range(0..toks.len()));
                assert!(s.del(b"big", t));
                if holding.remove(&t) {
                    held.retain(|&h| h != t);
                }
            }
            _ => toks.extend(s.gen_tokens(b"big", Some(10_000_000), 2).unwrap()),
        }
        if round % 20_000 == 0 {
            s.check_invariants().unwrap();
        }
    }
    s.check_invariants().unwrap();
    let st = s.stats(b"big");
    assert_eq!((st.total, st.assigned), (toks.len() as u64, held.len() as u64));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Gen { pool: u8, px: u64, count: u64 },
        Acquire { pool: u8, px: u64 },
        Keepalive { pool: u8, pick: usize },
        Unblock { pool: u8, pick: usize },
        Del { pool: u8, pick: usize },
        DelExpired { pool: u8 },
        Advance { ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u8, 1..300u64, 0..4u64).prop_map(|(pool, px, count)| Op::Gen { pool, px, count }),
            (0..3u8, 1..300u64).prop_map(|(pool, px)| Op::Acquire { pool, px }),
            (0..3u8, any::<usize>()).prop_map(|(pool, pick)| Op::Keepalive { pool, pick }),
            (0..3u8, any::<usize>()).prop_map(|(pool, pick)| Op::Unblock { pool, pick }),
            (0..3u8, any::<usize>()).prop_map(|(pool, pick)| Op::Del { pool, pick }),
            (0..3u8).prop_map(|pool| Op::DelExpired { pool }),
            (0..200u64).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    /// What a token should be, by the SPEC's rules.
    struct Model {
        lifetime: u64,
        life: u64,
        lease_ms: u64,
        lease: Option<u64>,
        deleted: bool,
    }

    impl Model {
        fn live(&self, now: u64) -> bool {
            !self.deleted && self.life > now
        }
        /// The running lease's deadline (a lease ends at its deadline).
        fn leased(&self, now: u64) -> Option<u64> {
            self.lease.filter(|&d| d > now)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random command sequences keep every invariant, and every token's
        /// state matches a model to the millisecond after every step: its
        /// lifetime and lease left, whether it is assigned, and that it is
        /// gone once its lifetime ended. A token is never handed out while
        /// a lease on it is running. (Lazy wheel resets, stale lease entries
        /// left by UNBLOCK and re-acquired slots are all exercised here.)
        #[test]
        /// Batches of 1 or 2 leave a backlog after most steps: a command
        /// must still find its pool exact.
        fn random_sequences_match_a_model_to_the_millisecond(
            ops in proptest::collection::vec(op(), 1..120),
            expiry_batch in proptest::sample::select(vec![1usize, 2, 4096]),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async move {
                let (s, _) = store_with(StoreConfig { shards: 2, expired_memory_ms: 250, expiry_batch, ..Default::default() });
                let mut known: Vec<(u8, TokenId)> = Vec::new();
                let mut model: Map<TokenId, Model> = Map::new();
                let name = |p: u8| format!("pool{p}");
                for op in ops {
                    let now = s.clock().now_ms();
                    match op {
                        Op::Gen { pool, px, count } => {
                            for t in s.gen_tokens(name(pool).as_bytes(), Some(px), count).unwrap() {
                                known.push((pool, t));
                                model.insert(t, Model { lifetime: px, life: now + px, lease_ms: 0, lease: None, deleted: false });
                            }
                        }
                        Op::Acquire { pool, px } => {
                            if let Some(t) = acquire(&s, &name(pool), px) {
                                let m = model.get_mut(&t).expect("a token we made");
                                assert!(m.live(now) && m.leased(now).is_none(), "handed out while leased or dead");
                                m.lease = Some(now + px);
                                m.lease_ms = px;
                                m.life = m.life.max(now + px);
                            }
                        }
                        Op::Keepalive { pool, pick } | Op::Unblock { pool, pick } | Op::Del { pool, pick }
                            if !known.is_empty() =>
                        {
                            let (p, t) = known[pick % known.len()];
                            let n = name(pool);
                            let r = match op {
                                Op::Keepalive { .. } => s.keepalive(n.as_bytes(), t).map(Some),
                                Op::Unblock { .. } => s.unblock(n.as_bytes(), t).map(|_| None),
                                _ => if s.del(n.as_bytes(), t) { Ok(None) } else { Err(TokenError::NoToken) },
                            };
                            let m = model.get_mut(&t).expect("a token we made");
                            if p != pool {
                                assert_eq!(r, Err(TokenError::NoToken), "a token belongs to one pool only");
                            } else if !m.live(now) {
                                assert!(r.is_err() || matches!(op, Op::Del { .. }), "{op:?} of a dead token: {r:?}");
                                if r.is_ok() {
                                    m.deleted = true; // DEL of a remembered expired token
                                }
                            } else {
                                match op {
                                    Op::Keepalive { .. } => {
                                        m.life = now + m.lifetime;
                                        if m.leased(now).is_some() {
                                            m.lease = Some(now + m.lease_ms);
                                            m.life = m.life.max(now + m.lease_ms);
                                        }
                                        assert_eq!(r, Ok(Some(m.life - now)), "KEEPALIVE's lifetime left");
                                    }
                                    Op::Unblock { .. } => {
                                        let want = if m.leased(now).is_some() { Ok(None) } else { Err(TokenError::NotAssigned) };
                                        assert_eq!(r, want, "UNBLOCK");
                                        m.lease = None;
                                    }
                                    _ => {
                                        assert_eq!(r, Ok(None), "DEL of a live token");
                                        m.deleted = true;
                                    }
                                }
                            }
                        }
                        Op::DelExpired { pool } => { s.del_expired(name(pool).as_bytes()); }
                        Op::Advance { ms: d } => advance(Duration::from_millis(d)).await,
                        _ => {}
                    }
                    s.check_invariants().unwrap();
                    let now = s.clock().now_ms();
                    for &(p, t) in &known {
                        let m = &model[&t];
                        let got = s.info(name(p).as_bytes(), t);
                        if m.deleted {
                            assert_eq!(got.map(|_| ()), Err(TokenError::NoToken), "deleted token");
                        } else if !m.live(now) {
                            assert!(got.is_err(), "token alive {} ms after its lifetime ended", now - m.life);
                        } else {
                            let i = got.expect("a live token is found");
                            assert_eq!(i.lifetime_left_ms, m.life - now, "lifetime left");
                            assert_eq!(i.lease_left_ms, m.leased(now).map(|d| d - now), "lease left");
                            assert_eq!(i.assigned, i.lease_left_ms.is_some());
                        }
                    }
                    for p in 0..3 {
                        let st = s.stats(name(p).as_bytes());
                        assert_eq!(st.total, st.free + st.assigned);
                    }
                }
            });
        }
    }
}

/// Acquiring with long leases and giving the tokens back early leaves a
/// stale lease entry per acquisition; deleting long-lived tokens leaves a
/// stale lifetime entry each. The driver's sweeps keep the wheel within a
/// constant factor of the live tokens however many there were, and every
/// deadline that matters still fires exactly on time.
#[tokio::test(start_paused = true)]
async fn stale_wheel_entries_stay_bounded_by_the_live_tokens() {
    let (s, _) = store();
    let _drivers = expiry::spawn(&s);
    // One shard and one wheel (the bound is per shard): the keeper's pool
    // shares the shard of "p" but is never acquired from.
    let kpool = (0..).map(|i| format!("k{i}")).find(|k| s.shard_index(k.as_bytes()) == s.shard_index(b"p")).unwrap();
    let kpool = kpool.as_bytes();
    let keeper = s.gen_tokens(kpool, Some(10_000), 1).unwrap()[0];
    let ids = s.gen_tokens(b"p", Some(3_600_000), 100).unwrap();
    // What a sweep allows, plus the garbage of two rounds (a sweep may be
    // under way when the test looks).
    let bound = expiry::SWEEP_FACTOR * 101 + expiry::SWEEP_SLACK + 2 * 12_000;
    let mut peak = 0;
    for round in 0..40 {
        // 10,000 acquisitions with one-hour leases, each given back at once;
        // and 2,000 one-hour tokens made and deleted.
        for _ in 0..10_000 {
            let t = acquire(&s, "p", 3_600_000).unwrap();
            s.unblock(b"p", t).unwrap();
        }
        for t in s.gen_tokens(b"p", Some(3_600_000), 2_000).unwrap() {
            assert!(s.del(b"p", t));
        }
        // The driver looks for work every 50 ms while the wheel is big, and
        // yields between chunks: let it have its turns.
        advance(Duration::from_millis(60)).await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        peak = peak.max(s.pending_timers());
        assert!(s.pending_timers() <= bound, "round {round}: {} wheel entries for 101 live tokens", s.pending_timers());
    }
    // Without sweeps the wheel would hold all 480,000 stale entries.
    assert!(peak <= bound && 40 * 12_000 > 4 * bound, "peak {peak}");
    s.check_invariants().unwrap();
    // Nothing live was swept: every token still expires on time.
    assert_eq!(s.stats(b"p").total, 100);
    let left = s.info(kpool, keeper).unwrap().lifetime_left_ms;
    advance(Duration::from_millis(left - 1)).await;
    tokio::task::yield_now().await;
    assert!(s.info(kpool, keeper).is_ok(), "alive 1 ms before its deadline");
    ms(1).await;
    assert_eq!(s.info(kpool, keeper), Err(TokenError::Expired));
    for t in ids {
        assert!(!s.info(b"p", t).unwrap().assigned);
    }
}

/// A retired pool id goes to the next new pool of its shard (the table of
/// pools stays as long as the most pools held at once), and what is left
/// in the wheel for the retired pool does nothing to the pool that gets
/// its id.
#[tokio::test(start_paused = true)]
async fn a_retired_pool_id_comes_back_without_touching_the_next_pool() {
    let (s, _) = store_with(StoreConfig { shards: 1, ..StoreConfig::default() });
    let _drivers = expiry::spawn(&s);
    let shard = || lock(&s.shard_cells()[0].state);
    let ids = |names: &[&str]| -> Vec<u32> {
        let g = shard();
        names.iter().map(|n| g.pid(n.as_bytes()).unwrap()).collect()
    };
    let a = one(&s, "a", 60_000);
    // A pool whose tokens are gone leaves wheel entries for its id.
    let gone = one(&s, "gone", 300);
    let [id_a, id_gone] = ids(&["a", "gone"])[..] else { unreachable!() };
    assert_ne!(id_a, id_gone);
    assert!(s.del(b"gone", gone));
    assert!(shard().pid(b"gone").is_none(), "the empty pool is dropped");
    let c = one(&s, "c", 60_000);
    assert_eq!(ids(&["c"]), [id_gone], "the retired id is taken again");
    let d = one(&s, "d", 60_000);
    assert!(![id_a, id_gone].contains(&ids(&["d"])[0]), "a live pool's id is never given out");
    // The retired pool's entry (due at 300 ms) fires for "c"'s slot 0:
    // nothing happens to "c"'s token.
    ms(400).await;
    tokio::task::yield_now().await;
    for (pool, t) in [("a", a), ("c", c), ("d", d)] {
        let i = s.info(pool.as_bytes(), t).unwrap();
        assert!(!i.assigned && i.lifetime_left_ms > 59_000, "{pool}: {i:?}");
    }
    s.check_invariants().unwrap();
}

/// Every event published so far: (channel's event name, token).
fn drain_events(rx: &mut crate::pubsub::Inbox) -> Vec<(String, TokenId)> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        let (PubMsg::Message { channel, payload } | PubMsg::PMessage { channel, payload, .. }) = m;
        let kind = String::from_utf8_lossy(&channel).rsplit(':').next().unwrap_or_default().to_string();
        let tok = crate::token::parse(&payload[payload.len() - 36..]).expect("a token in the payload");
        out.push((kind, tok));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_backlog_of_expiries_is_never_seen_and_fires_in_deadline_order() {
    // Batches of 8: a command on another pool fires one due entry and
    // leaves the rest in the backlog.
    let (s, ps) = store_with(StoreConfig { shards: 1, expiry_batch: 8, ..Default::default() });
    let mut rx = ps.attach(1, crate::reply::Protocol::Resp2);
    ps.subscribe(1, Bytes::from_static(b"__keyevent@0__:*"), true);
    // 300 tokens ending 100, 101 and 102 ms from now; 30 of them leased
    // until 50 ms from now; one token whose lease and lifetime end at the
    // same instant; and another pool of the same shard.
    let mut life: Map<TokenId, u64> = Map::new();
    for k in 0..3 {
        for t in s.gen_tokens(b"big", Some(100 + k), 100).unwrap() {
            life.insert(t, T0 + 100 + k);
        }
    }
    let mut leased = Vec::new();
    for _ in 0..30 {
        leased.push(acquire(&s, "big", 50).unwrap());
    }
    let same = one(&s, "same", 101);
    assert_eq!(acquire(&s, "same", 101), Some(same));
    life.insert(same, T0 + 101);
    let other = s.gen_tokens(b"other", Some(10_000), 5).unwrap();
    drain_events(&mut rx);

    ms(200).await;
    // Commands on the other pool run on what they find: they do not wait
    // for the backlog, and leave most of it.
    for _ in 0..5 {
        let t = acquire(&s, "other", 1_000).unwrap();
        assert!(other.contains(&t));
        s.unblock(b"other", t).unwrap();
    }
    assert!(s.behind(), "the mass expiry is still queued");
    let early = drain_events(&mut rx);
    assert!(early.len() < 331, "not all of it fired");
    // A command on the big pool never sees a token past its deadline: it
    // fires its pool's backlog first.
    assert_eq!(acquire(&s, "big", 10), None, "every token of the pool is past its lifetime");
    for t in &leased {
        assert_eq!(s.keepalive(b"big", *t), Err(TokenError::Expired));
    }
    assert_eq!(s.stats(b"big"), PoolStats { expired_remembered: 300, ..Default::default() });
    assert_eq!(s.info(b"same", same), Err(TokenError::Expired));
    assert!(!s.behind());
    s.check_invariants().unwrap();

    // The events, the first command's included: each token's once, in
    // deadline order, a lease before the lifetime, and the same-instant
    // token's lifetime only.
    let events: Vec<_> = [early, drain_events(&mut rx)]
        .concat()
        .into_iter()
        .filter(|(k, _)| k == "expired" || k == "leaseexpired")
        .collect();
    let leases: Vec<TokenId> = events.iter().filter(|(k, _)| k == "leaseexpired").map(|(_, t)| *t).collect();
    let mut want_leases = leased.clone();
    want_leases.sort();
    let mut got_leases = leases.clone();
    got_leases.sort();
    assert_eq!(got_leases, want_leases, "one leaseexpired per leased token, none for the same-instant one");
    let expired: Vec<TokenId> = events.iter().filter(|(k, _)| k == "expired").map(|(_, t)| *t).collect();
    assert_eq!(expired.len(), 301);
    assert_eq!(expired.iter().collect::<std::collections::HashSet<_>>().len(), 301, "each once");
    // Firing late, a token's entry settles everything due for it at once
    // (its lease, then its lifetime): tokens come in the order of their
    // earliest deadline, each with its own events in order.
    let first_due = |t: &TokenId| if leased.contains(t) { T0 + 50 } else { life[t] };
    let mut seen = std::collections::HashSet::new();
    let order: Vec<u64> = events.iter().filter(|(_, t)| seen.insert(*t)).map(|(_, t)| first_due(t)).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "tokens in deadline order: {order:?}");
    let at = |kind: &str, t: &TokenId| events.iter().position(|(k, e)| k == kind && e == t).unwrap();
    assert!(leased.iter().all(|t| at("leaseexpired", t) < at("expired", t)));
}

#[tokio::test(start_paused = true)]
async fn the_driver_fires_a_backlog_batch_by_batch_and_a_waiting_request_helps() {
    let (s, ps) = store_with(StoreConfig { shards: 1, expiry_batch: 16, ..Default::default() });
    let mut rx = expired_events(&ps);
    let toks = s.gen_tokens(b"big", Some(100), 1_000).unwrap();
    let _drivers = expiry::spawn(&s);
    ms(100).await;
    // The driver's first batch ran at the deadline; a backlog is left.
    tokio::task::yield_now().await;
    assert!(s.behind());
    assert!(s.live_tokens() < 1_000);
    // What a front end does before a request on the pool: wait, helping.
    s.ready(b"big").await;
    assert!(!s.behind());
    assert_eq!(s.live_tokens(), 0);
    assert_eq!(s.pending_timers(), 0);
    let got: Vec<TokenId> = drain_events(&mut rx).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, toks, "in the order they were made (the wheel's order within a millisecond)");
}

/// Big GENs take their random bits and slab chunks from a stock made
/// before the lock: into a small pool (which moves into chunks), into a
/// big one with vacant slots to reuse, and into a new one, every token is
/// distinct, findable and free, and nothing is counted twice.
#[tokio::test(start_paused = true)]
async fn big_gens_from_a_stock_make_every_token() {
    let (s, _) = store_with(StoreConfig { shards: 2, ..Default::default() });
    let mut all = std::collections::HashSet::new();
    let stocked = |pool: &'static [u8], n: u64| {
        let s = s.clone();
        async move {
            assert!(s.stock_gen(pool, n).await);
            s.gen_tokens(pool, None, n).unwrap()
        }
    };
    all.extend(s.gen_tokens(b"p", None, 10).unwrap());
    let big = stocked(b"p", 40_000).await;
    assert_eq!(big.len(), 40_000);
    all.extend(big.iter().copied());
    for id in &big[..5_000] {
        assert!(s.del(b"p", *id));
        all.remove(id);
    }
    all.extend(stocked(b"p", 70_000).await);
    all.extend(stocked(b"q", 33_000).await);
    assert_eq!(all.len(), 10 + 35_000 + 70_000 + 33_000, "every token distinct");
    assert_eq!(s.stats(b"p").free, 10 + 35_000 + 70_000);
    assert_eq!(s.stats(b"q").free, 33_000);
    for id in &all {
        let pool: &[u8] = if s.info(b"p", *id).is_ok() { b"p" } else { b"q" };
        assert!(s.info(pool, *id).is_ok(), "{id:x} not found");
    }
    s.check_invariants().unwrap();
}

/// A big GEN's slots made outside the lock go in only if the pool is as
/// they were made for; when a command changed it in between, the GEN makes
/// its tokens under the lock instead. Into a big pool whose last chunk is
/// partly used, into one grown meanwhile, into a new one: every token is
/// distinct, free and findable, and expires exactly at its deadline with
/// its event.
#[tokio::test(start_paused = true)]
async fn gens_made_outside_the_lock_are_whole_and_exact_or_fall_back() {
    const CS: u64 = super::slab::CHUNK_SLOTS as u64;
    let (s, ps) = store_with(StoreConfig { shards: 1, ..Default::default() });
    let mut rx = expired_events(&ps);
    let _drivers = expiry::spawn(&s);
    let stocked = |pool: &'static [u8], n: u64| {
        let s = s.clone();
        async move {
            assert!(s.stock_gen(pool, n).await);
            s.gen_tokens(pool, Some(1_000), n).unwrap()
        }
    };
    let mut all = s.gen_tokens(b"p", Some(1_000), CS + 7).unwrap();
    all.extend(stocked(b"p", 40_000).await);
    // Made for the pool as it was: an IMPORT in between adds a slot.
    assert!(s.stock_gen(b"p", 5_000).await);
    let at_end = crate::token::with_slot([9; 16], (CS + 7 + 40_000) as u32, s.slot_key());
    assert!(s.import(b"p", at_end, 1_000, None).unwrap());
    all.push(at_end);
    all.extend(s.gen_tokens(b"p", Some(1_000), 5_000).unwrap());
    all.extend(stocked(b"q", CS + 1).await);
    assert_eq!(super::ops::ADOPTED.get(), 2, "the GEN after the IMPORT made its own");
    let n = all.len();
    assert_eq!(all.iter().collect::<std::collections::HashSet<_>>().len(), n, "every token distinct");
    assert_eq!((s.stats(b"p").free + s.stats(b"q").free) as usize, n);
    assert!(all.iter().all(|t| s.info(b"p", *t).is_ok() || s.info(b"q", *t).is_ok()), "every token found");
    s.check_invariants().unwrap();
    ms(999).await;
    tokio::task::yield_now().await;
    assert_eq!((s.stats(b"p").free + s.stats(b"q").free) as usize, n, "none before its deadline");
    ms(1).await;
    tokio::task::yield_now().await;
    assert_eq!((s.stats(b"p").free, s.stats(b"q").free), (0, 0), "all at it");
    let mut got: Vec<TokenId> = drain_events(&mut rx).into_iter().map(|(_, t)| t).collect();
    got.sort();
    all.sort();
    assert_eq!(got, all, "one expired event each");
}

/// A thread driver parked until its shard's next deadline leaves the core
/// to a poller (`Store::expiry_working`), one firing a backlog does not,
/// and a stopped one does.
#[tokio::test]
async fn thread_drivers_parked_until_a_deadline_are_not_working() {
    let (s, ps) = store_on(StoreConfig { shards: 2, ..Default::default() }, Clock::new());
    let drivers = expiry::spawn_threads(&s).unwrap();
    let mut rx = expired_events(&ps);
    one(&s, "p", 3_600_000);
    one(&s, "p", 20);
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a driver fired within 10 s").unwrap();
    // Each driver parks once its ticks are done: nothing else is due
    // within the hour.
    let parked = tokio::time::timeout(Duration::from_secs(10), async {
        while s.expiry_working() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    parked.await.expect("the drivers park within 10 s");
    // 200,000 tokens due in 50 ms: a driver fires them in batches, and is
    // counted while it does (no command runs meanwhile to fire them).
    let expired_before = s.counters().0;
    s.gen_tokens(b"mass", Some(50), 200_000).unwrap();
    let seen_working = std::time::Instant::now();
    while !s.expiry_working() {
        assert!(s.counters().0 < expired_before + 200_000, "all fired without the driver counted as working");
        assert!(seen_working.elapsed() < Duration::from_secs(10), "nothing fired within 10 s");
        std::hint::spin_loop();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.counters().0 < expired_before + 200_000 || s.expiry_working() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("all fired and the drivers parked again within 10 s");
    drop(drivers);
    assert!(!s.expiry_working());
}

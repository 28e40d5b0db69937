//! `TOKEN.STATS pool`
//!
//! Replies with a map: `total` (free + assigned, live tokens only), `free`,
//! `assigned`, `expired-remembered`, `blocked-waiters`. A pool that does not
//! exist has all zeros, as an empty Redis key would.

use crate::reply::Reply;
use crate::server::Shared;

/// Runs TOKEN.STATS.
pub fn apply(pool: &[u8], shared: &Shared) -> Reply {
    let s = shared.store.stats(pool);
    let f = |k: &'static str, v: u64| (Reply::bulk_static(k), Reply::Integer(v as i64));
    Reply::Map(vec![
        f("total", s.total),
        f("free", s.free),
        f("assigned", s.assigned),
        f("expired-remembered", s.expired_remembered),
        f("blocked-waiters", s.blocked_waiters),
    ])
}

//! `TOKEN.STATS pool`
//!
//! Replies with a map: `total` (free + assigned, live tokens only), `free`,
//! `assigned`, `expired-remembered`, `blocked-waiters`. A pool that does not
//! exist has all zeros, as an empty Redis key would.

use super::{Call, Outcome, pool_only};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

/// Runs TOKEN.STATS.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pool = pool_only(p)?;
    let s = c.tokens.stats(pool)?;
    let f = |k: &'static str, v: u64| (Reply::bulk_static(k), Reply::Integer(v as i64));
    Ok(Reply::Map(vec![
        f("total", s.total),
        f("free", s.free),
        f("assigned", s.assigned),
        f("expired-remembered", s.expired_remembered),
        f("blocked-waiters", s.blocked_waiters),
    ])
    .into())
}

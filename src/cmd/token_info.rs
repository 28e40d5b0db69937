//! `TOKEN.INFO pool token`
//!
//! Replies with a map (a flat field/value array in RESP2, as HGETALL does):
//! `state` (`free` or `assigned`), `lifetime-left-ms`, `lease-left-ms` (-1
//! when free), `times-acquired`.

use super::PoolToken;
use crate::reply::Reply;
use crate::server::Shared;

/// Runs TOKEN.INFO.
pub fn apply(pt: PoolToken, shared: &Shared) -> Reply {
    let Some(id) = pt.token else { return super::no_token() };
    match shared.store.info(&pt.pool, id) {
        Ok(i) => Reply::Map(vec![
            (Reply::bulk_static("state"), Reply::bulk_static(if i.assigned { "assigned" } else { "free" })),
            (Reply::bulk_static("lifetime-left-ms"), Reply::Integer(i.lifetime_left_ms as i64)),
            (Reply::bulk_static("lease-left-ms"), Reply::Integer(i.lease_left_ms.map_or(-1, |l| l as i64))),
            (Reply::bulk_static("times-acquired"), Reply::Integer(i.times_acquired as i64)),
        ]),
        Err(e) => Reply::error(e.to_string()),
    }
}

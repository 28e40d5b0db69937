//! `TOKEN.INFO pool token`
//!
//! Replies with a map (a flat field/value array in RESP2, as HGETALL does):
//! `state` (`free` or `assigned`), `lifetime-left-ms`, `lease-left-ms` (-1
//! when free), `times-acquired`.

use super::{Call, Outcome, PoolToken, no_token, reply_or_error};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

/// Runs TOKEN.INFO.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pt = PoolToken::parse(p)?;
    let Some(id) = pt.token else { return Ok(no_token().into()) };
    let reply = reply_or_error(c.tokens.info(pt.pool, id)?, |i| {
        Reply::Map(vec![
            (Reply::bulk_static("state"), Reply::bulk_static(if i.assigned { "assigned" } else { "free" })),
            (Reply::bulk_static("lifetime-left-ms"), Reply::Integer(i.lifetime_left_ms as i64)),
            (Reply::bulk_static("lease-left-ms"), Reply::Integer(i.lease_left_ms.map_or(-1, |l| l as i64))),
            (Reply::bulk_static("times-acquired"), Reply::Integer(i.times_acquired as i64)),
        ])
    });
    Ok(reply.into())
}

//! `TOKEN.KEEPALIVE pool token`
//!
//! Restarts the token's lifetime and, if assigned, its lease, from now, with
//! the durations they were given. Replies with the lifetime left in ms.

use super::PoolToken;
use crate::reply::Reply;
use crate::server::Shared;

/// Runs TOKEN.KEEPALIVE.
pub fn apply(pt: PoolToken, shared: &Shared) -> Reply {
    let Some(id) = pt.token else { return super::no_token() };
    match shared.store.keepalive(&pt.pool, id) {
        Ok(left) => Reply::Integer(left as i64),
        Err(e) => Reply::error(e.to_string()),
    }
}

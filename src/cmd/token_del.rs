//! `TOKEN.DEL pool token`
//!
//! Deletes the token in any state (a remembered expired token is forgotten).
//! Replies 1, or 0 if there was no such token.

use super::PoolToken;
use crate::reply::Reply;
use crate::server::Shared;

/// Runs TOKEN.DEL.
pub fn apply(pt: PoolToken, shared: &Shared) -> Reply {
    let Some(id) = pt.token else { return Reply::Integer(0) };
    Reply::Integer(shared.store.del(&pt.pool, id) as i64)
}

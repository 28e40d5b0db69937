//! `TOKEN.DELEXPIRED pool`
//!
//! Forgets every remembered expired token of the pool, in memory and in the
//! backing store. Replies with how many were purged.

use crate::reply::Reply;
use crate::server::Shared;

/// Runs TOKEN.DELEXPIRED.
pub fn apply(pool: &[u8], shared: &Shared) -> Reply {
    Reply::Integer(shared.store.del_expired(pool) as i64)
}

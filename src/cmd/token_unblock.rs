//! `TOKEN.UNBLOCK pool token`
//!
//! Gives an assigned token back: it becomes free (or goes straight to the
//! oldest blocked client); its lifetime goes on with what is left. Replies 1;
//! `-NOTASSIGNED` for a free token.

use super::PoolToken;
use crate::reply::Reply;
use crate::server::Shared;

/// Runs TOKEN.UNBLOCK.
pub fn apply(pt: PoolToken, shared: &Shared) -> Reply {
    let Some(id) = pt.token else { return super::no_token() };
    match shared.store.unblock(&pt.pool, id) {
        Ok(()) => Reply::Integer(1),
        Err(e) => Reply::error(e.to_string()),
    }
}

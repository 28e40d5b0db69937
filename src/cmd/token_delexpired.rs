//! `TOKEN.DELEXPIRED pool`
//!
//! Forgets every remembered expired token of the pool, in memory and in the
//! backing store. Replies with how many were purged.

use super::{Call, Outcome, pool_only};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

/// Runs TOKEN.DELEXPIRED.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pool = pool_only(p)?;
    Ok(Reply::Integer(c.tokens.del_expired(pool)? as i64).into())
}

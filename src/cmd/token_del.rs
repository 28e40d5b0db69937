//! `TOKEN.DEL pool token`
//!
//! Deletes the token in any state (a remembered expired token is forgotten).
//! Replies 1, or 0 if there was no such token.

use super::{Call, Outcome, PoolToken};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

/// Runs TOKEN.DEL.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pt = PoolToken::parse(p)?;
    let Some(id) = pt.token else { return Ok(Reply::Integer(0).into()) };
    Ok(Reply::Integer(c.tokens.del(pt.pool, id)? as i64).into())
}

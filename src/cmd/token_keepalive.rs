//! `TOKEN.KEEPALIVE pool token`
//!
//! Restarts the token's lifetime and, if assigned, its lease, from now, with
//! the durations they were given. Replies with the lifetime left in ms.

use super::{Call, Outcome, PoolToken, no_token, reply_or_error};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

/// Runs TOKEN.KEEPALIVE.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pt = PoolToken::parse(p)?;
    let Some(id) = pt.token else { return Ok(no_token().into()) };
    Ok(reply_or_error(c.tokens.keepalive(pt.pool, id)?, |left| Reply::Integer(left as i64)).into())
}

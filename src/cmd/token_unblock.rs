//! `TOKEN.UNBLOCK pool token`
//!
//! Gives an assigned token back: it becomes free (or goes straight to the
//! oldest blocked client); its lifetime goes on with what is left. Replies 1;
//! `-NOTASSIGNED` for a free token.

use super::{Call, Outcome, PoolToken, no_token, reply_or_error};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

/// Runs TOKEN.UNBLOCK.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pt = PoolToken::parse(p)?;
    let Some(id) = pt.token else { return Ok(no_token().into()) };
    Ok(reply_or_error(c.tokens.unblock(pt.pool, id)?, |()| Reply::Integer(1)).into())
}

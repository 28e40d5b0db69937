//! `TOKEN.ACQUIRE pool [EX seconds | PX milliseconds] [BLOCK milliseconds]`
//!
//! Moves a uniformly random free token to assigned with that lease (default
//! `--lease-ttl`); if the lifetime left is shorter than the lease, the lifetime
//! is extended to cover it. With BLOCK, waits up to that long (0 = forever)
//! for a token, first come first served, like BLPOP. Replies with the token,
//! or nil.

use super::{Call, Ctx, Outcome, TtlOption, pool_arg};
use crate::parse::{Parse, ParseError, parse_i64};
use crate::reply::Reply;
use crate::store::Acquired;
use crate::token;
use std::time::Duration;

/// A parsed TOKEN.ACQUIRE.
#[derive(Debug, PartialEq)]
pub struct Acquire<'a> {
    pool: &'a [u8],
    lease_ms: Option<u64>,
    /// None: do not block; Some(0): block forever.
    block_ms: Option<u64>,
}

impl<'a> Acquire<'a> {
    pub fn parse(p: &mut Parse<'a>) -> Result<Acquire<'a>, ParseError> {
        let pool = pool_arg(p)?;
        let mut ttl = TtlOption::new("token.acquire");
        let mut block_ms = None;
        loop {
            let opt = match p.next_keyword() {
                Ok(o) => o,
                Err(ParseError::EndOfStream) => break,
                Err(e) => return Err(e),
            };
            if ttl.try_parse(&opt, p)? {
                continue;
            }
            match opt.as_str() {
                "BLOCK" => {
                    // BLPOP's wording for a bad timeout.
                    let v = p.next_slice()?;
                    let ms = parse_i64(v)
                        .ok_or_else(|| ParseError::Other("ERR timeout is not an integer or out of range".into()))?;
                    if ms < 0 {
                        return Err(ParseError::Other("ERR timeout is negative".into()));
                    }
                    if ms > super::MAX_DURATION_MS {
                        return Err(ParseError::Other("ERR timeout is out of range".into()));
                    }
                    block_ms = Some(ms as u64);
                }
                _ => return Err(ParseError::Syntax),
            }
        }
        Ok(Acquire { pool, lease_ms: ttl.value(), block_ms })
    }
}

/// Runs TOKEN.ACQUIRE. Inside a transaction BLOCK does not block.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let a = Acquire::parse(p)?;
    let block = a.block_ms.is_some() && !c.tokens.in_txn();
    Ok(match c.tokens.acquire(a.pool, a.lease_ms, block)? {
        Acquired::Token(t) => Outcome::Reply(Reply::bulk(token::format(t))),
        Acquired::Empty => Outcome::Reply(Reply::Null),
        Acquired::Wait(waiting) => {
            Outcome::Block { waiting, timeout: a.block_ms.filter(|&ms| ms > 0).map(Duration::from_millis) }
        }
    })
}

/// Checks a TOKEN.ACQUIRE for MULTI.
pub fn check(p: &mut Parse, _: &Ctx) -> Result<(), ParseError> {
    Acquire::parse(p).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests::args;

    #[test]
    fn options() {
        let a = Acquire::parse(&mut args(&["p", "PX", "200", "BLOCK", "0"])).unwrap();
        assert_eq!((a.lease_ms, a.block_ms), (Some(200), Some(0)));
        let a = Acquire::parse(&mut args(&["p"])).unwrap();
        assert_eq!((a.lease_ms, a.block_ms), (None, None));
    }

    #[test]
    fn errors() {
        let e = |a: &[&str]| Acquire::parse(&mut args(a)).unwrap_err().to_string();
        assert_eq!(e(&["p", "BLOCK", "-1"]), "ERR timeout is negative");
        assert_eq!(e(&["p", "BLOCK", "9223372036854775807"]), "ERR timeout is out of range");
        assert_eq!(e(&["p", "BLOCK", "1.5"]), "ERR timeout is not an integer or out of range");
        assert_eq!(e(&["p", "PX", "0"]), "ERR invalid expire time in 'token.acquire' command");
        assert_eq!(e(&["p", "NX"]), "ERR syntax error");
    }
}

//! `TOKEN.IMPORT pool token lifetime-ms [lease-ms]`
//!
//! Puts a token made elsewhere into the pool: free with `lifetime-ms` of
//! lifetime left, or, with a `lease-ms` above 0, assigned with that much
//! lease left (the lifetime is then extended to cover the lease). What
//! `tokend import-seed` sends for each token of the old service. Replies 1,
//! or 0 if the pool has the token already (live, or remembered as expired),
//! in which case nothing changes: running an import twice is harmless.
//! KEEPALIVE later restarts from the server's default lifetime and lease.

use super::{Call, Ctx, Outcome, pool_arg};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use crate::token::{self, TokenId};

/// A parsed TOKEN.IMPORT.
#[derive(Debug, PartialEq)]
pub struct Import<'a> {
    pool: &'a [u8],
    token: TokenId,
    life_ms: u64,
    lease_ms: Option<u64>,
}

fn duration(p: &mut Parse, what: &str) -> Result<u64, ParseError> {
    let v = p.next_i64()?;
    if !(0..=super::MAX_DURATION_MS).contains(&v) {
        return Err(ParseError::Other(format!("ERR invalid {what} in 'token.import' command")));
    }
    Ok(v as u64)
}

impl<'a> Import<'a> {
    pub fn parse(p: &mut Parse<'a>) -> Result<Import<'a>, ParseError> {
        let pool = pool_arg(p)?;
        let t = p.next_slice()?;
        // Any UUID but the nil one (which no generator makes).
        let token = token::parse(t)
            .filter(|&id| id != 0)
            .ok_or_else(|| ParseError::Other("ERR invalid token: it must be a UUID in its canonical form".into()))?;
        let life_ms = duration(p, "lifetime")?;
        if life_ms == 0 {
            return Err(ParseError::Other("ERR invalid lifetime in 'token.import' command".into()));
        }
        let lease_ms = match p.remaining() {
            0 => None,
            _ => Some(duration(p, "lease")?).filter(|&ms| ms > 0),
        };
        p.finish()?;
        Ok(Import { pool, token, life_ms, lease_ms })
    }
}

/// The MULTI check.
pub fn check(p: &mut Parse, _: &Ctx) -> Result<(), ParseError> {
    Import::parse(p).map(drop)
}

/// Runs TOKEN.IMPORT.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let i = Import::parse(p)?;
    Ok(match c.tokens.import(i.pool, i.token, i.life_ms, i.lease_ms)? {
        Ok(added) => Reply::Integer(added as i64),
        Err(e) => Reply::error(e.to_string()),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests::args;

    #[test]
    fn arguments() {
        let t = "8b0e9f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        let i = Import::parse(&mut args(&["p", t, "5000"])).unwrap();
        assert_eq!((i.life_ms, i.lease_ms), (5000, None));
        let i = Import::parse(&mut args(&["p", t, "5000", "0"])).unwrap();
        assert_eq!(i.lease_ms, None, "a lease of 0 is free");
        let i = Import::parse(&mut args(&["p", t, "5000", "700"])).unwrap();
        assert_eq!(i.lease_ms, Some(700));
        for bad in [
            &["p", "nope", "5000"][..],
            &["p", "00000000-0000-0000-0000-000000000000", "5000"],
            &["p", t, "0"],
            &["p", t, "-1"],
            &["p", t, "5000", "-1"],
            &["p", t, "5000", "1", "x"],
            &["", t, "5000"],
        ] {
            assert!(Import::parse(&mut args(bad)).is_err(), "{bad:?}");
        }
    }
}

//! `TOKEN.GEN pool [EX seconds | PX milliseconds] [COUNT n]`
//!
//! Makes n (default 1) new free tokens with that lifetime (default
//! `--token-ttl`). Replies with the token, or with an array when COUNT is
//! given (even for 1; empty for 0, as SPOP does).

use super::{Call, Ctx, Outcome, TtlOption, pool_arg};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use crate::token;
use bytes::Bytes;

/// A parsed TOKEN.GEN.
#[derive(Debug, PartialEq)]
pub struct Gen<'a> {
    pool: &'a [u8],
    lifetime_ms: Option<u64>,
    count: Option<u64>,
}

impl<'a> Gen<'a> {
    pub fn parse(p: &mut Parse<'a>, max_count: u64) -> Result<Gen<'a>, ParseError> {
        let pool = pool_arg(p)?;
        let mut ttl = TtlOption::new("token.gen");
        let mut count = None;
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
                "COUNT" => {
                    let n = p.next_i64()?;
                    if n < 0 {
                        return Err(ParseError::Other("ERR value is out of range, must be positive".into()));
                    }
                    if n as u64 > max_count {
                        return Err(ParseError::Other(format!("ERR COUNT must be between 0 and {max_count}")));
                    }
                    count = Some(n as u64);
                }
                _ => return Err(ParseError::Syntax),
            }
        }
        Ok(Gen { pool, lifetime_ms: ttl.value(), count })
    }
}

/// Runs TOKEN.GEN.
pub fn run(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let g = Gen::parse(p, c.ctx.settings.max_gen_count)?;
    let reply = match c.tokens.gen_tokens(g.pool, g.lifetime_ms, g.count.unwrap_or(1))? {
        Err(e) => Reply::error(e.to_string()),
        Ok(ids) => match g.count {
            None => ids.first().map_or(Reply::Null, |&t| Reply::bulk(token::format(t))),
            Some(_) => Reply::Tokens(ids),
        },
    };
    Ok(reply.into())
}

/// The pool and count of a valid TOKEN.GEN with COUNT, for the front end
/// to make its stock first ([`crate::store::Store::stock_gen`]).
pub fn stock_request<'a>(ctx: &Ctx, args: &'a [Bytes]) -> Option<(&'a [u8], u64)> {
    let name = args.first()?;
    // Most GENs make one token: no COUNT, no parse.
    if !name.eq_ignore_ascii_case(b"TOKEN.GEN") || !args.iter().skip(2).any(|a| a.eq_ignore_ascii_case(b"COUNT")) {
        return None;
    }
    match Gen::parse(&mut Parse::after_name(args), ctx.settings.max_gen_count) {
        Ok(Gen { pool, count: Some(count), .. }) => Some((pool, count)),
        _ => None,
    }
}

/// Checks a TOKEN.GEN for MULTI.
pub fn check(p: &mut Parse, ctx: &Ctx) -> Result<(), ParseError> {
    Gen::parse(p, ctx.settings.max_gen_count).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests::args;

    fn parse(a: &[&str]) -> Result<Gen<'static>, ParseError> {
        Gen::parse(&mut args(a), 100_000)
    }

    #[test]
    fn options() {
        let g = parse(&["p", "PX", "250", "COUNT", "3"]).unwrap();
        assert_eq!((g.lifetime_ms, g.count), (Some(250), Some(3)));
        let g = parse(&["p", "ex", "2"]).unwrap();
        assert_eq!((g.lifetime_ms, g.count), (Some(2000), None));
        // Repeated options: the last one wins, as SET does.
        let g = parse(&["p", "EX", "1", "EX", "5", "COUNT", "1", "COUNT", "0"]).unwrap();
        assert_eq!((g.lifetime_ms, g.count), (Some(5000), Some(0)));
    }

    #[test]
    fn errors() {
        let e = |a: &[&str]| parse(a).unwrap_err().to_string();
        assert_eq!(e(&["p", "EX", "1", "PX", "5"]), "ERR syntax error");
        assert_eq!(e(&["p", "EX", "0"]), "ERR invalid expire time in 'token.gen' command");
        assert_eq!(e(&["p", "PX", "-5"]), "ERR invalid expire time in 'token.gen' command");
        assert_eq!(e(&["p", "PX", "x"]), "ERR value is not an integer or out of range");
        assert_eq!(e(&["p", "PX"]), "ERR syntax error");
        assert_eq!(e(&["p", "COUNT", "-1"]), "ERR value is out of range, must be positive");
        assert_eq!(e(&["p", "COUNT", "100001"]), "ERR COUNT must be between 0 and 100000");
        assert_eq!(e(&["p", "BOGUS"]), "ERR syntax error");
        assert_eq!(e(&[""]), "ERR invalid pool name: it must not be empty");
    }
}

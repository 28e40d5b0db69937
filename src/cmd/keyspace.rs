//! Pools as keys of db 0, for Redis tooling (`redis-cli --scan`,
//! `--bigkeys`, `--memkeys`, GUIs) and operators: `SCAN`, `KEYS`,
//! `EXISTS`, `TYPE`, `DEL`, `UNLINK`, `MEMORY USAGE`, `OBJECT ENCODING`,
//! `FLUSHDB`, `FLUSHALL`.

use super::{Call, Ctx, Outcome};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

/// What `TYPE` answers for a pool.
pub const POOL_TYPE: &str = "token-pool";

/// What `OBJECT ENCODING` answers for a pool: its tokens live in a slab.
pub const POOL_ENCODING: &str = "slab";

/// SCAN's COUNT when none is given (Redis's).
const SCAN_COUNT: usize = 10;

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub fn scan(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let cursor = p.next_bytes()?;
    let cursor: u64 = std::str::from_utf8(&cursor)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ParseError::Other("ERR invalid cursor".into()))?;
    let (mut pattern, mut count, mut kind) = (None, SCAN_COUNT, None);
    while let Ok(opt) = p.next_keyword() {
        match opt.as_str() {
            "MATCH" => pattern = Some(p.next_bytes()?),
            "COUNT" => {
                let n = p.next_i64()?;
                if n < 1 {
                    return Err(ParseError::Syntax);
                }
                count = n as usize;
            }
            "TYPE" => kind = Some(p.next_bytes()?),
            _ => return Err(ParseError::Syntax),
        }
    }
    // `*` matches everything: no need to compare.
    let pattern = pattern.filter(|pat| &pat[..] != b"*");
    let (next, mut keys) = c.tokens.scan(cursor, count, pattern.as_deref())?;
    if kind.is_some_and(|k| !k.eq_ignore_ascii_case(POOL_TYPE.as_bytes())) {
        keys.clear();
    }
    Ok(Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys.into_iter().map(Reply::Bulk).collect())])
        .into())
}

/// `KEYS pattern`.
pub fn keys(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pattern = p.next_bytes()?;
    p.finish()?;
    Ok(Reply::Array(c.tokens.keys(&pattern)?.into_iter().map(Reply::Bulk).collect()).into())
}

/// `EXISTS pool [pool ...]`: how many of them exist (a pool named twice
/// counts twice, as in Redis).
pub fn exists(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut n = 0;
    while let Ok(pool) = p.next_bytes() {
        n += i64::from(c.tokens.exists(&pool)?);
    }
    Ok(Reply::Integer(n).into())
}

/// `TYPE pool`: `token-pool`, or `none`.
pub fn type_of(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pool = p.next_bytes()?;
    Ok(Reply::status(if c.tokens.exists(&pool)? { POOL_TYPE } else { "none" }).into())
}

/// `DEL pool [pool ...]` and `UNLINK pool [pool ...]`: whole pools, with
/// their tokens (no `expired` events), their remembered expired tokens and
/// their waiters (answered nil); how many existed. A big pool's memory is
/// freed on another thread either way, so neither stalls its shard.
pub fn del(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut n = 0;
    while let Ok(pool) = p.next_bytes() {
        n += i64::from(c.tokens.drop_pool(&pool)?);
    }
    Ok(Reply::Integer(n).into())
}

/// `MEMORY USAGE pool [SAMPLES count]`: bytes the pool holds, or nil.
pub fn memory_usage(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pool = p.next_bytes()?;
    match p.next_keyword() {
        Ok(k) if k == "SAMPLES" => {
            // Every pool is measured exactly; the sample count changes nothing.
            if p.next_i64()? < 0 {
                return Err(ParseError::Other("ERR count should be greater than or equal to 0".into()));
            }
            p.finish()?;
        }
        Ok(_) => return Err(ParseError::Syntax),
        Err(_) => {}
    }
    Ok(c.tokens.memory_usage(&pool)?.map_or(Reply::Null, |u| Reply::Integer(u.bytes as i64)).into())
}

/// `MEMORY HELP`.
pub fn memory_help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(help(&[
        "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "USAGE <key> [SAMPLES <count>]",
        "    Return memory in bytes used by <key> and its value.",
        "HELP",
        "    Print this help.",
    ]))
}

/// `OBJECT ENCODING pool`.
pub fn object_encoding(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pool = p.next_bytes()?;
    Ok(if c.tokens.exists(&pool)? { Reply::bulk_static(POOL_ENCODING) } else { Reply::Null }.into())
}

/// `OBJECT HELP`.
pub fn object_help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(help(&[
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "HELP",
        "    Print this help.",
    ]))
}

fn help(lines: &[&'static str]) -> Outcome {
    Reply::Array(lines.iter().map(|l| Reply::status(l)).collect()).into()
}

/// `FLUSHDB [ASYNC|SYNC]` and `FLUSHALL [ASYNC|SYNC]`: every pool, at
/// once; refused unless `--enable-flush yes`.
pub fn flush(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    check_flush(p, c.ctx)?;
    if !c.ctx.settings.enable_flush {
        return Ok(Reply::error(
            "ERR FLUSHDB and FLUSHALL are disabled: they delete every pool. Start tokend with --enable-flush yes to allow them",
        )
        .into());
    }
    c.tokens.flush();
    Ok(Reply::ok().into())
}

/// The MULTI check of FLUSHDB/FLUSHALL.
pub fn check_flush(p: &mut Parse, _: &Ctx) -> Result<(), ParseError> {
    if let Ok(mode) = p.next_keyword()
        && mode != "ASYNC"
        && mode != "SYNC"
    {
        return Err(ParseError::Syntax);
    }
    p.finish()
}

//! Commands: lookup, the checks every command goes through, and dispatch.
//!
//! The order of checks is Redis's (`processCommand`): unknown command, then
//! arity, then authentication, then the RESP2 pub/sub context. Each command
//! lives in its own file with its parser and tests; connection-level commands
//! that only touch the session (PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET)
//! share `conn.rs` because each is a few lines over the same session state.

pub mod client;
pub mod command;
pub mod conn;
pub mod pubsub;
pub mod server_info;
pub mod token_acquire;
pub mod token_del;
pub mod token_delexpired;
pub mod token_gen;
pub mod token_info;
pub mod token_keepalive;
pub mod token_stats;
pub mod token_unblock;

use crate::connection::Session;
use crate::parse::{Parse, ParseError};
use crate::reply::{Protocol, Reply};
use crate::server::Shared;
use crate::store::Waiting;
use crate::token::{self, TokenId};
use bytes::Bytes;
use std::time::Duration;

/// What running a command asks the connection to do.
pub enum Outcome {
    Reply(Reply),
    /// Several replies (SUBSCRIBE to several channels).
    Replies(Vec<Reply>),
    /// Wait for a token (blocked ACQUIRE); `None` timeout = forever.
    Block {
        waiting: Waiting,
        timeout: Option<Duration>,
    },
    /// Send the reply, then close (QUIT).
    Close(Reply),
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Self {
        Outcome::Reply(r)
    }
}

/// True if `argc` (with the name) satisfies a Redis arity.
pub fn arity_ok(arity: i32, argc: usize) -> bool {
    if arity >= 0 { argc == arity as usize } else { argc >= arity.unsigned_abs() as usize }
}

/// Redis's reply for an unknown command.
fn unknown_command(args: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&args[0]);
    let mut rest = String::new();
    for a in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(a);
        let room = 128 - rest.len();
        rest.push('\'');
        rest.extend(a.chars().take(room));
        rest.push_str("' ");
    }
    let name: String = name.chars().take(128).collect();
    Reply::error(format!("ERR unknown command '{name}', with args beginning with: {rest}"))
}

/// Runs one request.
pub fn execute(session: &mut Session, shared: &Shared, args: Vec<Bytes>) -> Outcome {
    let Some(spec) = command::lookup_bytes(&args[0]) else {
        return unknown_command(&args).into();
    };
    // The table's name: lower case, static, no allocation per request.
    let name: &'static str = spec.name;
    if !arity_ok(spec.arity, args.len()) {
        return Reply::error(format!("ERR wrong number of arguments for '{name}' command")).into();
    }
    if !session.authenticated && !matches!(name, "auth" | "hello" | "quit") {
        return Reply::error("NOAUTH Authentication required.").into();
    }
    if session.proto == Protocol::Resp2
        && session.subscriptions() > 0
        && !matches!(name, "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ping" | "quit" | "reset")
    {
        return Reply::error(format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ))
        .into();
    }
    // Commands that change the store (the table's `write` flag, as Redis
    // marks them): in sync durability mode their replies wait until the
    // backing Redis has the change.
    if spec.flags.contains(&"write") {
        if let Some(sp) = shared.sync_point()
            && let Err(msg) = sp.admit()
        {
            return Reply::Error(msg).into();
        }
        session.wrote = true;
    }
    // CLIENT LIST's `cmd=`: the shared copy is updated only when it changes.
    if !std::ptr::eq(session.last_cmd, name) {
        session.last_cmd = name;
        session.update_meta(|m| m.last_cmd = name.to_string());
    }
    let mut p = Parse::after_name(args);
    let result: Result<Outcome, ParseError> = match name {
        "token.gen" => token_gen::Gen::parse(&mut p, shared.config.max_gen_count).map(|c| c.apply(shared).into()),
        "token.acquire" => token_acquire::Acquire::parse(&mut p).map(|c| c.apply(shared)),
        "token.keepalive" => PoolToken::parse(&mut p).map(|c| token_keepalive::apply(c, shared).into()),
        "token.unblock" => PoolToken::parse(&mut p).map(|c| token_unblock::apply(c, shared).into()),
        "token.del" => PoolToken::parse(&mut p).map(|c| token_del::apply(c, shared).into()),
        "token.info" => PoolToken::parse(&mut p).map(|c| token_info::apply(c, shared).into()),
        "token.delexpired" => pool_only(&mut p).map(|pool| token_delexpired::apply(&pool, shared).into()),
        "token.stats" => pool_only(&mut p).map(|pool| token_stats::apply(&pool, shared).into()),
        "ping" => conn::ping(&mut p, session).map(Outcome::from),
        "echo" => conn::echo(&mut p).map(Outcome::from),
        "hello" => conn::hello(&mut p, session, shared).map(Outcome::from),
        "auth" => conn::auth(&mut p, session, shared).map(Outcome::from),
        "select" => conn::select(&mut p).map(Outcome::from),
        "quit" => Ok(Outcome::Close(Reply::ok())),
        "reset" => Ok(conn::reset(session, shared).into()),
        "client" => client::apply(&mut p, session, shared).map(Outcome::from),
        "command" => Ok(command::apply(&mut p).into()),
        "info" => server_info::info(&mut p, shared).map(Outcome::from),
        "dbsize" => Ok(server_info::dbsize(shared).into()),
        "time" => Ok(server_info::time().into()),
        "config" => server_info::config(&mut p, shared).map(Outcome::from),
        "subscribe" => pubsub::subscribe(&mut p, session, shared, false),
        "psubscribe" => pubsub::subscribe(&mut p, session, shared, true),
        "unsubscribe" => Ok(pubsub::unsubscribe(&mut p, session, shared, false)),
        "punsubscribe" => Ok(pubsub::unsubscribe(&mut p, session, shared, true)),
        "publish" => pubsub::publish(&mut p, shared).map(Outcome::from),
        // In the table but with no handler: a bug, reported as an error.
        _ => Err(ParseError::Other(format!("ERR command '{name}' is not implemented"))),
    };
    result.unwrap_or_else(|e| Reply::error(e.to_string()).into())
}

/// Commands of the form `NAME pool token` on an existing token.
const BY_TOKEN: [&str; 4] = ["token.unblock", "token.keepalive", "token.info", "token.del"];

/// The pool a `NAME pool token` request names, if it is one of [`BY_TOKEN`].
fn by_token(args: &[Bytes]) -> Option<&Bytes> {
    let [name, pool, _] = args else { return None };
    BY_TOKEN.iter().any(|c| name.eq_ignore_ascii_case(c.as_bytes())).then_some(pool)
}

/// Lets the store start loading what the batch's requests on existing
/// tokens will touch, before any of them runs (see [`crate::store::Store::prefetch`]).
/// Runs of requests on the same pool go to the store together. Only a hint:
/// requests are still checked and run one by one, in order, by [`execute`].
pub fn prefetch(shared: &Shared, batch: &[Vec<Bytes>]) {
    let mut i = 0;
    while i < batch.len() {
        let Some(pool) = by_token(&batch[i]) else {
            i += 1;
            continue;
        };
        let run = batch[i..].iter().take_while(|a| by_token(a) == Some(pool)).count();
        shared.store.prefetch(pool, batch[i..i + run].iter().filter_map(|a| token::parse(&a[2])));
        i += run;
    }
}

/// Reads the pool argument: any non-empty string.
pub(crate) fn pool_arg(p: &mut Parse) -> Result<Bytes, ParseError> {
    let pool = p.next_bytes()?;
    if pool.is_empty() {
        return Err(ParseError::Other("ERR invalid pool name: it must not be empty".into()));
    }
    Ok(pool)
}

fn pool_only(p: &mut Parse) -> Result<Bytes, ParseError> {
    let pool = pool_arg(p)?;
    p.finish()?;
    Ok(pool)
}

/// `pool token` arguments. A token that is not a canonical UUID cannot be one
/// the server made: `token` is None and the command answers as for an
/// unknown token.
#[derive(Debug)]
pub struct PoolToken {
    pub pool: Bytes,
    pub token: Option<TokenId>,
}

impl PoolToken {
    pub fn parse(p: &mut Parse) -> Result<PoolToken, ParseError> {
        let pool = pool_arg(p)?;
        let t = p.next_bytes()?;
        p.finish()?;
        Ok(PoolToken { pool, token: token::parse(&t) })
    }
}

/// The reply for a token the pool never had.
pub(crate) fn no_token() -> Reply {
    Reply::error(crate::store::TokenError::NoToken.to_string())
}

/// Longest accepted duration: 100 years in ms. Far beyond any real lease,
/// and it keeps every `now + duration` far from u64 overflow.
pub(crate) const MAX_DURATION_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The `EX seconds | PX milliseconds` option, with SET's rules: repeated
/// EX (or PX) — the last one wins; EX with PX — syntax error; a value that is
/// not an integer — "not an integer"; zero, negative or absurd — "invalid
/// expire time in '<cmd>' command".
pub(crate) struct TtlOption {
    cmd: &'static str,
    unit: Option<u8>,
    ms: Option<u64>,
}

impl TtlOption {
    pub fn new(cmd: &'static str) -> TtlOption {
        TtlOption { cmd, unit: None, ms: None }
    }

    /// If `opt` is EX or PX, reads its value and returns true.
    pub fn try_parse(&mut self, opt: &str, p: &mut Parse) -> Result<bool, ParseError> {
        let (unit, scale) = match opt {
            "EX" => (b'e', 1000),
            "PX" => (b'p', 1),
            _ => return Ok(false),
        };
        if self.unit.is_some_and(|u| u != unit) {
            return Err(ParseError::Syntax);
        }
        let v = p.next_i64()?;
        let invalid = || ParseError::Other(format!("ERR invalid expire time in '{}' command", self.cmd));
        let ms = v.checked_mul(scale).filter(|&ms| ms > 0 && ms <= MAX_DURATION_MS).ok_or_else(invalid)?;
        self.unit = Some(unit);
        self.ms = Some(ms as u64);
        Ok(true)
    }

    /// The duration in ms, if given.
    pub fn value(&self) -> Option<u64> {
        self.ms
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cursor over string arguments (tests).
    pub fn args(a: &[&str]) -> Parse {
        Parse::new(a.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect())
    }

    #[test]
    fn arity_rules() {
        assert!(arity_ok(2, 2));
        assert!(!arity_ok(2, 3));
        assert!(arity_ok(-2, 5));
        assert!(!arity_ok(-2, 1));
    }

    #[test]
    fn unknown_command_wording_matches_redis() {
        let r = unknown_command(&[Bytes::from("foo"), Bytes::from("a"), Bytes::from("b")]);
        assert_eq!(r, Reply::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' "));
        let r = unknown_command(&[Bytes::from("foo")]);
        assert_eq!(r, Reply::error("ERR unknown command 'foo', with args beginning with: "));
    }

    #[test]
    fn ttl_bounds() {
        let mut t = TtlOption::new("x");
        assert!(t.try_parse("EX", &mut args(&["9223372036854775807"])).is_err());
        assert!(t.try_parse("PX", &mut args(&["1"])).unwrap());
        assert_eq!(t.value(), Some(1));
        assert!(!t.try_parse("COUNT", &mut args(&["1"])).unwrap());
    }
}

//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
//!
//! As in Redis: after MULTI, commands are checked and queued (`+QUEUED`);
//! one that fails to queue (unknown, arity, syntax) makes EXEC answer
//! `-EXECABORT` and run nothing. EXEC runs the queue atomically — the
//! shards of every pool it names are locked together (see
//! [`crate::store::Txn`]), so no other client sees a state in between, even
//! across shards — and answers an array of the replies; its changes reach
//! the backing store as one unit, written in one atomic step. A WATCHed
//! pool that changed since WATCH makes EXEC answer a null array and run
//! nothing. A blocking option inside MULTI does not block (as BLPOP inside
//! MULTI). tokend checks every argument when a command is queued, not only
//! its arity, because its commands validate every argument before they
//! change anything: a syntax error aborts the transaction.

use super::session::Multi;
use super::spec::{CommandSpec, Flags};
use super::{Call, Ctx, Outcome, Tokens};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use bytes::Bytes;

/// Queues a request inside MULTI, after checking it.
pub(super) fn queue(ctx: &Ctx, m: &mut Multi, spec: &'static CommandSpec, id: usize, args: Vec<Bytes>) -> Reply {
    if spec.flags.has(Flags::NOT_IN_TXN) || spec.flags.has(Flags::NO_MULTI) {
        ctx.cmdstats.reject(id);
        m.aborted = true;
        return Reply::error("ERR Command not allowed inside a transaction");
    }
    if let Some(check) = spec.check {
        let mut p = Parse::after(&args, spec.depth());
        if let Err(e) = check(&mut p, ctx) {
            ctx.cmdstats.reject(id);
            m.aborted = true;
            return Reply::error(e.to_string());
        }
    }
    m.queued.push((spec, id, args));
    Reply::status("QUEUED")
}

/// `MULTI`.
pub fn multi(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    if c.session.multi.is_some() {
        return Ok(Reply::error("ERR MULTI calls can not be nested").into());
    }
    c.session.multi = Some(Multi::default());
    c.session.update_meta(|m| m.multi = Some(0));
    Ok(Reply::ok().into())
}

/// `DISCARD`.
pub fn discard(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    if c.session.multi.take().is_none() {
        return Ok(Reply::error("ERR DISCARD without MULTI").into());
    }
    c.session.update_meta(|m| m.multi = None);
    c.session.unwatch_all(c.ctx);
    Ok(Reply::ok().into())
}

/// `WATCH pool [pool ...]`.
pub fn watch(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    if c.session.multi.is_some() {
        return Ok(Reply::error("ERR WATCH inside MULTI is not allowed").into());
    }
    while let Ok(pool) = p.next_bytes() {
        if c.session.watched.iter().any(|(w, _)| *w == pool) {
            continue;
        }
        let version = c.ctx.store.watch(&pool);
        c.session.watched.push((Bytes::copy_from_slice(&pool), version));
    }
    Ok(Reply::ok().into())
}

/// `UNWATCH`.
pub fn unwatch(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    c.session.unwatch_all(c.ctx);
    Ok(Reply::ok().into())
}

/// `EXEC`.
pub fn exec(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let Some(m) = c.session.multi.take() else {
        return Ok(Reply::error("ERR EXEC without MULTI").into());
    };
    c.session.update_meta(|m| m.multi = None);
    let ctx = c.ctx;
    let watched = std::mem::take(&mut c.session.watched);
    let reply = run_queued(ctx, c.session, m, &watched);
    for (pool, _) in watched {
        ctx.store.unwatch(&pool);
    }
    Ok(reply.into())
}

/// Runs a queued transaction with every shard it names locked.
fn run_queued(ctx: &Ctx, session: &mut super::Session, m: Multi, watched: &[(Bytes, u64)]) -> Reply {
    if m.aborted {
        return Reply::error("EXECABORT Transaction discarded because of previous errors.");
    }
    // Cluster mode: one slot for the whole transaction, served here now
    // (it may have moved since the commands were queued).
    if let Some(cl) = ctx.cluster() {
        let mut slots = m.queued.iter().flat_map(|(s, _, args)| s.keys(args)).map(|k| crate::cluster::keyslot(k));
        if let Some(first) = slots.next() {
            if slots.any(|s| s != first) {
                return Reply::error("CROSSSLOT Keys in request don't hash to the same slot");
            }
            if let Some(e) = cl.route(first).error() {
                return Reply::Error(e);
            }
        }
    }
    let writes = m.queued.iter().any(|(s, _, _)| s.flags.has(Flags::WRITE));
    if writes && let Some(d) = ctx.durability() {
        if let Err(msg) = d.admit() {
            return Reply::Error(msg);
        }
        session.wrote = true;
    }
    let whole = m.queued.iter().any(|(s, _, _)| s.flags.has(Flags::WHOLE_STORE));
    let pools: Vec<&[u8]> = m
        .queued
        .iter()
        .flat_map(|(s, _, args)| s.keys(args))
        .map(|k| &k[..])
        .chain(watched.iter().map(|(p, _)| &p[..]))
        .collect();
    let mut txn = ctx.store.txn(pools, whole);
    for (pool, version) in watched {
        if !matches!(txn.unchanged_since(pool, *version), Ok(true)) {
            return Reply::NullArray;
        }
    }
    let mut replies = Vec::with_capacity(m.queued.len());
    // Places in a queue, given up once the locks are released (giving one
    // up takes its shard's lock).
    let mut given_up = Vec::new();
    for (spec, id, args) in m.queued {
        session.note_command(spec.name);
        let out = super::run(spec, id, &args, &mut Call { ctx, session, tokens: Tokens::Txn(&mut txn) });
        replies.push(match out {
            Outcome::Reply(r) | Outcome::Close(r) => r,
            Outcome::Replies(rs) => Reply::Array(rs),
            // A transaction never blocks (Tokens::Txn acquires without
            // waiting); were it asked to, the place in the queue is given
            // up when `waiting` drops, after the transaction, and the
            // reply is nil.
            Outcome::Block { waiting, .. } => {
                given_up.push(waiting);
                Reply::Null
            }
            // Never queued (SHUTDOWN is refused inside MULTI).
            Outcome::Hangup => Reply::Null,
        });
    }
    drop(txn);
    drop(given_up);
    Reply::Array(replies)
}

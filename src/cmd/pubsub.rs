//! `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH` and
//! `PUBSUB` on the server's own broker, which also carries the keyspace
//! notifications.

use super::{Call, Outcome, Session};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use bytes::Bytes;

fn confirm(kind: &'static str, name: Option<Bytes>, count: usize) -> Reply {
    Reply::Push(vec![Reply::bulk_static(kind), name.map_or(Reply::Null, Reply::Bulk), Reply::Integer(count as i64)])
}

fn sync_counts(s: &Session) {
    let (sub, psub) = (s.channels.len(), s.patterns.len());
    s.update_meta(|m| {
        m.sub = sub;
        m.psub = psub;
    });
}

/// `SUBSCRIBE channel [channel ...]`.
pub fn subscribe(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    subscribe_to(p, c, false)
}

/// `PSUBSCRIBE pattern [pattern ...]`.
pub fn psubscribe(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    subscribe_to(p, c, true)
}

/// `UNSUBSCRIBE [channel ...]`.
pub fn unsubscribe(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    Ok(unsubscribe_from(p, c, false))
}

/// `PUNSUBSCRIBE [pattern ...]`.
pub fn punsubscribe(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    Ok(unsubscribe_from(p, c, true))
}

fn subscribe_to(p: &mut Parse, c: &mut Call, pattern: bool) -> Result<Outcome, ParseError> {
    let (shared, s) = (c.ctx, &mut *c.session);
    if s.pubsub_rx.is_none() {
        s.pubsub_rx = Some(shared.pubsub.attach(s.id, s.proto));
    }
    let mut replies = Vec::new();
    while let Ok(name) = p.next_bytes() {
        let name = Bytes::copy_from_slice(&name);
        let set = if pattern { &mut s.patterns } else { &mut s.channels };
        if set.insert(name.clone()) {
            shared.pubsub.subscribe(s.id, name.clone(), pattern);
        }
        replies.push(confirm(if pattern { "psubscribe" } else { "subscribe" }, Some(name), s.subscriptions()));
    }
    sync_counts(s);
    Ok(Outcome::Replies(replies))
}

/// Unsubscribes from the names given, or from all of that kind when none are.
fn unsubscribe_from(p: &mut Parse, c: &mut Call, pattern: bool) -> Outcome {
    let (shared, s) = (c.ctx, &mut *c.session);
    let kind = if pattern { "punsubscribe" } else { "unsubscribe" };
    let mut names = Vec::new();
    while let Ok(n) = p.next_bytes() {
        names.push(n);
    }
    if names.is_empty() {
        names = if pattern { s.patterns.iter().cloned().collect() } else { s.channels.iter().cloned().collect() };
    }
    if names.is_empty() {
        return Outcome::Reply(confirm(kind, None, s.subscriptions()));
    }
    let mut replies = Vec::new();
    for name in names {
        let set = if pattern { &mut s.patterns } else { &mut s.channels };
        if set.remove(&name) {
            shared.pubsub.unsubscribe(s.id, &name, pattern);
        }
        replies.push(confirm(kind, Some(name), s.subscriptions()));
    }
    sync_counts(s);
    Outcome::Replies(replies)
}

/// `PUBLISH channel message`: the number of clients that received it.
pub fn publish(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let channel = p.next_bytes()?;
    let msg = p.next_bytes()?;
    p.finish()?;
    let here = c.ctx.pubsub.publish(&channel, &msg);
    // Cluster mode: every node's subscribers get it, as in Redis Cluster
    // (the count is this node's, as there).
    if c.ctx.cluster().is_some()
        && let Some(d) = c.ctx.durability()
    {
        d.relay(channel, msg);
    }
    Ok(Reply::Integer(here as i64).into())
}

/// `PUBSUB CHANNELS [pattern]`.
pub fn pubsub_channels(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let pattern = if p.remaining() > 0 { Some(p.next_bytes()?) } else { None };
    p.finish()?;
    Ok(Reply::Array(c.ctx.pubsub.active_channels(pattern.as_deref()).into_iter().map(Reply::Bulk).collect()).into())
}

/// `PUBSUB NUMSUB [channel ...]`: a flat list of channel, count pairs (as
/// Redis answers, in RESP3 too).
pub fn pubsub_numsub(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut out = Vec::new();
    while p.remaining() > 0 {
        let ch = p.next_bytes()?;
        let n = c.ctx.pubsub.subscribers_of(&ch);
        out.push(Reply::Bulk(ch));
        out.push(Reply::Integer(n as i64));
    }
    Ok(Reply::Array(out).into())
}

/// `PUBSUB NUMPAT`.
pub fn pubsub_numpat(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    p.finish()?;
    Ok(Reply::Integer(c.ctx.pubsub.patterns_subscribed() as i64).into())
}

/// `PUBSUB HELP`.
pub fn pubsub_help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::help(&[
        "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CHANNELS [<pattern>]",
        "    Return the currently active channels matching a <pattern> (default: '*').",
        "NUMPAT",
        "    Return number of subscriptions to patterns.",
        "NUMSUB [<channel> ...]",
        "    Return the number of subscribers for the specified channels, excluding",
        "    pattern subscriptions(default: no channels).",
        "HELP",
        "    Print this help.",
    ])
    .into())
}

//! Redis's operator commands: `SLOWLOG`, `LATENCY`, `ROLE`, `SHUTDOWN`.
//! Monitoring tools and redis-cli users call them as they would on Redis,
//! and get the same reply shapes.

use super::{Call, Outcome, table};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;

fn help(lines: &[&'static str]) -> Result<Outcome, ParseError> {
    Ok(Reply::Array(lines.iter().map(|l| Reply::status(l)).collect()).into())
}

/// `SLOWLOG GET [count]`: the newest `count` entries (10 by default; a
/// negative count: all), each `[id, unix time, µs, [args], client address,
/// client name]`.
pub fn slowlog_get(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let n = match p.next_i64() {
        Ok(n) if n >= -1 => usize::try_from(n).ok(),
        Err(ParseError::EndOfStream) => Some(10),
        _ => return Ok(Reply::error("ERR count should be greater than or equal to -1").into()),
    };
    p.finish()?;
    let entries = c.ctx.cmdstats.slowlog.get(n);
    Ok(Reply::Array(
        entries
            .into_iter()
            .map(|e| {
                Reply::Array(vec![
                    Reply::Integer(e.id as i64),
                    Reply::Integer(e.at as i64),
                    Reply::Integer(e.usec as i64),
                    Reply::Array(e.args.into_iter().map(Reply::Bulk).collect()),
                    Reply::bulk(e.addr),
                    Reply::bulk(e.name),
                ])
            })
            .collect(),
    )
    .into())
}

/// `SLOWLOG LEN`.
pub fn slowlog_len(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Integer(c.ctx.cmdstats.slowlog.len() as i64).into())
}

/// `SLOWLOG RESET`.
pub fn slowlog_reset(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    c.ctx.cmdstats.slowlog.reset();
    Ok(Reply::ok().into())
}

/// `SLOWLOG HELP`.
pub fn slowlog_help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    help(&[
        "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET [<count>]",
        "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
        "    Entries are made of:",
        "    id, timestamp, time in microseconds, arguments array, client IP and port,",
        "    client name",
        "LEN",
        "    Return the length of the slowlog.",
        "RESET",
        "    Reset the slowlog.",
        "HELP",
        "    Prints this help.",
    ])
}

/// `LATENCY LATEST`: `[event, unix time, latest ms, max ms]` per event.
pub fn latency_latest(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let rows = c.ctx.store.latency().latest();
    Ok(Reply::Array(
        rows.into_iter()
            .map(|(event, at, ms, max)| {
                Reply::Array(vec![
                    Reply::bulk_static(event),
                    Reply::Integer(at as i64),
                    Reply::Integer(ms as i64),
                    Reply::Integer(max as i64),
                ])
            })
            .collect(),
    )
    .into())
}

/// `LATENCY HISTORY event`: `[unix time, ms]` per second that had one.
pub fn latency_history(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let event = p.next_string()?;
    let rows = c.ctx.store.latency().history(&event);
    Ok(Reply::Array(
        rows.into_iter()
            .map(|(at, ms)| Reply::Array(vec![Reply::Integer(at as i64), Reply::Integer(ms as i64)]))
            .collect(),
    )
    .into())
}

/// `LATENCY RESET [event ...]`: how many events were reset.
pub fn latency_reset(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut events = Vec::new();
    while let Ok(e) = p.next_string() {
        events.push(e);
    }
    Ok(Reply::Integer(c.ctx.store.latency().reset(&events) as i64).into())
}

/// `LATENCY HISTOGRAM [command ...]`: per command, its calls and the
/// cumulative count of calls at or under each power of two of µs, as Redis
/// 7 answers it.
pub fn latency_histogram(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut names = Vec::new();
    while let Ok(n) = p.next_string() {
        names.push(n.to_ascii_lowercase());
    }
    let totals = c.ctx.cmdstats.since_reset();
    let mut out = Vec::new();
    for (spec, t) in table::flat().iter().zip(totals) {
        if !names.is_empty() && !names.iter().any(|n| n == spec.name) {
            continue;
        }
        let Some(h) = t.hist.filter(|h| h.count() > 0) else { continue };
        let mut buckets = Vec::new();
        let mut us = 1u64;
        loop {
            let at = h.cumulative(&[us * 1000])[0];
            buckets.push((Reply::Integer(us as i64), Reply::Integer(at as i64)));
            if at >= h.count() || us >= 1 << 40 {
                break;
            }
            us *= 2;
        }
        out.push((
            Reply::bulk_static(spec.name),
            Reply::Map(vec![
                (Reply::bulk_static("calls"), Reply::Integer(h.count() as i64)),
                (Reply::bulk_static("histogram_usec"), Reply::Map(buckets)),
            ]),
        ));
    }
    Ok(Reply::Map(out).into())
}

/// `LATENCY HELP`.
pub fn latency_help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    help(&[
        "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "HISTORY <event>",
        "    Return time-latency samples for the <event> class.",
        "LATEST",
        "    Return the latest latency samples for all events.",
        "RESET [<event> ...]",
        "    Reset latency data of one or more <event> classes.",
        "    (default: reset all data for all event classes)",
        "HISTOGRAM [COMMAND ...]",
        "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
        "    If no commands are specified then all histograms are replied.",
        "HELP",
        "    Prints this help.",
        "Events: command, fast-command, expire-late (an expiry that fired late).",
    ])
}

/// `ROLE`: tokend answers as a master without replicas.
pub fn role(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Array(vec![Reply::bulk_static("master"), Reply::Integer(0), Reply::Array(Vec::new())]).into())
}

/// `SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]`: the same graceful stop
/// as SIGTERM — every connection finishes the request it is on, and the
/// backing Redis gets every change acknowledged so far, whichever option
/// is given (a change a client was told about is never dropped). The
/// connection closes without a reply, as Redis's does.
pub fn shutdown(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let (mut save, mut nosave, mut abort) = (false, false, false);
    while let Ok(opt) = p.next_string() {
        match opt.to_ascii_uppercase().as_str() {
            "SAVE" => save = true,
            "NOSAVE" => nosave = true,
            "NOW" | "FORCE" => {}
            "ABORT" => abort = true,
            _ => return Err(ParseError::Syntax),
        }
    }
    if (save && nosave) || (abort && (save || nosave)) {
        return Err(ParseError::Syntax);
    }
    if abort {
        // A graceful stop is not abortable once it began, and none is
        // pending otherwise.
        return Ok(Reply::error("ERR Errors trying to SHUTDOWN. Check logs.").into());
    }
    tracing::info!(client = %c.session.meta.addr, "SHUTDOWN asked by a client");
    c.ctx.shutdown.cancel();
    Ok(Outcome::Hangup)
}

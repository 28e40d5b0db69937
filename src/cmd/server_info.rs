//! Server commands: INFO, DBSIZE, TIME, CONFIG.

use super::{Call, Ctx, Outcome};
use crate::notify::EventClasses;
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use crate::store::{ExpiryTotals, Totals, lazyfree_counts};
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The Redis version tokend answers as, for clients that gate features on
/// it: tokend implements RESP3, HELLO and COMMAND DOCS as Redis 7.0 does.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// INFO sections in the order they print, and whether `INFO` without an
/// argument (`default`) prints them: as in Redis, the per-command sections
/// only when asked for, or with `all` / `everything`.
const SECTIONS: [(&str, bool); 12] = [
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("persistence", true),
    ("stats", true),
    ("replication", true),
    ("tokens", true),
    ("expiry", true),
    ("commandstats", false),
    ("latencystats", false),
    ("cluster", true),
    ("keyspace", true),
];

/// `INFO [section ...]`.
pub fn info(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut wanted: Vec<String> = Vec::new();
    while let Ok(s) = p.next_string() {
        wanted.push(s.to_ascii_lowercase());
    }
    let all = wanted.iter().any(|w| matches!(w.as_str(), "all" | "everything"));
    let default = wanted.is_empty() || wanted.iter().any(|w| w == "default");
    let shown: Vec<&str> = SECTIONS
        .iter()
        .filter(|(sec, in_default)| all || (default && *in_default) || wanted.iter().any(|w| w == sec))
        .map(|(sec, _)| *sec)
        .collect();
    // What the shown sections need from the shards, read here through
    // `c.tokens` (inside EXEC the transaction holds every shard's lock
    // already), and only if shown: each takes every shard's lock in turn.
    let needs = |secs: &[&str]| shown.iter().any(|s| secs.contains(s));
    let store = StoreFigures {
        totals: if needs(&["clients", "tokens", "keyspace"]) { c.tokens.totals()? } else { Totals::default() },
        pending_timers: if needs(&["stats", "expiry"]) { c.tokens.pending_timers()? } else { 0 },
        expiry: if needs(&["expiry"]) {
            c.ctx.store.since_reset(c.tokens.expiry_totals()?)
        } else {
            ExpiryTotals::default()
        },
    };
    let mut out = String::new();
    for sec in shown {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        section(sec, c.ctx, &store, &mut out);
    }
    Ok(Reply::Verbatim(out.into()).into())
}

/// Resident set size in bytes, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// What INFO shows from the store's shards (zeros where no section shown
/// needs them).
struct StoreFigures {
    totals: Totals,
    pending_timers: usize,
    /// Since the last `CONFIG RESETSTAT`.
    expiry: ExpiryTotals,
}

fn section(name: &str, ctx: &Ctx, store: &StoreFigures, out: &mut String) {
    let totals = &store.totals;
    let mut title = name.to_string();
    title[..1].make_ascii_uppercase();
    let _ = write!(out, "# {title}\r\n");
    let mut kv = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    match name {
        "server" => {
            let up = ctx.started.elapsed().as_secs();
            kv("redis_version", &REDIS_COMPAT_VERSION);
            kv("tokend_version", &env!("CARGO_PKG_VERSION"));
            kv("redis_mode", &if ctx.cluster().is_some() { "cluster" } else { "standalone" });
            kv("os", &std::env::consts::OS);
            kv("arch_bits", &(usize::BITS));
            kv("process_id", &std::process::id());
            kv("tcp_port", &ctx.settings.port);
            kv("uptime_in_seconds", &up);
            kv("uptime_in_days", &(up / 86400));
            kv("shards", &ctx.settings.shards);
        }
        "clients" => {
            kv("connected_clients", &ctx.clients.len());
            kv("maxclients", &ctx.settings.maxclients);
            kv("client_recent_max_output_buffer", &ctx.pubsub.largest_queue());
            let (ch, pat) = ctx.pubsub.counts();
            kv("pubsub_channels", &ch);
            kv("pubsub_patterns", &pat);
            kv("blocked_clients", &totals.blocked);
        }
        "memory" => {
            let rss = rss_bytes();
            kv("used_memory_rss", &rss);
            kv("used_memory_rss_human", &format!("{:.2}M", rss as f64 / 1048576.0));
            kv("maxmemory", &0);
            kv("lazyfree_pending_objects", &lazyfree_counts().0);
        }
        "cluster" => {
            kv("cluster_enabled", &u8::from(ctx.cluster().is_some()));
            if let Some(cl) = ctx.cluster() {
                let (mine, assigned) = cl.counts();
                kv("cluster_my_id", &cl.me().id);
                kv("cluster_nodes", &cl.nodes().len());
                kv("cluster_slots_served", &mine);
                kv("cluster_slots_assigned", &assigned);
                kv("cluster_slots_moving", &cl.moving());
                kv("cluster_serving", &u8::from(cl.serving()));
            }
        }
        "persistence" => {
            kv("loading", &u8::from(ctx.is_loading()));
            kv("backing_store", &ctx.settings.durability.map_or("none", |_| "redis"));
            kv("durability", &ctx.settings.durability.unwrap_or("none"));
            if let Some(d) = ctx.durability() {
                let st = d.status();
                kv("backing_link_status", &if st.down { "down" } else { "up" });
                kv("backing_backlog", &st.backlog);
                kv("backing_refused_changes", &st.refused);
                kv("backing_data_lost", &st.lost);
            }
            kv("rdb_changes_since_last_save", &0);
            kv("aof_enabled", &0);
        }
        "stats" => {
            let st = ctx.stats.since_reset();
            kv("total_connections_received", &st.connections_received);
            kv("total_commands_processed", &st.commands_processed);
            kv("rejected_connections", &st.rejected_connections);
            let (expired, lease_expired) = ctx.store.counters_since_reset();
            kv("expired_tokens", &expired);
            kv("lease_expired_tokens", &lease_expired);
            kv("pending_timers", &store.pending_timers);
            kv("lazyfreed_objects", &lazyfree_counts().1);
            let poll = ctx.idle_poll.counts();
            kv("idle_poll_hits", &poll.hits);
            kv("idle_poll_sleeps", &poll.sleeps);
            kv("idle_poll_ceded", &poll.ceded);
            kv("idle_poll_window_us", &poll.window_us);
            kv("idle_naps", &poll.naps);
            kv("idle_naps_dry", &poll.naps_dry);
        }
        "replication" => {
            kv("role", &"master");
            kv("connected_slaves", &0);
        }
        "expiry" => {
            let exp = &store.expiry;
            kv("expiries_expired", &exp.expired);
            kv("expiries_leaseexpired", &exp.lease_expired);
            // How late lifetimes and leases ended, µs after their deadline.
            let late = &exp.lateness;
            kv("expiry_lateness_count", &late.count());
            kv("expiry_lateness_p50_usec", &(late.percentile(50.0) as u64));
            kv("expiry_lateness_p99_usec", &(late.percentile(99.0) as u64));
            kv("expiry_lateness_p99_9_usec", &(late.percentile(99.9) as u64));
            kv("expiry_lateness_max_usec", &late.max());
            kv("expiry_subscriber_waits", &exp.subscriber_waits);
            kv("expiry_subscriber_wait_usec", &exp.subscriber_wait_us);
            kv("pending_timers", &store.pending_timers);
        }
        "commandstats" => {
            for (spec, t) in super::table::flat().iter().zip(ctx.cmdstats.since_reset()) {
                if t.calls == 0 && t.failed == 0 && t.rejected == 0 {
                    continue;
                }
                let usec = t.nsec / 1000;
                let per_call = if t.calls == 0 { 0.0 } else { t.nsec as f64 / 1000.0 / t.calls as f64 };
                kv(
                    &format!("cmdstat_{}", spec.name),
                    &format_args!(
                        "calls={},usec={usec},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}",
                        t.calls, t.rejected, t.failed
                    ),
                );
            }
        }
        "latencystats" => {
            for (spec, t) in super::table::flat().iter().zip(ctx.cmdstats.since_reset()) {
                let Some(h) = t.hist.filter(|h| h.count() > 0) else { continue };
                let us = |p: f64| h.percentile(p) / 1000.0;
                kv(
                    &format!("latency_percentiles_usec_{}", spec.name),
                    &format_args!("p50={:.3},p99={:.3},p99.9={:.3}", us(50.0), us(99.0), us(99.9)),
                );
            }
        }
        "tokens" => {
            kv("pools", &totals.pools);
            kv("tokens_total", &totals.live);
            kv("tokens_free", &(totals.live - totals.assigned));
            kv("tokens_assigned", &totals.assigned);
            kv("tokens_expired_remembered", &totals.expired_remembered);
            kv("blocked_waiters", &totals.blocked);
        }
        "keyspace" => {
            let (pools, live) = (totals.pools, totals.live);
            if pools > 0 {
                kv("db0", &format!("keys={pools},expires={pools},avg_ttl=0,tokens={live}"));
            }
        }
        _ => {}
    }
}

/// `DBSIZE`: the number of pools (each pool is one key).
pub fn dbsize(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Integer(c.tokens.totals()?.pools as i64).into())
}

/// `TIME`: [seconds, microseconds] as bulk strings.
pub fn time(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(Reply::Array(vec![Reply::bulk(d.as_secs().to_string()), Reply::bulk(d.subsec_micros().to_string())]).into())
}

/// Every setting with its current value, as `CONFIG GET` shows it.
fn parameters(ctx: &Ctx) -> Vec<(&'static str, String)> {
    let mut v = ctx.settings.params.clone();
    for (k, val) in v.iter_mut() {
        match *k {
            "port" => *val = ctx.settings.port.to_string(),
            "notify-keyspace-events" => *val = ctx.store.notifier().classes().to_flags(),
            "slowlog-log-slower-than" => *val = ctx.cmdstats.slowlog.slower_than().to_string(),
            "slowlog-max-len" => *val = ctx.cmdstats.slowlog.max_len().to_string(),
            "latency-monitor-threshold" => *val = ctx.store.latency().threshold_ms().to_string(),
            "idle-poll-us" => *val = ctx.idle_poll.limit_us().to_string(),
            "idle-nap-us" => *val = ctx.idle_poll.nap_us().to_string(),
            "client-output-buffer-limit" => *val = output_limits(ctx).to_redis(),
            _ => {}
        }
    }
    v
}

/// The client output buffer limits in force.
fn output_limits(ctx: &Ctx) -> crate::config::OutputBufferLimit {
    let replica = *ctx.replica_output_limit.lock().unwrap_or_else(|e| e.into_inner());
    crate::config::OutputBufferLimit { replica, pubsub: ctx.pubsub.queue_limit() }
}

/// `CONFIG GET pattern [pattern ...]`.
pub fn config_get(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut pats = Vec::new();
    while let Ok(pat) = p.next_bytes() {
        pats.push(pat.to_vec());
    }
    let pairs = parameters(c.ctx)
        .into_iter()
        .filter(|(k, _)| pats.iter().any(|pat| crate::glob::glob_match(pat, k.as_bytes(), true)))
        .map(|(k, v)| (Reply::bulk_static(k), Reply::bulk(v)))
        .collect();
    Ok(Reply::Map(pairs).into())
}

/// The settings that change at run time, as `CONFIG SET` takes them.
const SETTABLE: [&str; 7] = [
    "notify-keyspace-events",
    "slowlog-log-slower-than",
    "slowlog-max-len",
    "latency-monitor-threshold",
    "idle-poll-us",
    "idle-nap-us",
    "client-output-buffer-limit",
];

/// A checked `CONFIG SET` value.
enum NewValue {
    Classes(EventClasses),
    SlowerThan(i64),
    MaxLen(usize),
    Threshold(u64),
    IdlePoll(u64),
    IdleNap(u64),
    OutputLimits(crate::config::OutputBufferLimit),
}

/// `CONFIG SET parameter value [parameter value ...]`: every pair is checked
/// before any is applied, as in Redis 7.
pub fn config_set(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let mut pairs = Vec::new();
    while p.remaining() > 0 {
        let key = p.next_string()?.to_ascii_lowercase();
        let Ok(val) = p.next_string() else {
            return Ok(Reply::error("ERR wrong number of arguments for 'config|set' command").into());
        };
        pairs.push((key, val));
    }
    let mut checked = Vec::new();
    for (key, val) in &pairs {
        if !SETTABLE.contains(&key.as_str()) {
            return Ok(
                Reply::error(format!("ERR Unknown option or number of arguments for CONFIG SET - '{key}'")).into()
            );
        }
        if pairs.iter().filter(|(k, _)| k == key).count() > 1 {
            return Ok(Reply::error(format!("ERR CONFIG SET failed - duplicate parameter '{key}'")).into());
        }
        let bad = |e: &dyn std::fmt::Display| {
            Reply::error(format!("ERR CONFIG SET failed (possibly related to argument '{key}') - {e}"))
        };
        let v = match key.as_str() {
            "notify-keyspace-events" => EventClasses::parse(val).map(NewValue::Classes).map_err(|e| bad(&e)),
            "slowlog-log-slower-than" => {
                val.parse().map(NewValue::SlowerThan).map_err(|_| bad(&"argument couldn't be parsed into an integer"))
            }
            "slowlog-max-len" => {
                val.parse().map(NewValue::MaxLen).map_err(|_| bad(&"argument couldn't be parsed into an integer"))
            }
            "idle-poll-us" if c.ctx.settings.rt_priority > 0 && val.parse::<u64>().is_ok_and(|us| us > 0) => {
                Err(bad(&format!("polling cannot be used with rt-priority ({})", crate::config::RT_POLL_REASON)))
            }
            "idle-poll-us" => idle_us(val, crate::idle_poll::MAX_LIMIT_US, c.ctx.idle_poll.is_running())
                .map(NewValue::IdlePoll)
                .map_err(|e| bad(&e)),
            "idle-nap-us" => idle_us(val, crate::idle_poll::MAX_NAP_US, c.ctx.idle_poll.is_hooked())
                .map(NewValue::IdleNap)
                .map_err(|e| bad(&e)),
            "client-output-buffer-limit" => crate::config::OutputBufferLimit::parse(val, output_limits(c.ctx))
                .map(NewValue::OutputLimits)
                .map_err(|e| bad(&e)),
            _ => val.parse().map(NewValue::Threshold).map_err(|_| bad(&"argument couldn't be parsed into an integer")),
        };
        match v {
            Ok(v) => checked.push(v),
            Err(r) => return Ok(r.into()),
        }
    }
    for v in checked {
        match v {
            NewValue::Classes(classes) => c.ctx.store.notifier().set_classes(classes),
            NewValue::SlowerThan(us) => c.ctx.cmdstats.slowlog.set_slower_than(us),
            NewValue::MaxLen(n) => c.ctx.cmdstats.slowlog.set_max_len(n),
            NewValue::Threshold(ms) => c.ctx.store.latency().set_threshold_ms(ms),
            NewValue::IdlePoll(us) => c.ctx.idle_poll.set_limit_us(us),
            NewValue::IdleNap(us) => c.ctx.idle_poll.set_nap_us(us),
            NewValue::OutputLimits(l) => {
                c.ctx.pubsub.set_queue_limit(l.pubsub);
                *c.ctx.replica_output_limit.lock().unwrap_or_else(|e| e.into_inner()) = l.replica;
            }
        }
    }
    Ok(Reply::ok().into())
}

/// An `idle-poll-us` or `idle-nap-us` value: at most `max`, and above 0
/// only where a poller runs (a single-threaded runtime).
fn idle_us(val: &str, max: u64, possible: bool) -> Result<u64, String> {
    match val.parse::<u64>() {
        Ok(us) if us > 0 && !possible => Err("polling and napping need a single-threaded runtime (--threads 1)".into()),
        Ok(us) if us <= max => Ok(us),
        Ok(_) => Err(format!("argument must be between 0 and {max} inclusive")),
        Err(_) => Err("argument couldn't be parsed into an integer".into()),
    }
}

/// `CONFIG RESETSTAT`: the counters INFO stats shows go back to zero.
pub fn config_resetstat(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    c.ctx.stats.reset();
    c.ctx.cmdstats.reset();
    c.ctx.store.reset_counters_to(c.tokens.expiry_totals()?);
    Ok(Reply::ok().into())
}

/// `CONFIG HELP`.
pub fn config_help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::help(&[
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern>",
        "    Return parameters matching the glob-like <pattern> and their values.",
        "SET <directive> <value>",
        "    Set the configuration <directive> to <value> (notify-keyspace-events,",
        "    slowlog-log-slower-than, slowlog-max-len, latency-monitor-threshold,",
        "    idle-poll-us, idle-nap-us, client-output-buffer-limit).",
        "RESETSTAT",
        "    Reset statistics reported by the INFO command.",
        "HELP",
        "    Print this help.",
    ])
    .into())
}

//! Server commands: INFO, DBSIZE, TIME, CONFIG.

use crate::notify::EventClasses;
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use crate::server::Shared;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// The Redis version tokend answers as, for clients that gate features on
/// it: tokend implements RESP3, HELLO and COMMAND DOCS as Redis 7.0 does.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// INFO sections, in the order `INFO` (no argument) prints them.
const SECTIONS: [&str; 7] = ["server", "clients", "memory", "persistence", "stats", "tokens", "keyspace"];

/// `INFO [section ...]`: `all`, `everything` and `default` print every section.
pub fn info(p: &mut Parse, shared: &Shared) -> Result<Reply, ParseError> {
    let mut wanted: Vec<String> = Vec::new();
    while let Ok(s) = p.next_string() {
        wanted.push(s.to_ascii_lowercase());
    }
    let all = wanted.is_empty() || wanted.iter().any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let mut out = String::new();
    for sec in SECTIONS {
        if !all && !wanted.iter().any(|w| w == sec) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        section(sec, shared, &mut out);
    }
    Ok(Reply::Verbatim(out.into()))
}

/// Resident set size in bytes, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn section(name: &str, shared: &Shared, out: &mut String) {
    let mut title = name.to_string();
    title[..1].make_ascii_uppercase();
    let _ = write!(out, "# {title}\r\n");
    let mut kv = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    match name {
        "server" => {
            let up = shared.started.elapsed().as_secs();
            kv("redis_version", &REDIS_COMPAT_VERSION);
            kv("tokend_version", &env!("CARGO_PKG_VERSION"));
            kv("redis_mode", &"standalone");
            kv("os", &std::env::consts::OS);
            kv("arch_bits", &(usize::BITS));
            kv("process_id", &std::process::id());
            kv("tcp_port", &shared.port);
            kv("uptime_in_seconds", &up);
            kv("uptime_in_days", &(up / 86400));
            kv("shards", &shared.store.config().shards);
        }
        "clients" => {
            kv("connected_clients", &shared.stats.connected.load(Ordering::Relaxed));
            kv("maxclients", &shared.config.maxclients);
            let (ch, pat) = shared.pubsub.counts();
            kv("pubsub_channels", &ch);
            kv("pubsub_patterns", &pat);
            kv("blocked_clients", &shared.store.totals().4);
        }
        "memory" => {
            let rss = rss_bytes();
            kv("used_memory_rss", &rss);
            kv("used_memory_rss_human", &format!("{:.2}M", rss as f64 / 1048576.0));
            kv("maxmemory", &0);
        }
        "persistence" => {
            kv("loading", &0);
            kv("backing_store", &shared.config.redis.as_deref().map_or("none", |_| "redis"));
            kv("durability", &format!("{:?}", shared.config.durability).to_ascii_lowercase());
            if let Some(sp) = shared.sync_point() {
                let (backlog, down) = sp.status();
                kv("backing_link_status", &if down { "down" } else { "up" });
                kv("backing_backlog", &backlog);
            }
            kv("rdb_changes_since_last_save", &0);
            kv("aof_enabled", &0);
        }
        "stats" => {
            kv("total_connections_received", &shared.stats.connections_received.load(Ordering::Relaxed));
            kv("total_commands_processed", &shared.stats.commands_processed.load(Ordering::Relaxed));
            kv("rejected_connections", &shared.stats.rejected_connections.load(Ordering::Relaxed));
            kv("expired_tokens", &shared.store.counters().0);
            kv("lease_expired_tokens", &shared.store.counters().1);
            kv("pending_timers", &shared.store.pending_timers());
        }
        "tokens" => {
            let (pools, live, assigned, expired, blocked) = shared.store.totals();
            kv("pools", &pools);
            kv("tokens_total", &live);
            kv("tokens_free", &(live - assigned));
            kv("tokens_assigned", &assigned);
            kv("tokens_expired_remembered", &expired);
            kv("blocked_waiters", &blocked);
        }
        "keyspace" => {
            let (pools, live, ..) = shared.store.totals();
            if pools > 0 {
                kv("db0", &format!("keys={pools},expires={pools},avg_ttl=0,tokens={live}"));
            }
        }
        _ => {}
    }
}

/// `DBSIZE`: the number of pools (each pool is one key).
pub fn dbsize(shared: &Shared) -> Reply {
    Reply::Integer(shared.store.totals().0 as i64)
}

/// `TIME`: [seconds, microseconds] as bulk strings.
pub fn time() -> Reply {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Reply::Array(vec![Reply::bulk(d.as_secs().to_string()), Reply::bulk(d.subsec_micros().to_string())])
}

/// The parameters `CONFIG GET` knows, with their current values.
fn parameters(shared: &Shared) -> Vec<(&'static str, String)> {
    let c = &shared.config;
    vec![
        ("bind", c.bind.clone()),
        ("port", shared.port.to_string()),
        ("databases", "1".into()),
        ("maxclients", c.maxclients.to_string()),
        ("timeout", c.timeout.to_string()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("notify-keyspace-events", shared.store.notifier().classes().to_flags()),
        ("proto-max-bulk-len", c.proto_max_bulk_len.to_string()),
        ("token-ttl", c.token_ttl.as_millis().to_string() + "ms"),
        ("lease-ttl", c.lease_ttl.as_millis().to_string() + "ms"),
        ("expired-memory", c.expired_memory.as_millis().to_string() + "ms"),
        ("max-tokens", c.max_tokens.to_string()),
        ("durability", format!("{:?}", c.durability).to_ascii_lowercase()),
    ]
}

/// `CONFIG GET pattern [pattern ...] | SET notify-keyspace-events v | RESETSTAT | HELP`.
pub fn config(p: &mut Parse, shared: &Shared) -> Result<Reply, ParseError> {
    let sub = p.next_string()?.to_ascii_lowercase();
    match sub.as_str() {
        "get" => {
            let mut pats = Vec::new();
            while let Ok(pat) = p.next_bytes() {
                pats.push(pat.to_vec());
            }
            if pats.is_empty() {
                return Ok(Reply::error("ERR wrong number of arguments for 'config|get' command"));
            }
            let pairs = parameters(shared)
                .into_iter()
                .filter(|(k, _)| pats.iter().any(|pat| crate::glob::glob_match(pat, k.as_bytes(), true)))
                .map(|(k, v)| (Reply::bulk_static(k), Reply::bulk(v)))
                .collect();
            Ok(Reply::Map(pairs))
        }
        "set" => {
            let key = p.next_string()?.to_ascii_lowercase();
            let val = p.next_string()?;
            p.finish()?;
            if key != "notify-keyspace-events" {
                return Ok(Reply::error(format!("ERR Unknown option or number of arguments for CONFIG SET - '{key}'")));
            }
            match EventClasses::parse(&val) {
                Ok(c) => {
                    shared.store.notifier().set_classes(c);
                    Ok(Reply::ok())
                }
                Err(e) => Ok(Reply::error(format!(
                    "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - {e}"
                ))),
            }
        }
        "resetstat" => Ok(Reply::ok()),
        "help" => Ok(Reply::Array(
            [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value> (notify-keyspace-events only).",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Reply::status)
            .collect(),
        )),
        _ => Ok(Reply::error(format!("ERR unknown subcommand '{sub}'. Try CONFIG HELP."))),
    }
}

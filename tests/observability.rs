//! What operators watch: `/metrics` scraped over HTTP and read by a real
//! Prometheus text parser, INFO commandstats / latencystats / expiry read by
//! the redis crate's INFO parser, SLOWLOG, LATENCY (an expiry held up by
//! SIGSTOP is reported late), ROLE, SHUTDOWN, and the Grafana dashboard's
//! queries against a real scrape.

mod common;
mod procs;

use common::TestServer;
use procs::{RedisProc, Tokend};
use redis::aio::MultiplexedConnection;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Scrapes `/metrics` and parses it with `prometheus-parse`.
async fn scrape(addr: SocketAddr) -> (String, prometheus_parse::Scrape) {
    let resp = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ctype.as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = resp.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    (text, parsed)
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches = |sample: &&prometheus_parse::Sample| {
        sample.metric == name && labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
    };
    let found: Vec<_> = s.samples.iter().filter(matches).collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {} samples", found.len());
    found.first().map(|sample| match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => {
            panic!("{name} is not a plain value")
        }
    })
}

/// A histogram's (count, sum) and its buckets (le, cumulative count).
fn histogram(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no histogram {name} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Histogram(b) => b.iter().map(|b| (b.less_than, b.count)).collect(),
        other => panic!("{name} is {other:?}"),
    }
}

async fn cmd<T: redis::FromRedisValue>(c: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<T> {
    redis::cmd(args[0]).arg(&args[1..]).query_async(c).await
}

async fn info(c: &mut MultiplexedConnection, section: &str) -> redis::InfoDict {
    redis::cmd("INFO").arg(section).query_async(c).await.unwrap()
}

/// `calls=3,usec=5,...` as a map.
fn fields(line: &str) -> HashMap<String, f64> {
    line.split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("{line}")))
        })
        .collect()
}

/// Polls INFO until `key` reads `want` (bounded).
async fn wait_info(c: &mut MultiplexedConnection, section: &str, key: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Option<u64> = info(c, section).await.get(key);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} is {got:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A known sequence of commands, then exact counts in /metrics and INFO.
/// Each INFO section asked for alone has the fields and the store's counts
/// it has in `INFO everything` (a section reads the shards only when it is
/// shown, so each must still read what it shows).
#[tokio::test]
async fn each_info_section_alone_shows_what_everything_shows() {
    let t = TestServer::start();
    let mut c = t.conn().await;
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "p", "COUNT", "3"]).await.unwrap();
    let _: String = cmd(&mut c, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
    let mut waiter = t.conn().await;
    let blocked = tokio::spawn(async move {
        let _: Option<String> = cmd(&mut waiter, &["TOKEN.ACQUIRE", "empty", "BLOCK", "20000"]).await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while info(&mut c, "clients").await.get::<u64>("blocked_clients") != Some(1) {
        assert!(Instant::now() < deadline, "the ACQUIRE never blocked");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let text: String = cmd(&mut c, &["INFO", "everything"]).await.unwrap();
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("# ") {
            sections.push((title.to_ascii_lowercase(), Vec::new()));
        } else if let Some((k, v)) = line.split_once(':') {
            sections.last_mut().unwrap().1.push((k.to_string(), v.to_string()));
        }
    }
    assert!(sections.len() >= 10, "{text}");
    // Counts that stand still while nothing happens.
    let steady = [
        "blocked_clients",
        "pools",
        "tokens_total",
        "tokens_free",
        "tokens_assigned",
        "blocked_waiters",
        "pending_timers",
        "db0",
        "expiries_expired",
    ];
    for (name, lines) in &sections {
        let alone: String = cmd(&mut c, &["INFO", name]).await.unwrap();
        let got: HashMap<&str, &str> = alone.lines().filter_map(|l| l.split_once(':')).collect();
        let keys: BTreeSet<&str> = got.keys().copied().collect();
        let want: BTreeSet<&str> = lines.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want, "INFO {name}");
        for (k, v) in lines.iter().filter(|(k, _)| steady.contains(&k.as_str())) {
            assert_eq!(got[k.as_str()], v, "INFO {name}: {k}");
        }
    }
    let tokens = &sections.iter().find(|(n, _)| n == "tokens").expect("a tokens section").1;
    assert!(tokens.contains(&("pools".into(), "2".into())), "{tokens:?}");
    assert!(tokens.contains(&("tokens_assigned".into(), "1".into())), "{tokens:?}");
    assert!(tokens.contains(&("blocked_waiters".into(), "1".into())), "{tokens:?}");
    blocked.abort();
}

#[tokio::test]
async fn metrics_and_commandstats_count_exactly_what_ran() {
    let server = TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".into()));
    let maddr = server.metrics.expect("metrics listener");
    let mut c = server.conn().await;

    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "p", "COUNT", "5"]).await.unwrap();
    for _ in 0..2 {
        let _: String = cmd(&mut c, &["TOKEN.ACQUIRE", "p", "PX", "60000"]).await.unwrap();
    }
    let e = cmd::<()>(&mut c, &["TOKEN.KEEPALIVE", "p", "00000000-0000-4000-8000-000000000000"]).await.unwrap_err();
    assert_eq!(e.code(), Some("NOTOKEN"));
    let e = cmd::<()>(&mut c, &["TOKEN.GEN"]).await.unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    // Three tokens with a short real lifetime, to see expiries counted.
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "q", "PX", "20", "COUNT", "3"]).await.unwrap();
    wait_info(&mut c, "expiry", "expiries_expired", 3).await;

    let (text, s) = scrape(maddr).await;
    let cmds = |name: &str| value(&s, "tokend_commands_total", &[("command", name)]);
    assert_eq!(cmds("token.gen"), Some(2.0), "the refused TOKEN.GEN did not run");
    assert_eq!(cmds("token.acquire"), Some(2.0));
    assert_eq!(cmds("token.keepalive"), Some(1.0));
    assert_eq!(cmds("token.del"), None, "commands that never ran have no series");
    let errs =
        |name: &str, reason: &str| value(&s, "tokend_command_errors_total", &[("command", name), ("reason", reason)]);
    assert_eq!(errs("token.keepalive", "failed"), Some(1.0));
    assert_eq!(errs("token.gen", "rejected"), Some(1.0));
    assert_eq!(errs("token.gen", "failed"), Some(0.0));
    let tokens = |pool: &str, state: &str| value(&s, "tokend_tokens", &[("pool", pool), ("state", state)]);
    assert_eq!(tokens("p", "free"), Some(3.0));
    assert_eq!(tokens("p", "assigned"), Some(2.0));
    assert_eq!(tokens("q", "free"), Some(0.0));
    assert_eq!(tokens("q", "expired"), Some(3.0), "expired tokens are remembered (-EXPIRED)");
    assert_eq!(value(&s, "tokend_pools", &[]), Some(2.0));
    assert_eq!(value(&s, "tokend_expiries_total", &[("event", "expired")]), Some(3.0));
    assert_eq!(value(&s, "tokend_expiries_total", &[("event", "leaseexpired")]), Some(0.0));
    assert_eq!(value(&s, "tokend_connected_clients", &[]), Some(1.0));
    assert_eq!(value(&s, "tokend_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    let late = histogram(&s, "tokend_expiry_lateness_seconds", &[]);
    assert_eq!(late.last().map(|b| b.1), Some(3.0), "every expiry has a lateness: {late:?}");
    assert!(late.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "cumulative buckets: {late:?}");
    let gen_latency = histogram(&s, "tokend_command_duration_seconds", &[("command", "token.gen")]);
    assert_eq!(gen_latency.last().map(|b| b.1), Some(2.0));
    assert!(text.contains("tokend_command_duration_seconds_sum{command=\"token.gen\"}"), "{text}");
    assert!(!text.contains("tokend_backing_"), "no backing series without a backing Redis");

    // INFO, read by the redis crate's parser.
    let stats = info(&mut c, "commandstats").await;
    let gen_line: String = stats.get("cmdstat_token.gen").expect("cmdstat_token.gen");
    let g = fields(&gen_line);
    assert_eq!((g["calls"], g["rejected_calls"], g["failed_calls"]), (2.0, 1.0, 0.0), "{gen_line}");
    assert!((g["usec_per_call"] - g["usec"] / 2.0).abs() <= 1.0, "{gen_line}");
    let ka = fields(&stats.get::<String>("cmdstat_token.keepalive").unwrap());
    assert_eq!((ka["calls"], ka["failed_calls"]), (1.0, 1.0));
    let lat = info(&mut c, "latencystats").await;
    let p = fields(&lat.get::<String>("latency_percentiles_usec_token.acquire").expect("latencystats"));
    assert!(p["p50"] > 0.0 && p["p50"] <= p["p99"] && p["p99"] <= p["p99.9"], "{p:?}");
    let exp = info(&mut c, "expiry").await;
    assert_eq!(exp.get::<u64>("expiry_lateness_count"), Some(3));
    let (p50, max): (u64, u64) =
        (exp.get("expiry_lateness_p50_usec").unwrap(), exp.get("expiry_lateness_max_usec").unwrap());
    assert!(p50 <= max, "{p50} {max}");
    // The default INFO leaves the per-command sections out, as Redis does.
    let default: String = redis::cmd("INFO").query_async(&mut c).await.unwrap();
    assert!(default.contains("# Expiry") && !default.contains("cmdstat_"), "{default}");
    let all: String = redis::cmd("INFO").arg("all").query_async(&mut c).await.unwrap();
    assert!(all.contains("# Commandstats") && all.contains("# Latencystats") && all.contains("role:master"));

    // CONFIG RESETSTAT clears what INFO shows, never the Prometheus counters.
    let _: () = cmd(&mut c, &["CONFIG", "RESETSTAT"]).await.unwrap();
    let stats = info(&mut c, "commandstats").await;
    assert_eq!(stats.get::<String>("cmdstat_token.gen"), None);
    assert!(stats.get::<String>("cmdstat_config|resetstat").is_some(), "RESETSTAT itself counts after the reset");
    assert_eq!(info(&mut c, "expiry").await.get::<u64>("expiry_lateness_count"), Some(0));
    assert_eq!(info(&mut c, "expiry").await.get::<u64>("expiries_expired"), Some(0));
    let st = info(&mut c, "stats").await;
    assert_eq!(st.get::<u64>("expired_tokens"), Some(0));
    assert_eq!(st.get::<u64>("total_connections_received"), Some(0));
    let (_, after) = scrape(maddr).await;
    assert_eq!(value(&after, "tokend_commands_total", &[("command", "token.gen")]), Some(2.0));
    assert_eq!(value(&after, "tokend_expiries_total", &[("event", "expired")]), Some(3.0));
    assert_eq!(histogram(&after, "tokend_expiry_lateness_seconds", &[]).last().map(|b| b.1), Some(3.0));
    let received = |s: &prometheus_parse::Scrape| value(s, "tokend_connections_received_total", &[]);
    assert!(received(&s).is_some_and(|n| n >= 1.0) && received(&after) >= received(&s), "{:?}", received(&after));
    // INFO counts from the reset on.
    let _c2 = server.conn().await;
    assert_eq!(info(&mut c, "stats").await.get::<u64>("total_connections_received"), Some(1));
}

#[tokio::test]
async fn per_pool_series_are_bounded_and_the_rest_summed() {
    let server = TestServer::start_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".into());
        c.metrics_max_pools = 2;
    });
    let mut c = server.conn().await;
    for (pool, n) in [("a", "1"), ("b", "5"), ("c", "3"), ("d", "2")] {
        let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", pool, "COUNT", n]).await.unwrap();
    }
    let _: String = cmd(&mut c, &["TOKEN.ACQUIRE", "d"]).await.unwrap();
    let (_, s) = scrape(server.metrics.unwrap()).await;
    let pools: BTreeSet<&str> =
        s.samples.iter().filter(|x| x.metric == "tokend_tokens").filter_map(|x| x.labels.get("pool")).collect();
    assert_eq!(pools, BTreeSet::from(["_other", "b", "c"]), "the two largest, and the rest");
    let tokens = |pool: &str, state: &str| value(&s, "tokend_tokens", &[("pool", pool), ("state", state)]);
    assert_eq!((tokens("b", "free"), tokens("c", "free")), (Some(5.0), Some(3.0)));
    assert_eq!((tokens("_other", "free"), tokens("_other", "assigned")), (Some(2.0), Some(1.0)), "a + d");
    assert_eq!(value(&s, "tokend_pools", &[]), Some(4.0));
}

/// Every series a dashboard query names, with histogram suffixes.
fn dashboard_series() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards/tokend.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    assert_eq!(json["uid"], "tokend");
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in json["panels"].as_array().expect("panels") {
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "panel ids are unique");
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut names = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("tokend_") {
            let tail = &rest[i..];
            let end = tail.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// With a backing Redis (so the backing series exist), every series the
/// dashboard queries is in a real scrape.
#[tokio::test]
async fn every_dashboard_query_names_a_scraped_series() {
    let redis = RedisProc::start();
    let server = TestServer::start_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".into());
        c.redis = Some(redis.url());
    });
    let mut c = server.conn().await;
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "p", "PX", "200", "COUNT", "2"]).await.unwrap();
    let _: String = cmd(&mut c, &["TOKEN.ACQUIRE", "p", "PX", "5"]).await.unwrap();
    wait_info(&mut c, "expiry", "expiries_expired", 2).await;
    wait_info(&mut c, "expiry", "expiries_leaseexpired", 1).await;
    let (text, s) = scrape(server.metrics.unwrap()).await;
    let mut scraped: BTreeSet<String> = BTreeSet::new();
    for x in &s.samples {
        scraped.insert(x.metric.clone());
        if matches!(x.value, prometheus_parse::Value::Histogram(_)) {
            for suffix in ["_bucket", "_sum", "_count"] {
                scraped.insert(format!("{}{suffix}", x.metric));
            }
        }
    }
    let wanted = dashboard_series();
    let missing: Vec<_> = wanted.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(missing.is_empty(), "the dashboard queries series the scrape lacks: {missing:?}\n{text}");
    assert_eq!(value(&s, "tokend_backing_link_up", &[]), Some(1.0));
    let writes = histogram(&s, "tokend_backing_write_duration_seconds", &[]);
    assert!(writes.last().is_some_and(|b| b.1 >= 1.0), "writes were timed: {writes:?}");
}

#[tokio::test]
async fn slowlog_keeps_what_redis_keeps_and_hides_passwords() {
    let server = TestServer::start_with(|c| {
        c.requirepass = Some("s3cret".into());
        c.slowlog_max_len = 3;
    });
    let client = redis::Client::open(format!("redis://:s3cret@{}/", server.addr)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = cmd(&mut c, &["CLIENT", "SETNAME", "watcher"]).await.unwrap();
    let _: () = cmd(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]).await.unwrap();
    let got: HashMap<String, String> = cmd(&mut c, &["CONFIG", "GET", "slowlog-*"]).await.unwrap();
    assert_eq!(got["slowlog-log-slower-than"], "0");
    assert_eq!(got["slowlog-max-len"], "3");
    let _: () = cmd(&mut c, &["SLOWLOG", "RESET"]).await.unwrap();
    let long = "x".repeat(200);
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", &long]).await.unwrap();
    let _: () = cmd(&mut c, &["AUTH", "s3cret"]).await.unwrap();
    type Entry = (i64, i64, i64, Vec<String>, String, String);
    let entries: Vec<Entry> = cmd(&mut c, &["SLOWLOG", "GET"]).await.unwrap();
    assert_eq!(entries.len(), 3, "SLOWLOG RESET, TOKEN.GEN, AUTH (newest first): {entries:?}");
    let (auth, gen_, reset) = (&entries[0], &entries[1], &entries[2]);
    assert_eq!(auth.3, ["AUTH", "(redacted)"]);
    assert_eq!(gen_.3[0], "TOKEN.GEN");
    assert_eq!(gen_.3[1], format!("{}... (72 more bytes)", &long[..128]));
    assert_eq!(reset.3, ["SLOWLOG", "RESET"]);
    assert!(auth.0 > gen_.0 && gen_.0 > reset.0, "ids grow");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((auth.1 - now).abs() <= 5, "unix time: {}", auth.1);
    assert_eq!(auth.5, "watcher");
    let local: String = cmd::<String>(&mut c, &["CLIENT", "INFO"]).await.unwrap();
    assert!(local.contains(&format!("addr={} ", auth.4)), "{} in {local}", auth.4);
    let n: i64 = cmd(&mut c, &["SLOWLOG", "LEN"]).await.unwrap();
    assert_eq!(n, 3, "slowlog-max-len bounds it");
    let one: Vec<Entry> = cmd(&mut c, &["SLOWLOG", "GET", "1"]).await.unwrap();
    assert_eq!(one.len(), 1);
    let e = cmd::<()>(&mut c, &["SLOWLOG", "GET", "-2"]).await.unwrap_err();
    assert!(e.to_string().contains("count should be greater than or equal to -1"), "{e}");
    let _: () = cmd(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]).await.unwrap();
    let _: () = cmd(&mut c, &["SLOWLOG", "RESET"]).await.unwrap();
    let _: String = cmd(&mut c, &["PING"]).await.unwrap();
    let n: i64 = cmd(&mut c, &["SLOWLOG", "LEN"]).await.unwrap();
    assert_eq!(n, 0, "a negative threshold logs nothing");
    let e = cmd::<()>(&mut c, &["CONFIG", "SET", "slowlog-max-len", "lots"]).await.unwrap_err();
    assert!(e.to_string().contains("slowlog-max-len"), "{e}");
}

/// An expiry held up (the process stopped past the deadline) is reported
/// by LATENCY as `expire-late`, by INFO expiry, and by /metrics.
#[tokio::test]
async fn an_expiry_that_fires_late_is_reported() {
    let t = Tokend::start(&["--metrics-addr", "127.0.0.1:0"]);
    let line = t.wait_log("serving Prometheus metrics", Duration::from_secs(5)).expect("metrics log line");
    let maddr: SocketAddr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let mut c = t.conn().await;
    let role: (String, i64, Vec<String>) = cmd(&mut c, &["ROLE"]).await.unwrap();
    assert_eq!(role, ("master".into(), 0, vec![]));
    let latest: Vec<(String, i64, i64, i64)> = cmd(&mut c, &["LATENCY", "LATEST"]).await.unwrap();
    assert!(latest.iter().all(|e| e.0 != "expire-late"), "{latest:?}");

    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "p", "PX", "1000"]).await.unwrap();
    t.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2000));
    t.signal(libc::SIGCONT);
    wait_info(&mut c, "expiry", "expiries_expired", 1).await;

    let latest: Vec<(String, i64, i64, i64)> = cmd(&mut c, &["LATENCY", "LATEST"]).await.unwrap();
    let late = latest.iter().find(|e| e.0 == "expire-late").unwrap_or_else(|| panic!("{latest:?}"));
    assert!(late.2 >= 500 && late.3 >= late.2, "at least 1 s late: {late:?}");
    let history: Vec<(i64, i64)> = cmd(&mut c, &["LATENCY", "HISTORY", "expire-late"]).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0], (late.1, late.2));
    let exp = info(&mut c, "expiry").await;
    assert!(exp.get::<u64>("expiry_lateness_max_usec").unwrap() >= 500_000);
    let (_, s) = scrape(maddr).await;
    let buckets = histogram(&s, "tokend_expiry_lateness_seconds", &[]);
    let under_half_second = buckets.iter().find(|b| b.0 == 0.5).map(|b| b.1);
    assert_eq!(under_half_second, Some(0.0), "{buckets:?}");
    assert_eq!(buckets.last().map(|b| b.1), Some(1.0));
    let n: i64 = cmd(&mut c, &["LATENCY", "RESET"]).await.unwrap();
    assert!(n >= 1);
    let latest: Vec<(String, i64, i64, i64)> = cmd(&mut c, &["LATENCY", "LATEST"]).await.unwrap();
    assert!(latest.iter().all(|e| e.0 != "expire-late"), "{latest:?}");
}

/// Big storage is freed by the free thread, as Redis's lazy free: a deleted
/// big pool, and the wheel slot of 100k tokens sharing a deadline once its
/// cascade is spread. INFO counts them; small ones are freed in place.
#[tokio::test]
async fn big_frees_are_lazy_and_counted() {
    let t = Tokend::start(&["--shards", "1"]);
    let mut c = t.conn().await;
    let counts = |m: &redis::InfoDict, s: &redis::InfoDict| {
        (m.get::<u64>("lazyfree_pending_objects").unwrap(), s.get::<u64>("lazyfreed_objects").unwrap())
    };
    let (m, s) = (info(&mut c, "memory").await, info(&mut c, "stats").await);
    assert_eq!(counts(&m, &s), (0, 0));
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "small", "COUNT", "1000"]).await.unwrap();
    let n: i64 = cmd(&mut c, &["UNLINK", "small"]).await.unwrap();
    assert_eq!(n, 1);
    let s = info(&mut c, "stats").await;
    assert_eq!(s.get::<u64>("lazyfreed_objects"), Some(0), "a small pool is freed in place");
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "big", "COUNT", "100000"]).await.unwrap();
    let n: i64 = cmd(&mut c, &["UNLINK", "big"]).await.unwrap();
    assert_eq!(n, 1);
    wait_info(&mut c, "stats", "lazyfreed_objects", 1).await;

    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "wave", "PX", "2500", "COUNT", "100000"]).await.unwrap();
    wait_info(&mut c, "stats", "expired_tokens", 100_000).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (m, s) = (info(&mut c, "memory").await, info(&mut c, "stats").await);
        let (pending, freed) = counts(&m, &s);
        if pending == 0 && freed >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "pending {pending}, freed {freed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polling before sleeping (`--idle-poll-us`) changes how the server waits,
/// not what it answers: back-to-back requests, a pipeline, a blocked ACQUIRE
/// served from another connection and one that times out all get their
/// replies, INFO counts the quiet spells, and CONFIG SET turns it off.
#[tokio::test]
async fn idle_polling_changes_when_the_server_sleeps_not_what_it_answers() {
    let t = Tokend::start_on_one_core(&["--threads", "1", "--idle-poll-us", "200"]);
    let mut c = t.conn().await;
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "idle-poll-us"]).await.unwrap();
    assert_eq!(got, ["idle-poll-us", "200"]);
    let ids: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "p", "COUNT", "10"]).await.unwrap();
    assert_eq!(ids.len(), 10);
    for _ in 0..500 {
        let id: String = cmd(&mut c, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
        let n: i64 = cmd(&mut c, &["TOKEN.UNBLOCK", "p", &id]).await.unwrap();
        assert_eq!(n, 1);
    }
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("ECHO").arg(i);
    }
    let echoed: Vec<i64> = pipe.query_async(&mut c).await.unwrap();
    assert_eq!(echoed, (0..200).collect::<Vec<i64>>());

    // A blocked ACQUIRE on an empty pool, served by a GEN on another
    // connection; then one that times out.
    let mut waiter = t.conn().await;
    let blocked = tokio::spawn(async move {
        let first: Option<String> = cmd(&mut waiter, &["TOKEN.ACQUIRE", "empty", "BLOCK", "5000"]).await.unwrap();
        let second: Option<String> = cmd(&mut waiter, &["TOKEN.ACQUIRE", "empty", "BLOCK", "50"]).await.unwrap();
        (first, second)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients = info(&mut c, "clients").await;
        if clients.get::<u64>("blocked_clients") == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the ACQUIRE never blocked");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let made: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "empty", "COUNT", "1"]).await.unwrap();
    let (first, second) = tokio::time::timeout(Duration::from_secs(10), blocked).await.unwrap().unwrap();
    assert_eq!(first.as_deref(), Some(made[0].as_str()));
    assert_eq!(second, None);

    // 100,000 tokens due together, 1 s ahead (this client takes the GEN's
    // reply apart first): while the expiry thread fires them, the quiet
    // spells between this client's requests go to it (the poller sleeps
    // instead of polling; the server may use one CPU), and every token
    // expires.
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "due", "COUNT", "100000", "PX", "1000"]).await.unwrap();
    let ceded_before: u64 = info(&mut c, "stats").await.get("idle_poll_ceded").unwrap();
    let started = Instant::now();
    loop {
        let stats = info(&mut c, "stats").await;
        if stats.get::<u64>("expired_tokens") >= Some(100_000) {
            let ceded: u64 = stats.get("idle_poll_ceded").unwrap();
            assert!(ceded > ceded_before, "no quiet spell was left to the expiry thread");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the tokens did not expire within 30 s");
    }
    // Once the server's threads are done (the expired pool's storage given
    // back too), it polls again: the spells are polled through or slept
    // through, not ceded.
    wait_info(&mut c, "memory", "lazyfree_pending_objects", 0).await;
    let spells =
        |s: &redis::InfoDict| s.get::<u64>("idle_poll_hits").unwrap() + s.get::<u64>("idle_poll_sleeps").unwrap();
    let before = spells(&info(&mut c, "stats").await);
    for _ in 0..50 {
        let _: String = cmd(&mut c, &["PING"]).await.unwrap();
    }
    assert!(spells(&info(&mut c, "stats").await) > before, "the poller no longer polls");

    let stats = info(&mut c, "stats").await;
    let sleeps: u64 = stats.get("idle_poll_sleeps").unwrap();
    let window: u64 = stats.get("idle_poll_window_us").unwrap();
    assert!(sleeps > 0, "the poller never slept: {sleeps}");
    assert!(window <= 200, "window {window} µs is past the limit");
    assert!(stats.get::<u64>("idle_poll_hits").is_some());

    let err = cmd::<()>(&mut c, &["CONFIG", "SET", "idle-poll-us", "1000001"]).await.unwrap_err();
    assert!(err.to_string().contains("between 0 and 1000000"), "{err}");
    let err = cmd::<()>(&mut c, &["CONFIG", "SET", "idle-poll-us", "-1"]).await.unwrap_err();
    assert!(err.to_string().contains("integer"), "{err}");
    let _: () = cmd(&mut c, &["CONFIG", "SET", "idle-poll-us", "0"]).await.unwrap();
    wait_info(&mut c, "stats", "idle_poll_window_us", 0).await;
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "idle-poll-us"]).await.unwrap();
    assert_eq!(got, ["idle-poll-us", "0"]);
    let before: u64 = info(&mut c, "stats").await.get("idle_poll_sleeps").unwrap();
    for _ in 0..50 {
        let _: String = cmd(&mut c, &["PING"]).await.unwrap();
    }
    let after: u64 = info(&mut c, "stats").await.get("idle_poll_sleeps").unwrap();
    assert_eq!(after, before, "off: the poller no longer wakes for requests");
}

/// With several worker threads nothing polls, and CONFIG SET says so
/// rather than taking a setting that would do nothing.
#[tokio::test]
async fn idle_polling_is_refused_with_several_workers() {
    let t = Tokend::start(&["--threads", "2"]);
    let mut c = t.conn().await;
    for key in ["idle-poll-us", "idle-nap-us"] {
        let err = cmd::<()>(&mut c, &["CONFIG", "SET", key, "100"]).await.unwrap_err();
        assert!(err.to_string().contains("single-threaded runtime"), "{err}");
        let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", key]).await.unwrap();
        assert_eq!(got, [key, "0"]);
        let _: () = cmd(&mut c, &["CONFIG", "SET", key, "0"]).await.unwrap();
    }
}

/// Napping when requests come fast (`--idle-nap-us`): eight connections'
/// requests that wait together (the server stopped meanwhile) start a nap,
/// and every request still gets its reply; a client alone never naps.
#[tokio::test]
async fn idle_naps_start_when_requests_come_together() {
    use std::io::{Read, Write};
    // Off unless asked for.
    let d = Tokend::start(&["--threads", "1"]);
    let got: Vec<String> = cmd(&mut d.conn().await, &["CONFIG", "GET", "idle-nap-us"]).await.unwrap();
    assert_eq!(got, ["idle-nap-us", "0"]);
    let t = Tokend::start(&["--threads", "1", "--idle-nap-us", "300"]);
    let mut c = t.conn().await;
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "idle-nap-us"]).await.unwrap();
    assert_eq!(got, ["idle-nap-us", "300"]);
    for _ in 0..200 {
        let _: String = cmd(&mut c, &["PING"]).await.unwrap();
    }
    assert_eq!(info(&mut c, "stats").await.get::<u64>("idle_naps"), Some(0), "one client napped");

    let addr = t.addr;
    // Stopped for sure before the requests are sent, so that they all wait
    // for one turn.
    let stop = || {
        t.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", t.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&stat).unwrap().contains(") T ") {
            assert!(Instant::now() < deadline, "tokend did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let pong = |s: &mut std::net::TcpStream| {
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
    };
    let mut socks: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"PING\r\n").unwrap();
            pong(&mut s);
            s
        })
        .collect();
    // Every connection sends while the server is stopped; every one gets
    // its reply once it runs again.
    let together = |socks: &mut Vec<std::net::TcpStream>| {
        stop();
        for s in socks.iter_mut() {
            s.write_all(b"PING\r\n").unwrap();
        }
        t.signal(libc::SIGCONT);
        for s in socks.iter_mut() {
            pong(s);
        }
    };
    for _ in 0..3 {
        together(&mut socks);
        // Nothing more until the nap is long over: these clients stay busy
        // elsewhere, which keeps naps on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = info(&mut c, "stats").await;
    let naps: u64 = stats.get("idle_naps").unwrap();
    assert!(naps >= 1, "{naps} naps");
    assert!(stats.get::<u64>("idle_naps_dry").is_some_and(|d| d <= naps));

    let err = cmd::<()>(&mut c, &["CONFIG", "SET", "idle-nap-us", "1001"]).await.unwrap_err();
    assert!(err.to_string().contains("between 0 and 1000"), "{err}");
    let _: () = cmd(&mut c, &["CONFIG", "SET", "idle-nap-us", "0"]).await.unwrap();
    let before: u64 = info(&mut c, "stats").await.get("idle_naps").unwrap();
    together(&mut socks);
    assert_eq!(info(&mut c, "stats").await.get::<u64>("idle_naps"), Some(before), "off: no nap");
}

/// SHUTDOWN is the SIGTERM stop: the client gets no reply, the process
/// exits 0, and what a client was told is in the backing Redis.
#[tokio::test]
async fn shutdown_stops_gracefully_and_keeps_every_change() {
    let redis = RedisProc::start();
    let mut t = Tokend::start(&["--redis", &redis.url(), "--durability", "async", "--flush-interval", "200ms"]);
    let mut c = t.conn().await;
    let _: Vec<String> = cmd(&mut c, &["TOKEN.GEN", "p", "COUNT", "100"]).await.unwrap();
    let e = cmd::<()>(&mut c, &["MULTI"]).await;
    assert!(e.is_ok());
    let e = cmd::<()>(&mut c, &["SHUTDOWN"]).await.unwrap_err();
    assert!(e.to_string().contains("not allowed inside a transaction"), "{e}");
    let _: () = cmd(&mut c, &["DISCARD"]).await.unwrap();
    let e = cmd::<()>(&mut c, &["SHUTDOWN", "ABORT"]).await.unwrap_err();
    assert!(e.to_string().contains("Errors trying to SHUTDOWN"), "{e}");
    let r = cmd::<redis::Value>(&mut c, &["SHUTDOWN", "NOSAVE"]).await;
    assert!(r.is_err(), "no reply, the connection closes: {r:?}");
    let status = t.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");

    let t = Tokend::start(&["--redis", &redis.url()]);
    let mut c = t.conn().await;
    let stats: HashMap<String, i64> = cmd(&mut c, &["TOKEN.STATS", "p"]).await.unwrap();
    assert_eq!(stats["total"], 100, "the async backlog was flushed before exit");
}

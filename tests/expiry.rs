//! Expiry with real short TTLs: leases end and lifetimes end on time, and the
//! keyspace-style notifications go out within milliseconds of the deadline.
//!
//! Lateness is measured from an instant taken just before the command that
//! set the deadline was sent, so it over-estimates the server's true lateness
//! by the request's round trip; the bound (25 ms) is generous for a noisy
//! machine, and each test prints what it measured.

mod common;

use common::{RawConn, Resp, TestServer, stats};
use std::time::{Duration, Instant};

/// Largest accepted delay between a deadline and its notification.
const MAX_LATE: Duration = Duration::from_millis(25);

/// A pub/sub message: (kind, pattern, channel, payload) and when it arrived.
#[derive(Debug)]
struct Msg {
    at: Instant,
    pattern: Option<String>,
    channel: String,
    payload: String,
}

fn to_msg(r: &Resp, at: Instant) -> Msg {
    let v: Vec<String> = r.items().iter().map(Resp::text).collect();
    match v[0].as_str() {
        "message" => Msg { at, pattern: None, channel: v[1].clone(), payload: v[2].clone() },
        "pmessage" => Msg { at, pattern: Some(v[1].clone()), channel: v[2].clone(), payload: v[3].clone() },
        other => panic!("not a pub/sub message: {other} in {v:?}"),
    }
}

/// The next message within `wait`, or None.
async fn next_msg(sub: &mut RawConn, wait: Duration) -> Option<Msg> {
    let r = sub.read_within(wait).await?;
    Some(to_msg(&r, Instant::now()))
}

/// Subscribes `sub` to channels (`psub = false`) or patterns and checks the
/// confirmations.
async fn subscribe(sub: &mut RawConn, psub: bool, names: &[&str]) {
    let cmd = if psub { "PSUBSCRIBE" } else { "SUBSCRIBE" };
    let mut args = vec![cmd];
    args.extend_from_slice(names);
    sub.send(&args).await;
    for name in names {
        let r = sub.read().await;
        let v = r.items();
        assert_eq!(v[0].text(), cmd.to_lowercase());
        assert_eq!(v[1].text(), *name);
    }
}

/// Asserts the subscriber receives nothing more: waits `wait`, then a PING
/// round trip proves everything published before it was delivered.
async fn assert_no_more(sub: &mut RawConn, wait: Duration) {
    if let Some(m) = next_msg(sub, wait).await {
        panic!("unexpected message {m:?}");
    }
    sub.send(&["PING"]).await;
    let r = sub.read().await;
    assert_eq!(r.items()[0].text(), "pong", "expected only the PING reply, got {r:?}");
}

#[track_caller]
fn check_lateness(what: &str, start: Instant, ttl_ms: u64, at: Instant) -> Duration {
    let elapsed = at.duration_since(start);
    let ttl = Duration::from_millis(ttl_ms);
    // The deadline is at least ttl - 1 ms (millisecond truncation) after `start`.
    assert!(
        elapsed + Duration::from_millis(1) >= ttl,
        "{what}: came EARLY, {elapsed:?} after the command (TTL {ttl:?})"
    );
    let late = elapsed.saturating_sub(ttl);
    eprintln!("{what}: {elapsed:?} after the command, {late:?} after the deadline");
    assert!(late <= MAX_LATE, "{what}: {late:?} late (measured {elapsed:?} after the command, TTL {ttl:?})");
    late
}

#[tokio::test]
async fn lease_expiry_frees_the_token_and_notifies_on_time() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    let keyspace = format!("__keyspace@0__:p:{t}");
    subscribe(&mut sub, false, &["__keyevent@0__:leaseexpired", &keyspace]).await;

    let start = Instant::now();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p PX 60").await.text(), t);
    let acquired = start.elapsed();
    assert!(c.cmd("TOKEN.ACQUIRE p").await.is_null(), "assigned during the lease");

    let mut got = Vec::new();
    for _ in 0..2 {
        let m = next_msg(&mut sub, Duration::from_secs(2)).await.expect("a leaseexpired notification");
        got.push(m);
    }
    got.sort_by(|a, b| a.channel.cmp(&b.channel));
    let (ev, ks) = (&got[0], &got[1]);
    assert_eq!(ev.channel, "__keyevent@0__:leaseexpired");
    assert_eq!(ev.payload, format!("p:{t}"));
    assert_eq!(ks.channel, keyspace);
    assert_eq!(ks.payload, "leaseexpired");
    eprintln!("ACQUIRE round trip {acquired:?}");
    check_lateness("keyevent leaseexpired", start, 60, ev.at);
    check_lateness("keyspace leaseexpired", start, 60, ks.at);

    // The token is free again, still alive, and can be acquired again.
    assert_eq!(stats(&mut c, "p").await, [1, 1, 0, 0, 0]);
    let info = c.call(&["TOKEN.INFO", "p", &t]).await.pairs();
    assert_eq!(info[0].1.text(), "free");
    assert_eq!(info[2].1.int(), -1);
    assert_eq!(info[3].1.int(), 1);
    assert_eq!(c.cmd("TOKEN.ACQUIRE p PX 60000").await.text(), t);
    assert_eq!(c.call(&["TOKEN.INFO", "p", &t]).await.pairs()[3].1.int(), 2, "times-acquired");
    // No `expired` for a token that is alive.
    assert_no_more(&mut sub, Duration::from_millis(20)).await;
}

#[tokio::test]
async fn expired_token_is_remembered_until_delexpired() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:expired"]).await;
    subscribe(&mut sub, true, &["__keyspace@0__:p:*"]).await;

    let start = Instant::now();
    let t = c.cmd("TOKEN.GEN p PX 60").await.text();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_msg(&mut sub, Duration::from_secs(2)).await.expect("an expired notification"));
    }
    got.sort_by_key(|m| m.pattern.is_some());
    assert_eq!(got[0].channel, "__keyevent@0__:expired");
    assert_eq!(got[0].payload, format!("p:{t}"));
    assert_eq!(got[1].pattern.as_deref(), Some("__keyspace@0__:p:*"));
    assert_eq!(got[1].channel, format!("__keyspace@0__:p:{t}"));
    assert_eq!(got[1].payload, "expired");
    check_lateness("keyevent expired", start, 60, got[0].at);
    check_lateness("keyspace expired", start, 60, got[1].at);

    let expired = |r: Resp| {
        let e = r.err();
        assert!(e.starts_with("EXPIRED"), "{e}");
    };
    expired(c.call(&["TOKEN.KEEPALIVE", "p", &t]).await);
    expired(c.call(&["TOKEN.INFO", "p", &t]).await);
    expired(c.call(&["TOKEN.UNBLOCK", "p", &t]).await);
    assert!(c.cmd("TOKEN.ACQUIRE p").await.is_null(), "an expired token is never served");
    assert_eq!(stats(&mut c, "p").await, [0, 0, 0, 1, 0]);

    assert_eq!(c.cmd("TOKEN.DELEXPIRED p").await, Resp::Int(1));
    let e = c.call(&["TOKEN.KEEPALIVE", "p", &t]).await.err();
    assert!(e.starts_with("NOTOKEN"), "forgotten after DELEXPIRED: {e}");
    assert_eq!(stats(&mut c, "p").await, [0; 5]);
    assert_eq!(c.cmd("TOKEN.DELEXPIRED p").await, Resp::Int(0));
    assert_no_more(&mut sub, Duration::from_millis(10)).await;
}

#[tokio::test]
async fn del_forgets_an_expired_token() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:expired"]).await;
    let t = c.cmd("TOKEN.GEN p PX 20").await.text();
    next_msg(&mut sub, Duration::from_secs(2)).await.expect("expired");
    assert_eq!(c.call(&["TOKEN.DEL", "p", &t]).await, Resp::Int(1), "DEL of a remembered expired token is 1");
    let e = c.call(&["TOKEN.INFO", "p", &t]).await.err();
    assert!(e.starts_with("NOTOKEN"), "{e}");
    assert_eq!(c.call(&["TOKEN.DEL", "p", &t]).await, Resp::Int(0));
    assert_eq!(stats(&mut c, "p").await, [0; 5]);
}

#[tokio::test]
async fn psubscribe_keyevent_sees_lease_then_lifetime() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, true, &["__keyevent@0__:*"]).await;
    // A pool name with ':' in it: the payload is <pool>:<token>.
    let start = Instant::now();
    let t = c.cmd("TOKEN.GEN x:y PX 100").await.text();
    assert_eq!(c.cmd("TOKEN.ACQUIRE x:y PX 40").await.text(), t);

    let m1 = next_msg(&mut sub, Duration::from_secs(2)).await.expect("leaseexpired");
    assert_eq!(m1.pattern.as_deref(), Some("__keyevent@0__:*"));
    assert_eq!(m1.channel, "__keyevent@0__:leaseexpired");
    assert_eq!(m1.payload, format!("x:y:{t}"));
    check_lateness("pmessage leaseexpired", start, 40, m1.at);

    let m2 = next_msg(&mut sub, Duration::from_secs(2)).await.expect("expired");
    assert_eq!(m2.channel, "__keyevent@0__:expired");
    assert_eq!(m2.payload, format!("x:y:{t}"));
    check_lateness("pmessage expired", start, 100, m2.at);
    // Only expiry events are on by default: no tokengen/tokenacquire seen.
    assert_no_more(&mut sub, Duration::from_millis(10)).await;
}

#[tokio::test]
async fn same_instant_lifetime_wins() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, true, &["__keyevent@0__:*", "__keyspace@0__:*"]).await;
    // The cover rule moves the 40 ms lifetime to the 60 ms lease deadline:
    // both end at the same millisecond, so only `expired` is published.
    let start = Instant::now();
    let t = c.cmd("TOKEN.GEN p PX 40").await.text();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p PX 60").await.text(), t);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_msg(&mut sub, Duration::from_secs(2)).await.expect("expired"));
    }
    got.sort_by(|a, b| a.channel.cmp(&b.channel));
    assert_eq!((got[0].channel.as_str(), got[0].payload.as_str()), ("__keyevent@0__:expired", &*format!("p:{t}")));
    assert_eq!(got[1].channel, format!("__keyspace@0__:p:{t}"));
    assert_eq!(got[1].payload, "expired");
    check_lateness("same-instant expired", start, 60, got[0].at);
    assert_no_more(&mut sub, Duration::from_millis(20)).await;
    let e = c.call(&["TOKEN.INFO", "p", &t]).await.err();
    assert!(e.starts_with("EXPIRED"), "{e}");
    assert_eq!(stats(&mut c, "p").await, [0, 0, 0, 1, 0]);
}

#[tokio::test]
async fn unblock_cancels_and_keepalive_postpones_the_lease_end() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:leaseexpired"]).await;

    // Given back before its lease ends: no leaseexpired, ever.
    let t1 = c.cmd("TOKEN.GEN a").await.text();
    assert_eq!(c.cmd("TOKEN.ACQUIRE a PX 30").await.text(), t1);
    assert_eq!(c.call(&["TOKEN.UNBLOCK", "a", &t1]).await, Resp::Int(1));

    // Kept alive at ~40 ms: the 80 ms lease restarts from then.
    let t2 = c.cmd("TOKEN.GEN b").await.text();
    let start = Instant::now();
    assert_eq!(c.cmd("TOKEN.ACQUIRE b PX 80").await.text(), t2);
    tokio::time::sleep(Duration::from_millis(40)).await;
    let ka = Instant::now();
    let left = c.call(&["TOKEN.KEEPALIVE", "b", &t2]).await.int();
    assert!(left > 200_000, "lifetime restarted to the default: {left}");
    let lease = c.call(&["TOKEN.INFO", "b", &t2]).await.pairs()[2].1.int();
    assert!((60..=80).contains(&lease), "lease restarted at KEEPALIVE: {lease}");

    let m = next_msg(&mut sub, Duration::from_secs(2)).await.expect("leaseexpired for b");
    assert_eq!(m.payload, format!("b:{t2}"), "only b's lease ends (a was given back)");
    let since_acquire = m.at.duration_since(start);
    assert!(
        since_acquire >= Duration::from_millis(110),
        "the lease was not postponed: ended {since_acquire:?} after ACQUIRE"
    );
    check_lateness("leaseexpired after KEEPALIVE", ka, 80, m.at);
    assert_no_more(&mut sub, Duration::from_millis(20)).await;
}

#[tokio::test]
async fn many_leases_ending_together_are_all_announced() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:leaseexpired"]).await;
    let toks: Vec<String> = c.cmd("TOKEN.GEN p COUNT 200").await.items().iter().map(Resp::text).collect();
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend(common::encode_cmd(&["TOKEN.ACQUIRE", "p", "PX", "50"]));
    }
    let start = Instant::now();
    let replies = c.pipeline(&pipeline, 200).await;
    let mut acquired: Vec<String> = replies.iter().map(Resp::text).collect();
    acquired.sort();
    let mut want = toks.clone();
    want.sort();
    assert_eq!(acquired, want, "200 ACQUIREs took the 200 tokens, each once");

    let mut seen = Vec::new();
    let mut last = start;
    while seen.len() < 200 {
        let m = next_msg(&mut sub, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("only {} of 200 leaseexpired events", seen.len()));
        last = m.at;
        seen.push(m.payload.strip_prefix("p:").expect("payload p:<token>").to_string());
    }
    seen.sort();
    assert_eq!(seen, want, "one leaseexpired per token");
    check_lateness("last of 200 leaseexpired", start, 50, last);
    assert_eq!(stats(&mut c, "p").await, [200, 200, 0, 0, 0]);
}

#[tokio::test]
async fn notification_classes_are_configurable() {
    // `Eg`: token command events on the keyevent channel only; no expiry events.
    let server = TestServer::start_with(|c| {
        c.notify_keyspace_events = tokend::notify::EventClasses::parse("Eg").unwrap();
    });
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, true, &["__key*"]).await;
    let t = c.cmd("TOKEN.GEN p PX 30").await.text();
    let m = next_msg(&mut sub, Duration::from_secs(2)).await.expect("tokengen");
    assert_eq!((m.channel.as_str(), m.payload.as_str()), ("__keyevent@0__:tokengen", &*format!("p:{t}")));
    // Its expiry is not announced (class x is off), and nothing on __keyspace.
    assert_no_more(&mut sub, Duration::from_millis(60)).await;
    let e = c.call(&["TOKEN.INFO", "p", &t]).await.err();
    assert!(e.starts_with("EXPIRED"), "it did expire: {e}");
}

#[tokio::test]
async fn expired_tokens_are_forgotten_after_the_expired_memory() {
    let server = TestServer::start_with(|c| c.expired_memory = Duration::from_millis(60));
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:expired"]).await;
    let t = c.cmd("TOKEN.GEN p PX 20").await.text();
    let m = next_msg(&mut sub, Duration::from_secs(2)).await.expect("expired");
    let e = c.call(&["TOKEN.KEEPALIVE", "p", &t]).await.err();
    assert!(e.starts_with("EXPIRED"), "remembered right after expiring: {e}");
    assert_eq!(stats(&mut c, "p").await, [0, 0, 0, 1, 0]);
    // 60 ms after it expired it is forgotten: NOTOKEN.
    tokio::time::sleep_until((m.at + Duration::from_millis(80)).into()).await;
    let e = c.call(&["TOKEN.KEEPALIVE", "p", &t]).await.err();
    assert!(e.starts_with("NOTOKEN"), "forgotten after --expired-memory: {e}");
    assert_eq!(stats(&mut c, "p").await, [0; 5]);
}

#[tokio::test]
async fn expired_tokens_remembered_are_bounded_in_number() {
    let server = TestServer::start_with(|c| {
        c.shards = 1;
        c.max_expired_remembered = 3;
    });
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:expired"]).await;
    let toks: Vec<String> = c.cmd("TOKEN.GEN p PX 20 COUNT 5").await.items().iter().map(Resp::text).collect();
    for i in 0..5 {
        next_msg(&mut sub, Duration::from_secs(2)).await.unwrap_or_else(|| panic!("expired event {i}"));
    }
    assert_eq!(stats(&mut c, "p").await, [0, 0, 0, 3, 0], "at most 3 remembered");
    let mut expired = 0;
    let mut unknown = 0;
    for t in &toks {
        let e = c.call(&["TOKEN.INFO", "p", t]).await.err();
        if e.starts_with("EXPIRED") {
            expired += 1;
        } else if e.starts_with("NOTOKEN") {
            unknown += 1;
        } else {
            panic!("{e}");
        }
    }
    assert_eq!((expired, unknown), (3, 2));
}

/// A real client library subscribed over RESP3 (push messages on a
/// multiplexed connection) receives the leaseexpired event on time.
#[tokio::test]
async fn redis_crate_resp3_subscriber_gets_leaseexpired() {
    let server = TestServer::start();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<redis::PushInfo>();
    let client = redis::Client::open(format!("{}?protocol=resp3", server.url())).unwrap();
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10))).set_push_sender(tx);
    let mut sub = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
    sub.subscribe("__keyevent@0__:leaseexpired").await.unwrap();

    let mut c = server.raw().await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    let start = Instant::now();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p PX 50").await.text(), t);
    let deadline = Instant::now() + Duration::from_secs(2);
    let msg = loop {
        let push = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("a push message within 2 s")
            .expect("push channel open");
        if push.kind == redis::PushKind::Message {
            break push;
        }
    };
    let at = Instant::now();
    let data: Vec<String> = msg
        .data
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(data, ["__keyevent@0__:leaseexpired".to_string(), format!("p:{t}")]);
    check_lateness("RESP3 push leaseexpired (redis crate)", start, 50, at);
    // The subscribed RESP3 connection can still run commands.
    let s: redis::Value = redis::cmd("TOKEN.STATS").arg("p").query_async(&mut sub).await.unwrap();
    assert!(matches!(s, redis::Value::Map(_)), "{s:?}");
}

/// "Never served or reported after its deadline": INFO is polled as fast as
/// possible across a 30 ms lifetime. Every request that got an answer other
/// than EXPIRED must have been sent before the deadline could have passed,
/// and the first EXPIRED must not come before it.
#[tokio::test]
async fn no_token_is_reported_after_its_deadline() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let t0 = Instant::now();
    let t = c.cmd("TOKEN.GEN p PX 30").await.text();
    let t1 = Instant::now();
    let mut polls = 0;
    loop {
        let sent = Instant::now();
        let r = c.call(&["TOKEN.INFO", "p", &t]).await;
        let got = Instant::now();
        polls += 1;
        match r {
            Resp::Error(e) if e.starts_with("EXPIRED") => {
                // The deadline is ≥ t0 + 29 ms (ms truncation).
                assert!(got >= t0 + Duration::from_millis(29), "EXPIRED after only {:?}", got - t0);
                eprintln!("{polls} INFO polls; EXPIRED first seen {:?} after GEN", got - t0);
                break;
            }
            Resp::Array(_) => {
                // Answered as alive: it must have been asked before the
                // latest possible deadline, t1 + 30 ms.
                assert!(
                    sent <= t1 + Duration::from_millis(30),
                    "reported alive for a request sent {:?} after the GEN reply",
                    sent - t1
                );
                let left = r.pairs()[1].1.int();
                assert!((0..=30).contains(&left), "lifetime-left-ms {left}");
            }
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "never expired");
    }
}

#[tokio::test]
async fn notification_classes_read_back_in_redis_canonical_order() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let get = |r: Resp| r.items()[1].text();
    assert_eq!(get(c.cmd("CONFIG GET notify-keyspace-events").await), "xlKE", "the documented default");
    assert_eq!(c.cmd("CONFIG SET notify-keyspace-events KElx").await, Resp::Simple("OK".into()));
    assert_eq!(get(c.cmd("CONFIG GET notify-keyspace-events").await), "xlKE", "any order in, one order out");
    assert_eq!(c.cmd("CONFIG SET notify-keyspace-events EgxlK").await, Resp::Simple("OK".into()));
    assert_eq!(get(c.cmd("CONFIG GET notify-keyspace-events").await), "AKE");
}

/// A mass expiry is fired in batches (here of one entry, so that it is
/// still queued when the next requests come): a request on another pool is
/// served at once, a request on the pool finds all of it expired, and the
/// subscriber gets every event once.
#[tokio::test]
async fn a_mass_expiry_in_batches_is_exact_for_every_request() {
    let server = TestServer::start_with(|c| {
        c.shards = 1;
        c.expiry_batch = 1;
    });
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:expired"]).await;
    c.cmd("TOKEN.GEN other COUNT 3").await;
    let toks: Vec<String> = c.cmd("TOKEN.GEN big PX 40 COUNT 3000").await.items().iter().map(Resp::text).collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let t = c.cmd("TOKEN.ACQUIRE other").await.text();
    c.cmd(&format!("TOKEN.UNBLOCK other {t}")).await;
    assert!(c.cmd("TOKEN.ACQUIRE big").await.is_null(), "no token of the pool is past its lifetime yet served");
    assert_eq!(stats(&mut c, "big").await, [0, 0, 0, 3000, 0]);
    let e = c.call(&["TOKEN.KEEPALIVE", "big", &toks[2999]]).await.err();
    assert!(e.starts_with("EXPIRED"), "{e}");
    let mut seen = Vec::new();
    while seen.len() < 3000 {
        let m = next_msg(&mut sub, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("only {} of 3000 expired events", seen.len()));
        seen.push(m.payload.strip_prefix("big:").expect("payload big:<token>").to_string());
    }
    seen.sort();
    let mut want = toks.clone();
    want.sort();
    assert!(seen == want, "each token's expired event, once");
    assert_no_more(&mut sub, Duration::from_millis(50)).await;
}

/// A burst of expiries big enough to be written from where it is (not
/// copied) reaches a subscriber whole, in deadline order (one deadline: the
/// order GEN made them), between the messages published before and after.
#[tokio::test]
async fn a_big_burst_of_expiries_arrives_whole_and_in_order_among_other_messages() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut sub = server.raw().await;
    subscribe(&mut sub, false, &["__keyevent@0__:expired", "news"]).await;
    // The deadline leaves the PUBLISH below ample time to go first: with
    // 200 ms, a debug build on a loaded machine answered the GEN and the
    // PUBLISH late enough that the burst came first.
    let toks: Vec<String> = c.cmd("TOKEN.GEN big PX 1500 COUNT 20000").await.items().iter().map(Resp::text).collect();
    assert_eq!(c.cmd("PUBLISH news first").await, Resp::Int(1));
    let first = next_msg(&mut sub, Duration::from_secs(2)).await.expect("the first message");
    assert_eq!((first.channel.as_str(), first.payload.as_str()), ("news", "first"));
    let mut seen = Vec::with_capacity(toks.len());
    while seen.len() < toks.len() {
        let m = next_msg(&mut sub, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("only {} of {} expired events", seen.len(), toks.len()));
        assert_eq!(m.channel, "__keyevent@0__:expired", "after {} events: {m:?}", seen.len());
        seen.push(m.payload.strip_prefix("big:").expect("payload big:<token>").to_string());
    }
    assert!(seen == toks, "every token once, in the order it was made");
    assert_eq!(c.cmd("PUBLISH news last").await, Resp::Int(1));
    let last = next_msg(&mut sub, Duration::from_secs(2)).await.expect("the last message");
    assert_eq!((last.channel.as_str(), last.payload.as_str()), ("news", "last"));
    assert_no_more(&mut sub, Duration::from_millis(50)).await;
}

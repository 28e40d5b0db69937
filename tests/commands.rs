//! The TOKEN commands through a real client library (the `redis` crate) in
//! RESP2 and RESP3, plus exact error wording checked on a raw connection.

mod common;

use common::{Resp, TestServer, assert_uuid_v4, err_line, stats, stats_of};
use redis::Value;
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;

async fn q<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<T> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(con).await
}

/// Runs a command that must fail; returns the error line as the server sent it.
async fn q_err(con: &mut MultiplexedConnection, args: &[&str]) -> String {
    match q::<Value>(con, args).await {
        Err(e) => err_line(&e),
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
    }
}

/// TOKEN.STATS through the redis crate, as an ordered list of (field, value).
async fn stats_rc(con: &mut MultiplexedConnection, pool: &str) -> Vec<(String, i64)> {
    let v: Value = q(con, &["TOKEN.STATS", pool]).await.unwrap();
    let pairs: Vec<(Value, Value)> = match v {
        Value::Array(a) => a.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect(),
        Value::Map(m) => m,
        other => panic!("TOKEN.STATS: {other:?}"),
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            let k = match k {
                Value::BulkString(b) => String::from_utf8(b).unwrap(),
                other => panic!("field name should be a bulk string: {other:?}"),
            };
            let v = match v {
                Value::Int(i) => i,
                other => panic!("{k} should be an integer: {other:?}"),
            };
            (k, v)
        })
        .collect()
}

#[tokio::test]
async fn acceptance_flow_resp2() {
    let server = TestServer::start();
    let mut con = server.conn().await;

    let t: String = q(&mut con, &["TOKEN.GEN", "p"]).await.unwrap();
    assert_uuid_v4(&t);

    let got: Option<String> = q(&mut con, &["TOKEN.ACQUIRE", "p", "PX", "200"]).await.unwrap();
    assert_eq!(got.as_deref(), Some(t.as_str()), "the only free token is the one acquired");

    let none: Option<String> = q(&mut con, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
    assert_eq!(none, None, "no free token left: nil");
    // nil is a null bulk string in RESP2, not an empty array.
    let raw: Value = q(&mut con, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
    assert_eq!(raw, Value::Nil);

    let one: i64 = q(&mut con, &["TOKEN.UNBLOCK", "p", &t]).await.unwrap();
    assert_eq!(one, 1);
    let e = q_err(&mut con, &["TOKEN.UNBLOCK", "p", &t]).await;
    assert!(e.starts_with("NOTASSIGNED"), "UNBLOCK of a free token: {e}");

    let e = q_err(&mut con, &["TOKEN.KEEPALIVE", "p", "nope"]).await;
    assert!(e.starts_with("NOTOKEN"), "KEEPALIVE of an unknown token: {e}");
    // A well-formed UUID the pool never had, and a real token asked of another pool.
    let e = q_err(&mut con, &["TOKEN.KEEPALIVE", "p", "6f1c1c58-2a43-4b7e-9c3e-3f7d8c2a9b10"]).await;
    assert!(e.starts_with("NOTOKEN"), "{e}");
    let e = q_err(&mut con, &["TOKEN.KEEPALIVE", "other", &t]).await;
    assert!(e.starts_with("NOTOKEN"), "a token belongs to its pool: {e}");
    let e = q_err(&mut con, &["TOKEN.INFO", "p", "nope"]).await;
    assert!(e.starts_with("NOTOKEN"), "{e}");
    let e = q_err(&mut con, &["TOKEN.UNBLOCK", "p", "nope"]).await;
    assert!(e.starts_with("NOTOKEN"), "{e}");

    // The token is free again and can be acquired again.
    let again: Option<String> = q(&mut con, &["TOKEN.ACQUIRE", "p", "PX", "5000"]).await.unwrap();
    assert_eq!(again.as_deref(), Some(t.as_str()));
    let left: i64 = q(&mut con, &["TOKEN.KEEPALIVE", "p", &t]).await.unwrap();
    assert!((290_000..=300_000).contains(&left), "KEEPALIVE restarts the default 300 s lifetime: {left}");
}

#[tokio::test]
async fn info_fields_and_types_resp2_and_resp3() {
    let server = TestServer::start();
    let mut c2 = server.conn().await;
    let mut c3 = server.conn_resp3().await;

    let t: String = q(&mut c2, &["TOKEN.GEN", "p", "PX", "10000"]).await.unwrap();

    // RESP2: a flat field/value array, as HGETALL.
    let v: Value = q(&mut c2, &["TOKEN.INFO", "p", &t]).await.unwrap();
    let Value::Array(a) = v else { panic!("RESP2 TOKEN.INFO should be an array: {v:?}") };
    assert_eq!(a.len(), 8, "{a:?}");
    assert_eq!(a[0], Value::BulkString(b"state".to_vec()));
    assert_eq!(a[1], Value::BulkString(b"free".to_vec()));
    assert_eq!(a[2], Value::BulkString(b"lifetime-left-ms".to_vec()));
    let Value::Int(life) = a[3] else { panic!("lifetime-left-ms must be an integer: {:?}", a[3]) };
    assert!((9_000..=10_000).contains(&life), "lifetime-left-ms {life}");
    assert_eq!(a[4], Value::BulkString(b"lease-left-ms".to_vec()));
    assert_eq!(a[5], Value::Int(-1), "lease-left-ms is -1 while free");
    assert_eq!(a[6], Value::BulkString(b"times-acquired".to_vec()));
    assert_eq!(a[7], Value::Int(0));

    let got: Option<String> = q(&mut c2, &["TOKEN.ACQUIRE", "p", "PX", "3000"]).await.unwrap();
    assert_eq!(got.as_deref(), Some(t.as_str()));

    // RESP3: a real map.
    let v: Value = q(&mut c3, &["TOKEN.INFO", "p", &t]).await.unwrap();
    let Value::Map(m) = v else { panic!("RESP3 TOKEN.INFO should be a map: {v:?}") };
    let get = |k: &str| {
        m.iter()
            .find(|(f, _)| *f == Value::BulkString(k.as_bytes().to_vec()))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("field {k} missing in {m:?}"))
    };
    assert_eq!(m.len(), 4, "{m:?}");
    assert_eq!(get("state"), Value::BulkString(b"assigned".to_vec()));
    let Value::Int(life) = get("lifetime-left-ms") else { panic!() };
    let Value::Int(lease) = get("lease-left-ms") else { panic!() };
    assert!((8_900..=10_000).contains(&life), "lifetime-left-ms {life}");
    assert!((2_900..=3_000).contains(&lease), "lease-left-ms {lease}");
    assert_eq!(get("times-acquired"), Value::Int(1));

    // TOKEN.STATS in RESP3 is a map with the pinned fields.
    let v: Value = q(&mut c3, &["TOKEN.STATS", "p"]).await.unwrap();
    assert!(matches!(v, Value::Map(_)), "RESP3 TOKEN.STATS should be a map: {v:?}");
    let s = stats_rc(&mut c3, "p").await;
    assert_eq!(
        s,
        [
            ("total".to_string(), 1),
            ("free".to_string(), 0),
            ("assigned".to_string(), 1),
            ("expired-remembered".to_string(), 0),
            ("blocked-waiters".to_string(), 0)
        ]
    );
    // And nil is RESP3 null.
    let v: Value = q(&mut c3, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
    assert_eq!(v, Value::Nil);
}

#[tokio::test]
async fn stats_add_up() {
    let server = TestServer::start();
    let mut con = server.conn().await;
    let zero: Vec<(String, i64)> = stats_rc(&mut con, "nosuchpool").await;
    assert!(zero.iter().all(|(_, v)| *v == 0), "a pool that does not exist has all zeros: {zero:?}");

    let toks: Vec<String> = q(&mut con, &["TOKEN.GEN", "p", "COUNT", "10"]).await.unwrap();
    assert_eq!(toks.len(), 10);
    let distinct: std::collections::HashSet<_> = toks.iter().collect();
    assert_eq!(distinct.len(), 10, "tokens are distinct");
    for t in &toks {
        assert_uuid_v4(t);
    }
    let mut acquired = Vec::new();
    for _ in 0..3 {
        let t: String = q(&mut con, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
        assert!(toks.contains(&t), "acquired a token of the pool");
        assert!(!acquired.contains(&t), "never the same token twice while assigned");
        acquired.push(t);
    }
    let one: i64 = q(&mut con, &["TOKEN.DEL", "p", &toks[9]]).await.unwrap();
    assert_eq!(one, 1);
    let s = stats_rc(&mut con, "p").await;
    let vals: Vec<i64> = s.iter().map(|x| x.1).collect();
    // 9 live (one deleted); 3 assigned, 6 free (the deleted one was free or
    // assigned: check which).
    let deleted_was_assigned = acquired.contains(&toks[9]);
    let assigned = if deleted_was_assigned { 2 } else { 3 };
    assert_eq!(vals, [9, 9 - assigned, assigned, 0, 0], "{s:?}");
    // Other pools are separate.
    let s = stats_rc(&mut con, "q").await;
    assert!(s.iter().all(|(_, v)| *v == 0), "{s:?}");
}

#[tokio::test]
async fn gen_count() {
    let server = TestServer::start();
    let mut con = server.conn().await;
    let v: Value = q(&mut con, &["TOKEN.GEN", "p", "COUNT", "0"]).await.unwrap();
    assert_eq!(v, Value::Array(vec![]), "COUNT 0: an empty array");
    let v: Value = q(&mut con, &["TOKEN.GEN", "p", "COUNT", "1"]).await.unwrap();
    let Value::Array(a) = v else { panic!("COUNT 1 is still an array: {v:?}") };
    assert_eq!(a.len(), 1);
    let Value::BulkString(t) = &a[0] else { panic!("{a:?}") };
    assert_uuid_v4(std::str::from_utf8(t).unwrap());
    // Without COUNT: a plain bulk string.
    let v: Value = q(&mut con, &["TOKEN.GEN", "p"]).await.unwrap();
    assert!(matches!(v, Value::BulkString(_)), "{v:?}");
    // Over the bound (default 100,000): an error, and nothing made.
    let e = q_err(&mut con, &["TOKEN.GEN", "p", "COUNT", "100001"]).await;
    assert!(e.starts_with("ERR"), "{e}");
    let s = stats_rc(&mut con, "p").await;
    assert_eq!(s[0], ("total".to_string(), 2), "{s:?}");
    // At the bound: fine.
    let v: Vec<String> = q(&mut con, &["TOKEN.GEN", "big", "COUNT", "100000"]).await.unwrap();
    assert_eq!(v.len(), 100_000);
}

#[tokio::test]
async fn error_wording_is_exact() {
    let server = TestServer::start();
    let mut raw = server.raw().await;
    let cases: &[(&[&str], &str)] = &[
        (&["TOKEN.GEN"], "ERR wrong number of arguments for 'token.gen' command"),
        (&["token.acquire"], "ERR wrong number of arguments for 'token.acquire' command"),
        (&["TOKEN.KEEPALIVE", "p"], "ERR wrong number of arguments for 'token.keepalive' command"),
        (&["TOKEN.UNBLOCK", "p", "a", "b"], "ERR wrong number of arguments for 'token.unblock' command"),
        (&["TOKEN.STATS"], "ERR wrong number of arguments for 'token.stats' command"),
        (&["TOKEN.GEN", "p", "EX", "1", "PX", "5"], "ERR syntax error"),
        (&["TOKEN.GEN", "p", "PX", "5", "EX", "1"], "ERR syntax error"),
        (&["TOKEN.GEN", "p", "PX", "0"], "ERR invalid expire time in 'token.gen' command"),
        (&["TOKEN.GEN", "p", "EX", "-3"], "ERR invalid expire time in 'token.gen' command"),
        (&["TOKEN.GEN", "p", "PX", "abc"], "ERR value is not an integer or out of range"),
        (&["TOKEN.GEN", "p", "PX", "1.5"], "ERR value is not an integer or out of range"),
        (&["TOKEN.GEN", "p", "PX"], "ERR syntax error"),
        (&["TOKEN.GEN", "p", "BOGUS"], "ERR syntax error"),
        (&["TOKEN.ACQUIRE", "p", "PX", "0"], "ERR invalid expire time in 'token.acquire' command"),
        (&["TOKEN.ACQUIRE", "p", "EX", "1", "PX", "1"], "ERR syntax error"),
        (&["TOKEN.ACQUIRE", "p", "NX"], "ERR syntax error"),
        (&["FOO", "a", "b"], "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "),
        (&["foo"], "ERR unknown command 'foo', with args beginning with: "),
        (&["SELECT", "1"], "ERR DB index is out of range"),
    ];
    for (args, want) in cases {
        let r = raw.call(args).await;
        assert_eq!(r, Resp::Error(want.to_string()), "{args:?}");
    }
    assert_eq!(raw.cmd("SELECT 0").await, Resp::Simple("OK".into()));
    // The connection survived every error.
    assert_eq!(raw.cmd("PING").await, Resp::Simple("PONG".into()));
    assert_eq!(stats(&mut raw, "p").await, [0; 5], "no error created anything");

    // The same through the redis crate (code + detail).
    let mut con = server.conn().await;
    assert_eq!(q_err(&mut con, &["TOKEN.GEN"]).await, "ERR wrong number of arguments for 'token.gen' command");
    assert_eq!(q_err(&mut con, &["SELECT", "1"]).await, "ERR DB index is out of range");
}

#[tokio::test]
async fn malformed_acquire_on_empty_pool_is_an_error_not_nil() {
    let server = TestServer::start();
    let mut raw = server.raw().await;
    for args in [
        &["TOKEN.ACQUIRE", "empty", "PX", "0"][..],
        &["TOKEN.ACQUIRE", "empty", "PX", "x"],
        &["TOKEN.ACQUIRE", "empty", "BLOCK", "-1"],
        &["TOKEN.ACQUIRE", "empty", "BLOCK", "1.5"],
        &["TOKEN.ACQUIRE", "empty", "BLOCK"],
        &["TOKEN.ACQUIRE", "empty", "EX", "1", "PX", "1"],
        &["TOKEN.ACQUIRE", "empty", "WHAT"],
        &["TOKEN.ACQUIRE", "", "PX", "10"],
    ] {
        let r = raw.call(args).await;
        match &r {
            Resp::Error(e) => assert!(e.starts_with("ERR "), "{args:?}: {e}"),
            other => panic!("{args:?} must be an ERR, got {other:?}"),
        }
    }
    // A bad BLOCK must not leave a waiter behind.
    assert_eq!(stats(&mut raw, "empty").await, [0; 5]);
    assert!(raw.cmd("TOKEN.ACQUIRE empty PX 10").await.is_null(), "the well-formed one is nil");
}

#[tokio::test]
async fn bad_requests_change_nothing_and_keep_the_connection() {
    let server = TestServer::start();
    let mut raw = server.raw().await;
    let t = raw.cmd("TOKEN.GEN p PX 60000").await.text();
    raw.cmd("TOKEN.GEN p PX 60000").await.text();
    assert!(!raw.call(&["TOKEN.ACQUIRE", "p", "PX", "60000"]).await.is_null());
    let before = stats(&mut raw, "p").await;
    let info_before = raw.call(&["TOKEN.INFO", "p", &t]).await;
    let bad: &[&[&str]] = &[
        &["TOKEN.GEN", "p", "PX", "0"],
        &["TOKEN.GEN", "p", "COUNT", "-1"],
        &["TOKEN.GEN", "p", "COUNT", "5", "EX", "1", "PX", "1"],
        &["TOKEN.ACQUIRE", "p", "PX", "-1"],
        &["TOKEN.ACQUIRE", "p", "BLOCK", "x"],
        &["TOKEN.KEEPALIVE", "p", "nope"],
        &["TOKEN.UNBLOCK", "p", "nope"],
        &["TOKEN.DEL", "p"],
        &["TOKEN.DELEXPIRED", "p", "extra"],
        &["TOKEN.INFO", "p"],
        &["NOSUCHCOMMAND"],
        &["SELECT", "3"],
    ];
    for args in bad {
        let r = raw.call(args).await;
        assert!(matches!(r, Resp::Error(_)), "{args:?} should fail: {r:?}");
        assert_eq!(raw.cmd("PING").await, Resp::Simple("PONG".into()), "after {args:?}");
    }
    assert_eq!(stats(&mut raw, "p").await, before, "bad requests changed TOKEN.STATS");
    let info_after = raw.call(&["TOKEN.INFO", "p", &t]).await;
    // The state and times-acquired must be unchanged (the times left move on).
    let (b, a2) = (info_before.pairs(), info_after.pairs());
    assert_eq!(b[0], a2[0]);
    assert_eq!(b[3], a2[3]);
    // DEL of a token that is not a UUID is 0, not an error.
    assert_eq!(raw.call(&["TOKEN.DEL", "p", "nope"]).await, Resp::Int(0));
}

#[tokio::test]
async fn cover_rule_extends_the_lifetime_to_the_lease() {
    let server = TestServer::start();
    let mut con = server.conn().await;
    let t: String = q(&mut con, &["TOKEN.GEN", "p", "PX", "100"]).await.unwrap();
    let got: String = q(&mut con, &["TOKEN.ACQUIRE", "p", "PX", "1000"]).await.unwrap();
    assert_eq!(got, t);
    let v: Vec<Value> = q(&mut con, &["TOKEN.INFO", "p", &t]).await.unwrap();
    let Value::Int(life) = v[3] else { panic!("{v:?}") };
    let Value::Int(lease) = v[5] else { panic!("{v:?}") };
    assert!((900..=1000).contains(&life), "the lifetime was extended to cover the lease: lifetime-left-ms {life}");
    assert!((900..=1000).contains(&lease), "lease-left-ms {lease}");
    assert!(life >= lease, "an assigned token never dies before its lease ends ({life} < {lease})");
    // The extension stays after UNBLOCK ...
    let one: i64 = q(&mut con, &["TOKEN.UNBLOCK", "p", &t]).await.unwrap();
    assert_eq!(one, 1);
    let v: Vec<Value> = q(&mut con, &["TOKEN.INFO", "p", &t]).await.unwrap();
    let Value::Int(life) = v[3] else { panic!("{v:?}") };
    assert!((800..=1000).contains(&life), "after UNBLOCK the lifetime goes on: {life}");
    assert_eq!(v[1], Value::BulkString(b"free".to_vec()));
    assert_eq!(v[5], Value::Int(-1));
    // ... and the next KEEPALIVE restarts it from what GEN gave (100 ms).
    let left: i64 = q(&mut con, &["TOKEN.KEEPALIVE", "p", &t]).await.unwrap();
    assert!((90..=100).contains(&left), "KEEPALIVE of a free token restarts its 100 ms lifetime: {left}");
}

#[tokio::test]
async fn keepalive_of_an_assigned_token_restarts_both() {
    let server = TestServer::start();
    let mut raw = server.raw().await;
    let t = raw.cmd("TOKEN.GEN p PX 5000").await.text();
    assert_eq!(raw.cmd("TOKEN.ACQUIRE p PX 8000").await.text(), t);
    // Lifetime covered to 8000, lease 8000: KEEPALIVE restarts lifetime 5000,
    // lease 8000, cover rule → 8000.
    let left = raw.call(&["TOKEN.KEEPALIVE", "p", &t]).await.int();
    assert!((7_900..=8_000).contains(&left), "{left}");
    let info = raw.call(&["TOKEN.INFO", "p", &t]).await.pairs();
    assert_eq!(info[0].1.text(), "assigned");
    assert!((7_900..=8_000).contains(&info[2].1.int()), "{info:?}");
    assert_eq!(info[3].1.int(), 1, "KEEPALIVE does not count as an acquisition");
}

#[tokio::test]
async fn repeated_options_last_wins() {
    let server = TestServer::start();
    let mut raw = server.raw().await;
    let t = raw.cmd("TOKEN.GEN p PX 100 PX 5000").await.text();
    let info = raw.call(&["TOKEN.INFO", "p", &t]).await.pairs();
    let life = info[1].1.int();
    assert!((4_900..=5_000).contains(&life), "PX 100 PX 5000 → 5000: {life}");
    let ts = raw.cmd("token.gen p ex 1 count 3 count 2").await;
    assert_eq!(ts.items().len(), 2, "COUNT 3 COUNT 2 → 2 (and keywords are case-insensitive)");
    let t = ts.items()[0].text();
    let life = raw.call(&["TOKEN.INFO", "p", &t]).await.pairs()[1].1.int();
    assert!((900..=1_000).contains(&life), "EX 1 → 1000 ms: {life}");
}

#[tokio::test]
async fn del_then_del_again() {
    let server = TestServer::start();
    let mut con = server.conn().await;
    let t: String = q(&mut con, &["TOKEN.GEN", "p"]).await.unwrap();
    let one: i64 = q(&mut con, &["TOKEN.DEL", "p", &t]).await.unwrap();
    assert_eq!(one, 1);
    let zero: i64 = q(&mut con, &["TOKEN.DEL", "p", &t]).await.unwrap();
    assert_eq!(zero, 0);
    let e = q_err(&mut con, &["TOKEN.KEEPALIVE", "p", &t]).await;
    assert!(e.starts_with("NOTOKEN"), "a deleted token is unknown: {e}");
    // An assigned token can be deleted too, and is then gone from STATS.
    let t: String = q(&mut con, &["TOKEN.GEN", "p"]).await.unwrap();
    let _: String = q(&mut con, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
    let one: i64 = q(&mut con, &["TOKEN.DEL", "p", &t]).await.unwrap();
    assert_eq!(one, 1);
    let s = stats_rc(&mut con, "p").await;
    assert!(s.iter().all(|(_, v)| *v == 0), "{s:?}");
    let none: Option<String> = q(&mut con, &["TOKEN.ACQUIRE", "p"]).await.unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn pools_are_any_nonempty_string() {
    let server = TestServer::start();
    let mut raw = server.raw().await;
    for pool in ["a:b:c", "with space", "ünïcødé", "x"] {
        let t = raw.call(&["TOKEN.GEN", pool]).await.text();
        assert_eq!(raw.call(&["TOKEN.ACQUIRE", pool]).await.text(), t, "pool {pool:?}");
        let s = stats_of(&raw.call(&["TOKEN.STATS", pool]).await);
        assert_eq!(s, [1, 0, 1, 0, 0], "pool {pool:?}");
    }
    let e = raw.call(&["TOKEN.GEN", ""]).await.err();
    assert!(e.starts_with("ERR"), "{e}");
}

#[tokio::test]
async fn connection_probes_work_like_redis() {
    let server = TestServer::start();
    let mut con = server.conn().await;
    let pong: String = q(&mut con, &["PING"]).await.unwrap();
    assert_eq!(pong, "PONG");
    let hi: String = q(&mut con, &["ECHO", "hi"]).await.unwrap();
    assert_eq!(hi, "hi");
    let ok: String = q(&mut con, &["SELECT", "0"]).await.unwrap();
    assert_eq!(ok, "OK");
    let id: i64 = q(&mut con, &["CLIENT", "ID"]).await.unwrap();
    assert!(id > 0);
    let _: Vec<String> = q(&mut con, &["TOKEN.GEN", "p", "COUNT", "3"]).await.unwrap();
    let n: i64 = q(&mut con, &["DBSIZE"]).await.unwrap();
    assert!(n >= 1, "DBSIZE counts something once tokens exist: {n}");
}

#[tokio::test]
async fn token_limit_answers_oom_and_changes_nothing() {
    let server = TestServer::start_with(|c| c.max_tokens = 10);
    let mut raw = server.raw().await;
    let e = raw.cmd("TOKEN.GEN p COUNT 11").await.err();
    assert!(e.starts_with("OOM"), "{e}");
    assert_eq!(stats(&mut raw, "p").await, [0; 5], "a refused GEN makes nothing");
    assert_eq!(raw.cmd("TOKEN.GEN p COUNT 10").await.items().len(), 10);
    let e = raw.cmd("TOKEN.GEN q").await.err();
    assert!(e.starts_with("OOM"), "the limit is per server: {e}");
    assert_eq!(stats(&mut raw, "p").await, [10, 10, 0, 0, 0]);
    // Deleting one makes room for one.
    let t = raw.cmd("TOKEN.ACQUIRE p").await.text();
    assert_eq!(raw.call(&["TOKEN.DEL", "p", &t]).await, Resp::Int(1));
    assert_eq!(raw.cmd("TOKEN.GEN q").await.text().len(), 36);
}

#[tokio::test]
async fn default_lifetime_and_lease() {
    let server = TestServer::start();
    let mut raw = server.raw().await;
    let t = raw.cmd("TOKEN.GEN p").await.text();
    assert_eq!(raw.cmd("TOKEN.ACQUIRE p").await.text(), t);
    let info = raw.call(&["TOKEN.INFO", "p", &t]).await.pairs();
    let (life, lease) = (info[1].1.int(), info[2].1.int());
    assert!((299_000..=300_000).contains(&life), "default lifetime 300 s: {life}");
    assert!((59_000..=60_000).contains(&lease), "default lease 60 s: {lease}");
    // Configured defaults.
    let server = TestServer::start_with(|c| {
        c.token_ttl = std::time::Duration::from_secs(7);
        c.lease_ttl = std::time::Duration::from_millis(1500);
    });
    let mut raw = server.raw().await;
    let t = raw.cmd("TOKEN.GEN p").await.text();
    assert_eq!(raw.cmd("TOKEN.ACQUIRE p").await.text(), t);
    let info = raw.call(&["TOKEN.INFO", "p", &t]).await.pairs();
    let (life, lease) = (info[1].1.int(), info[2].1.int());
    assert!((6_900..=7_000).contains(&life), "--token-ttl 7s: {life}");
    assert!((1_400..=1_500).contains(&lease), "--lease-ttl 1500ms: {lease}");
}

/// The `key:value` fields of an INFO reply.
fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

#[tokio::test]
async fn config_resetstat_resets_what_info_stats_counts() {
    let server = TestServer::start();
    let mut con = server.conn().await;
    let _: Vec<String> = q(&mut con, &["TOKEN.GEN", "p", "PX", "20", "COUNT", "3"]).await.unwrap();
    for _ in 0..5 {
        let _: String = q(&mut con, &["PING"]).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let before = loop {
        let text: String = q(&mut con, &["INFO", "stats"]).await.unwrap();
        let f = info_fields(&text);
        if f["expired_tokens"] == "3" {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "the tokens did not expire: {f:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(before["total_commands_processed"].parse::<u64>().unwrap() >= 7, "{before:?}");
    assert!(before["total_connections_received"].parse::<u64>().unwrap() >= 1, "{before:?}");
    let ok: String = q(&mut con, &["CONFIG", "RESETSTAT"]).await.unwrap();
    assert_eq!(ok, "OK");
    let text: String = q(&mut con, &["INFO", "stats"]).await.unwrap();
    let after = info_fields(&text);
    assert_eq!(after["expired_tokens"], "0");
    assert_eq!(after["lease_expired_tokens"], "0");
    assert_eq!(after["total_connections_received"], "0");
    assert_eq!(after["rejected_connections"], "0");
    // Redis counts the INFO that reads the counters; so does tokend.
    assert_eq!(after["total_commands_processed"], "1", "{after:?}");
}

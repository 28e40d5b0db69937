//! `TOKEN.ACQUIRE … BLOCK`: waiters are served first come first served by
//! anything that frees a token, time out with nil, and a waiter that goes
//! away never takes a token with it.

mod common;

use common::{RawConn, Resp, TestServer, encode_cmd, stats, wait_for_waiters};
use std::time::{Duration, Instant};

/// Asserts `conn` has no reply yet (it is still blocked).
async fn assert_still_blocked(conn: &mut RawConn, what: &str) {
    if let Some(r) = conn.read_within(Duration::from_millis(30)).await {
        panic!("{what} should still be blocked, got {r:?}");
    }
}

#[tokio::test]
async fn blocked_client_gets_the_unblocked_token_before_a_later_acquire() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p").await.text(), t);

    // The waiter is a real client library.
    let mut w = server.conn().await;
    let waiter = tokio::spawn(async move {
        let r: Option<String> =
            redis::cmd("TOKEN.ACQUIRE").arg("p").arg("BLOCK").arg(0).query_async(&mut w).await.unwrap();
        (r, Instant::now())
    });
    wait_for_waiters(&mut c, "p", 1).await;
    assert!(!waiter.is_finished(), "the waiter must be blocked");

    // UNBLOCK and a non-blocking ACQUIRE in one write: the waiter has the token
    // already, the newcomer gets nil.
    let mut pipe = encode_cmd(&["TOKEN.UNBLOCK", "p", &t]);
    pipe.extend(encode_cmd(&["TOKEN.ACQUIRE", "p"]));
    let replies = c.pipeline(&pipe, 2).await;
    assert_eq!(replies[0], Resp::Int(1));
    assert_eq!(replies[1], Resp::NullBulk, "the blocked client comes first");

    let (got, _) = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("waiter served").unwrap();
    assert_eq!(got.as_deref(), Some(t.as_str()));
    let info = c.call(&["TOKEN.INFO", "p", &t]).await.pairs();
    assert_eq!(info[0].1.text(), "assigned");
    assert_eq!(info[3].1.int(), 2, "times-acquired");
    assert_eq!(stats(&mut c, "p").await, [1, 0, 1, 0, 0]);
}

#[tokio::test]
async fn waiters_are_served_oldest_first() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    let mut d = server.raw().await;
    a.send(&["TOKEN.ACQUIRE", "p", "BLOCK", "0"]).await;
    wait_for_waiters(&mut c, "p", 1).await;
    b.send(&["TOKEN.ACQUIRE", "p", "PX", "5000", "BLOCK", "0"]).await;
    wait_for_waiters(&mut c, "p", 2).await;
    assert_eq!(stats(&mut c, "p").await, [0, 0, 0, 0, 2], "STATS counts blocked waiters");

    let t1 = c.cmd("TOKEN.GEN p").await.text();
    assert_eq!(a.read().await.text(), t1, "the first GEN serves the oldest waiter");
    assert_still_blocked(&mut b, "the second waiter").await;
    assert_eq!(stats(&mut c, "p").await, [1, 0, 1, 0, 1]);

    let t2 = c.cmd("TOKEN.GEN p").await.text();
    assert_eq!(b.read().await.text(), t2, "the second GEN serves the next waiter");
    assert_eq!(stats(&mut c, "p").await, [2, 0, 2, 0, 0]);

    // Three waiters, GEN COUNT 2: the two oldest are served, the third waits.
    a.send(&["TOKEN.ACQUIRE", "q", "BLOCK", "0"]).await;
    wait_for_waiters(&mut c, "q", 1).await;
    b.send(&["TOKEN.ACQUIRE", "q", "BLOCK", "0"]).await;
    wait_for_waiters(&mut c, "q", 2).await;
    d.send(&["TOKEN.ACQUIRE", "q", "BLOCK", "0"]).await;
    wait_for_waiters(&mut c, "q", 3).await;
    let toks: Vec<String> = c.cmd("TOKEN.GEN q COUNT 2").await.items().iter().map(Resp::text).collect();
    let (ga, gb) = (a.read().await.text(), b.read().await.text());
    assert_ne!(ga, gb);
    assert!(toks.contains(&ga) && toks.contains(&gb), "{toks:?} vs {ga} {gb}");
    assert_still_blocked(&mut d, "the newest waiter").await;
    let t3 = c.cmd("TOKEN.GEN q").await.text();
    assert_eq!(d.read().await.text(), t3);
}

#[tokio::test]
async fn block_timeout_returns_nil_after_the_timeout() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let start = Instant::now();
    let r = c.cmd("TOKEN.ACQUIRE empty BLOCK 50").await;
    let waited = start.elapsed();
    assert_eq!(r, Resp::NullBulk, "a timeout is a null bulk string in RESP2");
    assert!(waited >= Duration::from_millis(50), "returned after {waited:?}, before the 50 ms timeout");
    assert!(waited <= Duration::from_millis(50 + 100), "returned only after {waited:?}");
    eprintln!("BLOCK 50 returned nil after {waited:?}");
    assert_eq!(stats(&mut c, "empty").await, [0; 5], "the waiter is gone");
    // The connection is usable, and in RESP3 the timeout is `_`.
    c.cmd("HELLO 3").await;
    assert_eq!(c.cmd("TOKEN.ACQUIRE empty BLOCK 20").await, Resp::Null);
}

#[tokio::test]
async fn block_on_a_pool_with_free_tokens_returns_at_once() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    let start = Instant::now();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p BLOCK 0").await.text(), t);
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_waiter_with_a_timeout_is_served_before_it() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut w = server.raw().await;
    w.send(&["TOKEN.ACQUIRE", "p", "PX", "100", "BLOCK", "5000"]).await;
    wait_for_waiters(&mut c, "p", 1).await;
    // Served 60 ms after it started waiting: its lease starts when served.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    assert_eq!(w.read().await.text(), t);
    let lease = c.call(&["TOKEN.INFO", "p", &t]).await.pairs()[2].1.int();
    assert!((80..=100).contains(&lease), "a served waiter's lease starts when it is served: lease-left-ms {lease}");
}

#[tokio::test]
async fn a_lease_ending_serves_a_waiter() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut w = server.raw().await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    let start = Instant::now();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p PX 60").await.text(), t);
    w.send(&["TOKEN.ACQUIRE", "p", "PX", "5000", "BLOCK", "0"]).await;
    let r = w.read().await;
    let waited = start.elapsed();
    assert_eq!(r.text(), t, "the token whose lease ended goes to the waiter");
    eprintln!("waiter served {waited:?} after a 60 ms lease started");
    assert!(waited >= Duration::from_millis(59), "served before the lease ended: {waited:?}");
    assert!(waited <= Duration::from_millis(60 + 25), "served {waited:?} after a 60 ms lease started");
    let info = c.call(&["TOKEN.INFO", "p", &t]).await.pairs();
    assert_eq!(info[0].1.text(), "assigned");
    assert!((4_900..=5_000).contains(&info[2].1.int()), "{info:?}");
}

#[tokio::test]
async fn commands_pipelined_behind_a_blocked_acquire_run_after_it() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut w = server.raw().await;
    let mut pipe = encode_cmd(&["TOKEN.ACQUIRE", "p", "BLOCK", "0"]);
    pipe.extend(encode_cmd(&["PING", "after"]));
    w.send_raw(&pipe).await;
    wait_for_waiters(&mut c, "p", 1).await;
    assert_still_blocked(&mut w, "the pipelined ACQUIRE").await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    assert_eq!(w.read().await.text(), t);
    assert_eq!(w.read().await.text(), "after");
}

#[tokio::test]
async fn a_waiter_that_disconnects_does_not_swallow_a_token() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut w = server.raw().await;
    w.send(&["TOKEN.ACQUIRE", "p", "BLOCK", "0"]).await;
    wait_for_waiters(&mut c, "p", 1).await;
    drop(w);
    wait_for_waiters(&mut c, "p", 0).await;
    let t = c.cmd("TOKEN.GEN p").await.text();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p").await.text(), t, "the gone waiter did not take the token");
    assert_eq!(stats(&mut c, "p").await, [1, 0, 1, 0, 0]);
}

/// Stricter: the token is generated right after the waiter hangs up, before
/// the server may have noticed. Whatever the interleaving, the token must end
/// up free for the next client (not assigned to a dead connection for its
/// whole lease). Repeated to give the race a chance.
#[tokio::test]
async fn a_waiter_that_disconnects_right_before_gen_does_not_swallow_it() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut swallowed = Vec::new();
    const ROUNDS: usize = 40;
    for round in 0..ROUNDS {
        let pool = format!("p{round}");
        let mut w = server.raw().await;
        w.send(&["TOKEN.ACQUIRE", &pool, "BLOCK", "0"]).await;
        wait_for_waiters(&mut c, &pool, 1).await;
        drop(w);
        let t = c.call(&["TOKEN.GEN", &pool]).await.text();
        // Give the server up to 1 s to notice the hang-up and give it back.
        let start = Instant::now();
        let got = loop {
            match c.call(&["TOKEN.ACQUIRE", &pool]).await {
                Resp::Bulk(b) => break Some(String::from_utf8(b).unwrap()),
                _ if start.elapsed() > Duration::from_secs(1) => break None,
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        match got {
            Some(g) => assert_eq!(g, t),
            None => {
                let info = c.call(&["TOKEN.INFO", &pool, &t]).await;
                let s = stats(&mut c, &pool).await;
                swallowed.push(format!("round {round}: INFO {info:?}, STATS {s:?}"));
            }
        }
    }
    assert!(
        swallowed.is_empty(),
        "{} of {ROUNDS} tokens were handed to a waiter that had already disconnected (and stay assigned for \
         the whole default lease):\n{}",
        swallowed.len(),
        swallowed.join("\n")
    );
}

#[tokio::test]
async fn blocked_waiters_count_drops_on_timeout() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    a.send(&["TOKEN.ACQUIRE", "p", "BLOCK", "0"]).await;
    // Long enough that the count of two is seen on a loaded machine: it
    // lasts only until b times out.
    b.send(&["TOKEN.ACQUIRE", "p", "BLOCK", "400"]).await;
    wait_for_waiters(&mut c, "p", 2).await;
    assert_eq!(b.read().await, Resp::NullBulk);
    assert_eq!(stats(&mut c, "p").await, [0, 0, 0, 0, 1]);
    let t = c.cmd("TOKEN.GEN p").await.text();
    assert_eq!(a.read().await.text(), t);
    assert_eq!(stats(&mut c, "p").await, [1, 0, 1, 0, 0]);
}

/// A graceful stop answers clients blocked in ACQUIRE before it closes
/// their connections: `-SHUTDOWN`, and no token was assigned to them.
#[tokio::test]
async fn shutdown_answers_blocked_clients_before_closing() {
    let mut server = TestServer::start();
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    a.send(&["TOKEN.ACQUIRE", "p", "BLOCK", "0"]).await;
    b.send(&["TOKEN.ACQUIRE", "p", "BLOCK", "60000"]).await;
    let mut c = server.raw().await;
    wait_for_waiters(&mut c, "p", 2).await;
    drop(c);
    let stop = std::thread::spawn(move || server.stop());
    let shutdown = Resp::Error("SHUTDOWN tokend is shutting down; no token was assigned".into());
    assert_eq!(a.read().await, shutdown);
    assert_eq!(b.read().await, shutdown);
    a.assert_closed().await;
    b.assert_closed().await;
    stop.join().unwrap();
}

/// A RESP3 client may subscribe and then block in ACQUIRE: a message
/// published meanwhile reaches it at once (a push), not when the block ends.
#[tokio::test]
async fn resp3_pushes_arrive_while_an_acquire_blocks() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    assert!(matches!(c.cmd("HELLO 3").await, Resp::Map(_)));
    let r = c.cmd("SUBSCRIBE news").await;
    assert!(matches!(r, Resp::Push(_)), "{r:?}");
    c.send(&["TOKEN.ACQUIRE", "empty", "BLOCK", "2000"]).await;
    let mut p = server.raw().await;
    wait_for_waiters(&mut p, "empty", 1).await;
    let sent = Instant::now();
    assert_eq!(p.cmd("PUBLISH news hello").await, Resp::Int(1));
    let m = c.read().await;
    assert_eq!(
        m,
        Resp::Push(vec![Resp::Bulk(b"message".to_vec()), Resp::Bulk(b"news".to_vec()), Resp::Bulk(b"hello".to_vec())])
    );
    assert!(sent.elapsed() < Duration::from_millis(1000), "delivered {:?} after PUBLISH", sent.elapsed());
    assert!(c.read().await.is_null(), "then the ACQUIRE times out with nil");
}

//! MULTI / EXEC / DISCARD / WATCH against a real server: what client
//! libraries send by default (redis-py's `pipeline()`, the redis crate's
//! atomic pipeline), aborted transactions, WATCH, and atomicity across
//! shards as another client sees it.

mod common;
mod procs;

use common::{Resp, TestServer, assert_uuid_v4, stats, stats_of};
use std::hash::BuildHasher;
use std::process::Command;
use std::time::{Duration, Instant};

/// The store's shard of a pool with the default 16 shards (the same hash
/// the store uses), so a test can pick pools on different shards.
fn shard_of(pool: &str) -> u64 {
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(pool.as_bytes()) % 16
}

/// Two pool names on different shards.
fn pools_on_two_shards() -> (String, String) {
    let a = "left".to_string();
    let b = (0..).map(|i| format!("right{i}")).find(|b| shard_of(b) != shard_of(&a)).unwrap();
    (a, b)
}

#[tokio::test]
async fn redis_crate_atomic_pipeline_runs_both_gens() {
    let server = TestServer::start();
    let mut con = server.conn().await;
    let (a, b): (String, String) = redis::pipe()
        .atomic()
        .cmd("TOKEN.GEN")
        .arg("a")
        .cmd("TOKEN.GEN")
        .arg("b")
        .query_async(&mut con)
        .await
        .expect("MULTI/EXEC through the redis crate");
    assert_uuid_v4(&a);
    assert_uuid_v4(&b);
    let mut c = server.raw().await;
    assert_eq!(stats(&mut c, "a").await, [1, 1, 0, 0, 0]);
    assert_eq!(stats(&mut c, "b").await, [1, 1, 0, 0, 0]);
}

#[tokio::test]
async fn queued_replies_and_exec_array_on_the_wire() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("TOKEN.GEN p COUNT 2").await, Resp::Simple("QUEUED".into()));
    assert_eq!(c.cmd("TOKEN.STATS p").await, Resp::Simple("QUEUED".into()));
    assert_eq!(c.cmd("PING").await, Resp::Simple("QUEUED".into()));
    assert_eq!(c.cmd("MULTI").await.err(), "ERR MULTI calls can not be nested");
    let r = c.cmd("EXEC").await;
    let items = r.items();
    assert_eq!(items.len(), 3, "{r:?}");
    assert_eq!(items[0].items().len(), 2);
    assert_eq!(stats_of(&items[1]), [2, 2, 0, 0, 0], "the STATS inside sees the GEN before it");
    assert_eq!(items[2], Resp::Simple("PONG".into()));
    assert_eq!(c.cmd("EXEC").await.err(), "ERR EXEC without MULTI");
    assert_eq!(c.cmd("DISCARD").await.err(), "ERR DISCARD without MULTI");

    // DISCARD drops what was queued.
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("TOKEN.GEN p").await, Resp::Simple("QUEUED".into()));
    assert_eq!(c.cmd("DISCARD").await, Resp::Simple("OK".into()));
    assert_eq!(stats(&mut c, "p").await, [2, 2, 0, 0, 0]);

    // A blocking ACQUIRE inside MULTI does not block: nil at once.
    let start = Instant::now();
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("TOKEN.ACQUIRE empty BLOCK 0").await, Resp::Simple("QUEUED".into()));
    let r = c.cmd("EXEC").await;
    assert!(r.items()[0].is_null(), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));

    // Subscribing inside a transaction is refused and aborts it.
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("SUBSCRIBE ch").await.err(), "ERR Command not allowed inside a transaction");
    assert!(c.cmd("EXEC").await.err().starts_with("EXECABORT"));
}

#[tokio::test]
async fn a_command_that_fails_to_queue_aborts_the_transaction() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    for bad in ["TOKEN.GEN", "TOKEN.GEN b BOGUS", "TOKEN.GEN b PX 0", "NOSUCHCOMMAND x", "TOKEN.ACQUIRE b BLOCK -1"] {
        assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
        assert_eq!(c.cmd("TOKEN.GEN a").await, Resp::Simple("QUEUED".into()));
        assert!(c.cmd(bad).await.err().starts_with("ERR"), "{bad} must fail to queue");
        assert_eq!(
            c.cmd("EXEC").await.err(),
            "EXECABORT Transaction discarded because of previous errors.",
            "after {bad}"
        );
        assert_eq!(stats(&mut c, "a").await, [0; 5], "nothing ran after {bad}");
        assert_eq!(stats(&mut c, "b").await, [0; 5]);
    }
    // A command that queues fine but fails when run (a token the pool does
    // not have) fails alone, as in Redis: the others run.
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    c.cmd("TOKEN.UNBLOCK a 67e55044-10b1-426f-9247-bb680e5fe0c8").await;
    c.cmd("TOKEN.GEN a").await;
    let r = c.cmd("EXEC").await;
    assert!(r.items()[0].err().starts_with("NOTOKEN"), "{r:?}");
    assert_uuid_v4(&r.items()[1].text());
}

/// Every command the server lists, queued inside MULTI, gets its answer
/// (see [`common::every_command_inside_exec`]).
#[tokio::test]
async fn every_command_inside_exec_answers_and_the_server_goes_on() {
    let server = TestServer::start_with(|c| c.enable_flush = true);
    common::every_command_inside_exec(server.addr).await;
}

/// The same on the binary with one thread serving requests (its default
/// on one core: a current-thread runtime, which the in-process test
/// servers do not use).
#[tokio::test]
async fn every_command_inside_exec_answers_on_one_thread() {
    let t = procs::Tokend::start(&["--threads", "1", "--enable-flush", "yes"]);
    common::every_command_inside_exec(t.addr).await;
}

#[tokio::test]
async fn watch_aborts_exec_when_a_watched_pool_changed() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut other = server.raw().await;

    // Unchanged: EXEC runs.
    assert_eq!(c.cmd("WATCH w").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("WATCH w").await.err(), "ERR WATCH inside MULTI is not allowed");
    c.cmd("TOKEN.GEN out").await;
    assert_eq!(c.cmd("EXEC").await.items().len(), 1);

    // Changed by another client in between: a null array, nothing ran.
    assert_eq!(c.cmd("WATCH w").await, Resp::Simple("OK".into()));
    assert_uuid_v4(&other.cmd("TOKEN.GEN w").await.text());
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    c.cmd("TOKEN.GEN out").await;
    c.send_raw(b"EXEC\r\n").await;
    assert_eq!(c.read().await, Resp::NullArray, "RESP2: *-1");
    assert_eq!(stats(&mut c, "out").await[0], 1, "the second GEN did not run");

    // The watch ended with that EXEC; UNWATCH forgets one too.
    assert_eq!(c.cmd("WATCH w").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("UNWATCH").await, Resp::Simple("OK".into()));
    other.cmd("TOKEN.GEN w").await;
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    c.cmd("TOKEN.GEN out").await;
    assert_eq!(c.cmd("EXEC").await.items().len(), 1);

    // An expiry counts as a change, as a key expiring does in Redis.
    let t = other.cmd("TOKEN.GEN e PX 100").await.text();
    assert_eq!(c.cmd("WATCH e").await, Resp::Simple("OK".into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(&mut other, "e").await[0] != 0 {
        assert!(Instant::now() < deadline, "token {t} did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()));
    c.cmd("TOKEN.GEN out").await;
    assert_eq!(c.cmd("EXEC").await, Resp::NullArray);
}

/// Two pools of one token on different shards; transactions move the one
/// free token's worth back and forth (ACQUIRE the free one here, UNBLOCK the
/// assigned one there) while another client reads both pools in one
/// transaction: the number of free tokens is always exactly one.
#[tokio::test]
async fn no_client_ever_sees_half_a_transaction_across_shards() {
    let server = TestServer::start();
    let (x, y) = pools_on_two_shards();
    let mut c = server.raw().await;
    let tx = c.cmd(&format!("TOKEN.GEN {x} EX 600")).await.text();
    let ty = c.cmd(&format!("TOKEN.GEN {y} EX 600")).await.text();
    assert_eq!(c.cmd(&format!("TOKEN.ACQUIRE {y} EX 600")).await.text(), ty);

    // Both sides pipeline their transactions (100 per write) so that the
    // server runs them back to back on its two worker threads: a mover
    // whose two commands were not atomic leaves a gap of a microsecond or
    // so, which this many reads hit (checked by running the commands one by
    // one instead: the sum read 0 within the first rounds).
    const ROUNDS: usize = 20_000;
    const BATCH: usize = 100;
    let mover = {
        let (x, y, tx, ty) = (x.clone(), y.clone(), tx.clone(), ty.clone());
        let mut m = server.raw().await;
        tokio::spawn(async move {
            for start in (0..ROUNDS).step_by(BATCH) {
                let mut cmds = String::new();
                for round in start..start + BATCH {
                    // Free in `from`, assigned in `to` before; the reverse after.
                    let (from, to, assigned) = if round % 2 == 0 { (&x, &y, &ty) } else { (&y, &x, &tx) };
                    cmds +=
                        &format!("MULTI\r\nTOKEN.ACQUIRE {from} EX 600\r\nTOKEN.UNBLOCK {to} {assigned}\r\nEXEC\r\n");
                }
                let replies = m.pipeline(cmds.as_bytes(), 4 * BATCH).await;
                for (i, r) in replies.chunks(4).enumerate() {
                    assert_eq!(r[3].items()[1], Resp::Int(1), "round {}: {r:?}", start + i);
                }
            }
        })
    };
    let read = format!("MULTI\r\nTOKEN.STATS {x}\r\nTOKEN.STATS {y}\r\nEXEC\r\n").repeat(BATCH);
    let mut reads = 0;
    while !mover.is_finished() {
        for r in c.pipeline(read.as_bytes(), 4 * BATCH).await.chunks(4) {
            let (sx, sy) = (stats_of(&r[3].items()[0]), stats_of(&r[3].items()[1]));
            assert_eq!(sx[1] + sy[1], 1, "free tokens in {x} and {y}: {sx:?} {sy:?}");
            reads += 1;
        }
    }
    mover.await.unwrap();
    assert!(reads >= 1_000, "the reader ran {reads} times");
}

/// redis-py's default `pipeline()` wraps the commands in MULTI/EXEC.
#[test]
fn redis_py_default_pipeline() {
    let server = TestServer::start();
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]))
p = r.pipeline()
p.execute_command("TOKEN.GEN", "a")
p.execute_command("TOKEN.GEN", "b")
a, b = p.execute()
assert len(a) == 36 and len(b) == 36, (a, b)
p = r.pipeline()
p.execute_command("TOKEN.GEN", "a")
p.execute_command("TOKEN.GEN", "b", "BOGUS")
try:
    p.execute()
    raise SystemExit("EXEC of a transaction with a syntax error did not fail")
except redis.exceptions.ExecAbortError as e:
    print("aborted:", e)
except redis.exceptions.ResponseError as e:
    print("aborted:", e)
for pool in ("a", "b"):
    stats = r.execute_command("TOKEN.STATS", pool)
    assert stats[1] == 1, (pool, stats)
print("ok")
"#;
    let out = Command::new(procs::PYTHON)
        .arg("-c")
        .arg(script)
        .arg(server.port.to_string())
        .output()
        .expect("the tests' Python (scripts/setup.sh makes .venv)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("aborted: ") && text.ends_with("ok\n"), "{text}");
}

//! Hardening, against the real binary: authentication, TLS, limits, hostile
//! and slow clients, and 2,000 concurrent connections with faults.

mod procs;

use procs::Tokend;
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli is not installed: run scripts/setup.sh");
    // redis-cli reports AUTH failures on stderr.
    let mut s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    s.push_str(String::from_utf8_lossy(&out.stderr).trim());
    s
}

async fn read_some(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("reply").unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn requirepass_with_redis_cli() {
    let t = Tokend::start(&["--requirepass", "s3cret"]);
    let port = t.addr.port();
    assert!(cli(port, &["TOKEN.GEN", "p"]).starts_with("NOAUTH"), "no password: NOAUTH");
    assert!(cli(port, &["PING"]).starts_with("NOAUTH"), "PING too, as in Redis");
    let tok = cli(port, &["-a", "s3cret", "--no-auth-warning", "TOKEN.GEN", "p"]);
    assert_eq!(tok.len(), 36, "{tok}");
    assert!(cli(port, &["-a", "wrong", "--no-auth-warning", "PING"]).contains("WRONGPASS"));
    assert!(cli(port, &["--user", "default", "--pass", "s3cret", "--no-auth-warning", "PING"]).contains("PONG"));
}

#[tokio::test]
async fn huge_bulk_header_is_refused_without_growing_memory() {
    let t = Tokend::start(&[]);
    let before = t.rss_kib();
    for _ in 0..20 {
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(b"*1\r\n$4294967295\r\n").await.unwrap();
        let r = read_some(&mut s).await;
        assert_eq!(r, "-ERR Protocol error: invalid bulk length\r\n");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert_eq!(n, 0, "then closed");
    }
    let after = t.rss_kib();
    assert!(after < before + 8 * 1024, "RSS grew from {before} KiB to {after} KiB");
    // A large but allowed request in pieces is still fine.
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let payload = vec![b'x'; 1 << 20];
    s.write_all(format!("*2\r\n$4\r\nECHO\r\n${}\r\n", payload.len()).as_bytes()).await.unwrap();
    for chunk in payload.chunks(64 * 1024) {
        s.write_all(chunk).await.unwrap();
    }
    s.write_all(b"\r\n").await.unwrap();
    let mut got = Vec::new();
    while got.len() < payload.len() + 11 {
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"$1048576\r\nxxxx"));
}

#[tokio::test]
async fn max_clients_gets_redis_error() {
    let t = Tokend::start(&["--maxclients", "2"]);
    let mut a = TcpStream::connect(t.addr).await.unwrap();
    let mut b = TcpStream::connect(t.addr).await.unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(b"PING\r\n").await.unwrap();
        assert_eq!(read_some(s).await, "+PONG\r\n");
    }
    let mut c = TcpStream::connect(t.addr).await.unwrap();
    assert_eq!(read_some(&mut c).await, "-ERR max number of clients reached\r\n");
    drop(a);
    // The slot frees once the server saw the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = TcpStream::connect(t.addr).await.unwrap();
        d.write_all(b"PING\r\n").await.unwrap();
        if read_some(&mut d).await == "+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_clients_are_closed_but_subscribers_are_not() {
    let t = Tokend::start(&["--timeout", "1"]);
    let mut idle = TcpStream::connect(t.addr).await.unwrap();
    let mut sub = TcpStream::connect(t.addr).await.unwrap();
    sub.write_all(b"SUBSCRIBE c\r\n").await.unwrap();
    assert!(read_some(&mut sub).await.contains("subscribe"));
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0, "idle client closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    sub.write_all(b"PING\r\n").await.unwrap();
    assert!(read_some(&mut sub).await.contains("pong"), "subscriber still served");
}

/// A subscriber that stops reading is cut off past the pub/sub hard limit,
/// as in Redis (the flag sets it, CONFIG SET moves it, 0 turns it off); one
/// within the limit keeps every message.
#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_at_its_output_limit() {
    let t = Tokend::start(&["--client-output-buffer-limit", "pubsub 1mb 0 0"]);
    let port = t.addr.port();
    assert_eq!(
        cli(port, &["CONFIG", "GET", "client-output-buffer-limit"]).lines().nth(1),
        Some("normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 0 0")
    );
    let mut c = t.conn().await;
    let payload = "x".repeat(100_000);
    // What loopback's socket buffers take before the server's queue grows:
    // enough messages to pass them and the limit.
    let flood = async |c: &mut redis::aio::MultiplexedConnection, n: usize| {
        for _ in 0..n {
            let _: i64 = redis::cmd("PUBLISH").arg("c").arg(&payload).query_async(c).await.unwrap();
        }
    };
    // PUBLISH answers how many subscribers got the message.
    let numsub = async |c: &mut redis::aio::MultiplexedConnection| {
        let n: i64 = redis::cmd("PUBLISH").arg("c").arg("probe").query_async(c).await.unwrap();
        n
    };
    let mut sub = TcpStream::connect(t.addr).await.unwrap();
    sub.write_all(b"SUBSCRIBE c\r\n").await.unwrap();
    assert!(read_some(&mut sub).await.contains("subscribe"));
    // 20 MB: under the default 32 MB, over 1 MB whatever the socket
    // buffers (a few MB on loopback) took.
    flood(&mut c, 200).await;
    assert_eq!(numsub(&mut c).await, 0, "cut off past 1 MB queued");
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sub.read_to_end(&mut all)).await.expect("closed").unwrap();
    assert!(all.len() < 20_000_000, "the server closed it before the end: {} bytes", all.len());
    // No limit: the same flood, unread, stays queued and is read whole.
    assert_eq!(cli(port, &["CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"]), "OK");
    let mut sub = TcpStream::connect(t.addr).await.unwrap();
    sub.write_all(b"SUBSCRIBE c\r\n").await.unwrap();
    assert!(read_some(&mut sub).await.contains("subscribe"));
    flood(&mut c, 400).await;
    assert_eq!(numsub(&mut c).await, 1, "no limit: still subscribed");
    // What it has not taken shows as its omem, as in Redis: 40 MB less what
    // the socket buffers took (a few MB).
    let omem = |port: u16| -> u64 {
        let list = cli(port, &["CLIENT", "LIST", "TYPE", "pubsub"]);
        let field = list.split(' ').find_map(|f| f.strip_prefix("omem=")).expect("a subscriber");
        field.parse().unwrap()
    };
    let queued = omem(port);
    assert!(queued > 20_000_000, "omem {queued}");
    assert!(info_field(port, "clients", "client_recent_max_output_buffer") > 20_000_000);
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while got < 400 * payload.len() {
        let n = tokio::time::timeout(Duration::from_secs(10), sub.read(&mut buf)).await.expect("messages").unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += buf[..n].iter().filter(|&&b| b == b'x').count();
    }
    assert_eq!(got, 400 * payload.len(), "every message whole");
    assert_eq!(numsub(&mut c).await, 1);
    // The probes are taken by its connection as it writes them, on its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while omem(port) > 0 {
        assert!(Instant::now() < deadline, "all taken: omem {}", omem(port));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(info_field(port, "clients", "client_recent_max_output_buffer"), 0);
}

/// A field of `INFO section`, as a number.
fn info_field(port: u16, section: &str, field: &str) -> u64 {
    let out = cli(port, &["INFO", section]);
    let prefix = format!("{field}:");
    let line = out.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
    line.unwrap_or_else(|| panic!("no {field} in {out}")).trim().parse().unwrap()
}

/// A mass expiry's events fill an unread subscriber's queue: the expiry
/// threads pause once it is past half its limit (so that a subscriber
/// lagging only because the server's writes lag is not cut off), but the
/// pause is bounded, so a subscriber that stopped reading is still cut off
/// at the limit, and every token still expires.
#[tokio::test]
async fn expiry_waits_for_a_filling_subscriber_but_still_cuts_off_one_that_stopped() {
    let t = Tokend::start(&["--client-output-buffer-limit", "pubsub 2mb 0 0"]);
    let port = t.addr.port();
    let mut sub = TcpStream::connect(t.addr).await.unwrap();
    sub.write_all(b"SUBSCRIBE __keyevent@0__:expired\r\n").await.unwrap();
    assert!(read_some(&mut sub).await.contains("subscribe"));
    assert_eq!(info_field(port, "expiry", "expiry_subscriber_waits"), 0);
    // 200k events of about 90 bytes: 18 MB, far past the 2 MB limit and
    // what loopback's socket buffers hold. A batch of expiries is at most
    // 4,096 events (under 0.4 MB), so the queue passes the half mark
    // before it passes the limit.
    for _ in 0..2 {
        let out = cli(port, &["TOKEN.GEN", "p", "PX", "300", "COUNT", "100000"]);
        assert_eq!(out.lines().count(), 100_000, "{}", &out[..out.len().min(200)]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(port, "expiry", "expiries_expired") < 200_000 {
        assert!(Instant::now() < deadline, "every token expires, waits or not");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waits = info_field(port, "expiry", "expiry_subscriber_waits");
    assert!(waits > 0, "the expiry threads paused for the filling queue");
    assert!(info_field(port, "expiry", "expiry_subscriber_wait_usec") > 0);
    assert_eq!(cli(port, &["PUBSUB", "NUMSUB", "__keyevent@0__:expired"]).lines().nth(1), Some("0"), "cut off");
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sub.read_to_end(&mut all)).await.expect("closed").unwrap();
    assert!(all.len() < 18_000_000, "cut off before the end: {} bytes", all.len());
}

/// `PUBSUB CHANNELS`, `NUMSUB` and `NUMPAT` answer as redis-server does for
/// the same subscriptions (CHANNELS in any order, as Redis's is unordered).
#[tokio::test]
async fn pubsub_introspection_answers_as_redis_does() {
    let t = Tokend::start(&[]);
    let r = procs::RedisProc::start();
    let mut seen = Vec::new();
    for (port, addr) in [(t.addr.port(), t.addr), (r.port, format!("127.0.0.1:{}", r.port).parse().unwrap())] {
        let mut subs = Vec::new();
        for (cmds, confirmations) in
            [("SUBSCRIBE news sport\r\n", 2), ("SUBSCRIBE news\r\nPSUBSCRIBE n*\r\n", 2), ("PSUBSCRIBE n* s*\r\n", 2)]
        {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(cmds.as_bytes()).await.unwrap();
            let mut got = String::new();
            while got.matches("subscribe").count() < confirmations {
                got.push_str(&read_some(&mut s).await);
            }
            subs.push(s);
        }
        let sorted = |out: String| {
            let mut v: Vec<String> = out.lines().map(str::to_string).collect();
            v.sort();
            v.join(",")
        };
        let answers = vec![
            sorted(cli(port, &["PUBSUB", "CHANNELS"])),
            sorted(cli(port, &["PUBSUB", "CHANNELS", "s*"])),
            cli(port, &["PUBSUB", "NUMSUB", "news", "sport", "none"]).replace('\n', ","),
            cli(port, &["PUBSUB", "NUMSUB"]),
            cli(port, &["PUBSUB", "NUMPAT"]),
            cli(port, &["PUBSUB", "NUMPAT", "extra"]).split(' ').next().unwrap_or("").to_string(),
            cli(port, &["PUBSUB", "NOPE"]).split(' ').next().unwrap_or("").to_string(),
        ];
        drop(subs);
        seen.push(answers);
    }
    assert_eq!(seen[0], ["news,sport", "sport", "news,2,sport,1,none,0", "", "2", "ERR", "ERR"]);
    assert_eq!(seen[0], seen[1], "tokend, then redis-server");
}

#[tokio::test]
async fn tls_with_redis_cli() {
    let dir = std::env::temp_dir().join(format!("tokend-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls_port = procs::free_port();
    let t = Tokend::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let run = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", cert.to_str().unwrap(), "-h", "127.0.0.1", "-p", &tls_port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run(&["PING"]), "PONG");
    let tok = run(&["TOKEN.GEN", "p"]);
    assert_eq!(tok.len(), 36, "{tok}");
    // The same state over plain TCP.
    assert_eq!(cli(t.addr.port(), &["TOKEN.ACQUIRE", "p"]), tok);
    // A plain-text client on the TLS port gets nowhere, and the server lives.
    let mut s = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    s.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert!(!buf[..n].starts_with(b"+PONG"));
    assert_eq!(run(&["PING"]), "PONG");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn slowloris_client_does_not_block_others() {
    let t = Tokend::start(&[]);
    let addr = t.addr;
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for b in b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n" {
            s.write_all(&[*b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        read_some(&mut s).await
    });
    let mut c = t.conn().await;
    let mut worst = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let _: String = redis::cmd("TOKEN.GEN").arg("p").query_async(&mut c).await.unwrap();
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(worst < Duration::from_millis(100), "others waited {worst:?}");
    assert_eq!(slow.await.unwrap(), "$2\r\nhi\r\n");
}

#[tokio::test]
async fn lapsed_lease_goes_to_exactly_one_waiter() {
    let t = Tokend::start(&[]);
    let mut c = t.conn().await;
    let tok: String = redis::cmd("TOKEN.GEN").arg("p").query_async(&mut c).await.unwrap();
    let held: String = redis::cmd("TOKEN.ACQUIRE").arg("p").arg("PX").arg(80).query_async(&mut c).await.unwrap();
    assert_eq!(held, tok);
    let started = Instant::now();
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let mut w = t.conn().await;
        waiters.push(tokio::spawn(async move {
            redis::cmd("TOKEN.ACQUIRE")
                .arg("p")
                .arg("PX")
                .arg(60_000)
                .arg("BLOCK")
                .arg(400)
                .query_async::<Option<String>>(&mut w)
                .await
                .unwrap()
                .map(|t| (t, Instant::now()))
        }));
    }
    let mut winners = Vec::new();
    for w in waiters {
        if let Some(x) = w.await.unwrap() {
            winners.push(x);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one client got it: {winners:?}");
    assert_eq!(winners[0].0, tok);
    let at = winners[0].1.duration_since(started);
    assert!(at >= Duration::from_millis(60) && at < Duration::from_millis(300), "served after {at:?}");
    // The old holder's keepalive no longer renews a lease it lost: the token is
    // assigned to the winner now, with the winner's lease.
    let info: HashMap<String, redis::Value> =
        redis::cmd("TOKEN.INFO").arg("p").arg(&tok).query_async(&mut c).await.unwrap();
    assert_eq!(info["times-acquired"], redis::Value::Int(2));
}

/// 2,000 connections acquire, keep alive and unblock while 200 others connect
/// and drop mid-request; afterwards the store adds up and no token was ever
/// held by two clients at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_with_faults_keep_invariants() {
    const CLIENTS: usize = 2000;
    const TOKENS: usize = 300;
    let t = Tokend::start(&["--maxclients", "5000"]);
    let mut c = t.conn().await;
    let _: Vec<String> = redis::cmd("TOKEN.GEN").arg("p").arg("COUNT").arg(TOKENS).query_async(&mut c).await.unwrap();
    // token -> client that believes it holds it.
    let holders: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let ops = Arc::new(AtomicU64::new(0));
    let addr = t.addr;
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let (holders, ops) = (holders.clone(), ops.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut buf = vec![0u8; 256];
            let mut call = async |s: &mut TcpStream, cmd: String| -> String {
                s.write_all(cmd.as_bytes()).await.unwrap();
                let n = s.read(&mut buf).await.unwrap();
                String::from_utf8_lossy(&buf[..n]).into_owned()
            };
            for _ in 0..3 {
                let r = call(&mut s, "TOKEN.ACQUIRE p PX 60000\r\n".into()).await;
                ops.fetch_add(1, Ordering::Relaxed);
                let Some(tok) = r.strip_prefix("$36\r\n").map(|r| r[..36].to_string()) else {
                    assert_eq!(r, "$-1\r\n");
                    tokio::task::yield_now().await;
                    continue;
                };
                if let Some(other) = holders.lock().unwrap().insert(tok.clone(), id) {
                    panic!("token {tok} handed to client {id} while client {other} holds it");
                }
                let r = call(&mut s, format!("TOKEN.KEEPALIVE p {tok}\r\n")).await;
                assert!(r.starts_with(':'), "{r}");
                holders.lock().unwrap().remove(&tok);
                let r = call(&mut s, format!("TOKEN.UNBLOCK p {tok}\r\n")).await;
                assert_eq!(r, ":1\r\n");
                ops.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    // Clients that drop mid-request: half a command, then gone.
    let mut droppers = Vec::new();
    for i in 0..200 {
        droppers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let partial: &[u8] = if i % 2 == 0 { b"*3\r\n$13\r\nTOKEN.ACQUIRE\r\n$1\r\np" } else { b"TOKEN.ACQ" };
            s.write_all(partial).await.unwrap();
            drop(s);
        }));
    }
    for d in droppers {
        d.await.unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    let s: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("p").query_async(&mut c).await.unwrap();
    assert_eq!(s["total"], TOKENS as i64);
    assert_eq!(s["free"] + s["assigned"], s["total"]);
    assert_eq!(s["assigned"], 0, "every acquired token was given back: {s:?}");
    let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    eprintln!(
        "{CLIENTS} connections + 200 dropped mid-request: {} acknowledged operations",
        ops.load(Ordering::Relaxed)
    );
}

//! Random and mutated RESP against a live server (the real binary): it never
//! panics, never closes a connection that sent well-formed requests, and
//! keeps answering PING.

mod procs;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const COMMANDS: &[&str] = &[
    "TOKEN.GEN",
    "TOKEN.ACQUIRE",
    "TOKEN.KEEPALIVE",
    "TOKEN.UNBLOCK",
    "TOKEN.DEL",
    "TOKEN.DELEXPIRED",
    "TOKEN.INFO",
    "TOKEN.STATS",
    "PING",
    "ECHO",
    "HELLO",
    "CLIENT",
    "COMMAND",
    "INFO",
    "CONFIG",
    "SELECT",
    "DBSIZE",
    "TIME",
    "PUBLISH",
    "AUTH",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "KEYS",
    "SCAN",
    "token.gen",
    "NOPE",
];
const WORDS: &[&str] = &[
    "p",
    "q:r",
    "EX",
    "PX",
    "COUNT",
    "BLOCK",
    "0",
    "1",
    "-1",
    "5",
    "100000",
    "99999999999999999999",
    "2",
    "3",
    "abc",
    "",
    "DOCS",
    "INFO",
    "LIST",
    "GET",
    "*",
    "ID",
    "SETNAME",
    "x y",
    "67e55044-10b1-426f-9247-bb680e5fe0c8",
];

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        prop::sample::select(COMMANDS),
        prop::collection::vec(
            prop_oneof![
                3 => prop::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
                1 => prop::collection::vec(any::<u8>(), 0..40),
            ],
            0..6,
        ),
    )
        .prop_map(|(c, rest)| {
            let mut v = vec![c.as_bytes().to_vec()];
            v.extend(rest);
            v
        })
}

/// Reads until `n` complete replies arrived (BLOCK is never generated with a
/// long timeout, so every request answers promptly).
fn read_replies(s: &mut TcpStream, n: usize) -> Result<usize, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let mut at = 0;
        let mut got = 0;
        // HELLO 3 may switch the connection to RESP3; RESP2's `$-1` is not
        // valid RESP3, so try both.
        loop {
            let rest = &buf[at..];
            let used = match redis_protocol::resp3::decode::complete::decode(rest) {
                Ok(Some((_, n))) => n,
                _ => match redis_protocol::resp2::decode::decode(rest) {
                    Ok(Some((_, n))) => n,
                    _ => break,
                },
            };
            at += used;
            got += 1;
        }
        if got >= n {
            return Ok(got);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("connection closed after {got} of {n} replies")),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => return Err(format!("{e} after {got} of {n} replies")),
        }
    }
}

fn ping(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    let mut b = [0u8; 7];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"+PONG\r\n");
}

/// A connection task that panicked would have logged it.
fn assert_no_panic(t: &procs::Tokend) {
    let logs = t.logs();
    assert!(!logs.iter().any(|l| l.contains("panicked")), "{logs:?}");
}

/// Well-formed requests (any command, any arguments) all get a reply and the
/// connection stays open. One thread serves them (the default on one core:
/// a current-thread runtime); the mutated requests below go to the default
/// here, a worker thread per core.
#[test]
fn well_formed_requests_always_get_replies() {
    let t = procs::Tokend::start(&["--token-ttl", "200ms", "--max-gen-count", "50", "--threads", "1"]);
    let mut runner = TestRunner::new(Config { cases: 200, ..Config::default() });
    runner
        .run(&prop::collection::vec(command(), 1..20), |cmds| {
            let mut s = TcpStream::connect(t.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut bytes = Vec::new();
            for c in &cmds {
                // A blocking ACQUIRE must not wait long: any value after BLOCK
                // becomes 1 ms (0 would be forever, 100000 a hundred seconds).
                let mut c = c.clone();
                for i in 1..c.len() {
                    if c[i - 1].eq_ignore_ascii_case(b"BLOCK") && c[i].first().is_some_and(u8::is_ascii_digit) {
                        c[i] = b"1".to_vec();
                    }
                }
                bytes.extend(encode(&c));
            }
            s.write_all(&bytes).unwrap();
            // At least one reply a command, or an error (a SUBSCRIBE of
            // several channels answers more than once).
            read_replies(&mut s, cmds.len()).map_err(TestCaseError::fail)?;
            ping(t.addr);
            Ok(())
        })
        .unwrap();
    assert_no_panic(&t);
}

/// Mutated requests may be refused (a protocol error closes, as in Redis) but
/// never bring the server down.
#[test]
fn mutated_bytes_never_hurt_the_server() {
    let t = procs::Tokend::start(&["--token-ttl", "200ms", "--max-gen-count", "50"]);
    let mut runner = TestRunner::new(Config { cases: 150, ..Config::default() });
    let strategy = (
        prop::collection::vec(command(), 1..6),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        prop::collection::vec(any::<u8>(), 0..64),
    );
    runner
        .run(&strategy, |(cmds, flips, garbage)| {
            let mut bytes: Vec<u8> = cmds.iter().flat_map(|c| encode(c)).collect();
            for (i, b) in flips {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            bytes.extend(garbage);
            let mut s = TcpStream::connect(t.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let _ = s.write_all(&bytes);
            let mut sink = [0u8; 65536];
            while let Ok(n) = s.read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
            drop(s);
            ping(t.addr);
            Ok(())
        })
        .unwrap();
    assert_no_panic(&t);
}

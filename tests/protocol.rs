//! The wire protocol, byte for byte, on raw TCP connections: pipelining,
//! inline commands, protocol errors, RESP3, pub/sub context, QUIT, AUTH.

mod common;

use common::{Resp, TestServer, assert_uuid_v4, encode_cmd, stats, stats_of};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_thousand_pipelined_commands_in_one_write_reply_in_order() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    // 500 TOKEN.GEN interleaved with 500 `PING <i>`: the PING echoes prove the
    // order, the tokens prove every GEN ran.
    let mut pipe = Vec::new();
    for i in 0..500 {
        pipe.extend(encode_cmd(&["TOKEN.GEN", "p"]));
        pipe.extend(encode_cmd(&["PING", &i.to_string()]));
    }
    let start = Instant::now();
    let replies = c.pipeline(&pipe, 1000).await;
    eprintln!("1000 pipelined commands answered in {:?}", start.elapsed());
    assert_eq!(replies.len(), 1000);
    let mut tokens = HashSet::new();
    for (i, pair) in replies.chunks(2).enumerate() {
        let t = pair[0].text();
        assert_uuid_v4(&t);
        assert!(tokens.insert(t), "reply {} repeats a token", 2 * i);
        assert_eq!(pair[1], Resp::Bulk(i.to_string().into_bytes()), "reply {} out of order", 2 * i + 1);
    }
    assert_eq!(stats(&mut c, "p").await, [500, 500, 0, 0, 0]);
    // Nothing extra was sent.
    assert!(c.read_within(Duration::from_millis(20)).await.is_none());
}

/// The connection decodes a pipeline some requests ahead and lets the store
/// prefetch the slots that UNBLOCK, KEEPALIVE, INFO and DEL name, in pools
/// big enough for that (32k slots and up). Each request must still see what
/// the ones before it in the same write did.
#[tokio::test]
async fn token_commands_in_one_write_see_each_others_changes_in_a_big_pool() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let made = c.call(&["TOKEN.GEN", "big", "COUNT", "40000"]).await;
    let ids: Vec<String> = made.items().iter().map(|r| r.text()).collect();
    assert_eq!(ids.len(), 40_000);
    let acq = c.call(&["TOKEN.ACQUIRE", "big"]).await.text();
    let other = ids.iter().find(|t| **t != acq).expect("another token").clone();
    let a = acq.as_str();
    let o = other.as_str();
    let cmds: Vec<Vec<&str>> = vec![
        vec!["TOKEN.UNBLOCK", "big", a],
        vec!["TOKEN.UNBLOCK", "big", a],
        vec!["TOKEN.DEL", "big", o],
        vec!["TOKEN.KEEPALIVE", "big", o],
        vec!["TOKEN.INFO", "big", o],
        vec!["TOKEN.DEL", "big", o],
        vec!["TOKEN.UNBLOCK", "big", o],
        vec!["TOKEN.DEL", "big", a],
        vec!["TOKEN.KEEPALIVE", "big", a],
        vec!["TOKEN.UNBLOCK", "big", "not-a-token"],
        vec!["TOKEN.STATS", "big"],
    ];
    // Three copies in one write, so the look-ahead window is crossed.
    let mut pipe = Vec::new();
    for _ in 0..3 {
        for cmd in &cmds {
            pipe.extend(encode_cmd(cmd));
        }
    }
    let r = c.pipeline(&pipe, 3 * cmds.len()).await;
    assert_eq!(r[0], Resp::Int(1));
    assert_eq!(r[1].err(), "NOTASSIGNED the token is not assigned");
    assert_eq!(r[2], Resp::Int(1));
    assert!(r[3].err().starts_with("NOTOKEN"), "{:?}", r[3]);
    assert!(r[4].err().starts_with("NOTOKEN"), "{:?}", r[4]);
    assert_eq!(r[5], Resp::Int(0));
    assert!(r[6].err().starts_with("NOTOKEN"), "{:?}", r[6]);
    assert_eq!(r[7], Resp::Int(1));
    assert!(r[8].err().starts_with("NOTOKEN"), "{:?}", r[8]);
    assert!(r[9].err().starts_with("NOTOKEN"), "{:?}", r[9]);
    assert_eq!(stats_of(&r[10]), [39_998, 39_998, 0, 0, 0]);
    // The copies find both tokens gone.
    for copy in r[cmds.len()..].chunks(cmds.len()) {
        for (i, reply) in copy[..10].iter().enumerate() {
            match i {
                2 | 5 | 7 => assert_eq!(*reply, Resp::Int(0), "DEL #{i} of a copy"),
                _ => assert!(reply.err().starts_with("NOTOKEN"), "#{i} of a copy: {reply:?}"),
            }
        }
        assert_eq!(stats_of(&copy[10]), [39_998, 39_998, 0, 0, 0]);
    }
}

/// A big GEN's stock is made and its reply written a piece at a time,
/// with other connections served in between: its reply is still whole
/// and exact, and the commands written after it in the same write get
/// their replies after it, in order; meanwhile another client is served.
#[tokio::test]
async fn a_big_gen_in_a_pipeline_replies_whole_and_in_order() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut other = server.raw().await;
    let mut pipe = Vec::new();
    for cmd in [
        &["TOKEN.GEN", "big", "COUNT", "50000"][..],
        &["TOKEN.STATS", "big"],
        &["TOKEN.GEN", "big", "COUNT", "5000"],
        &["PING"],
    ] {
        pipe.extend(encode_cmd(cmd));
    }
    let (r, pong) = tokio::join!(c.pipeline(&pipe, 4), other.call(&["PING"]));
    assert_eq!(pong, Resp::Simple("PONG".into()));
    let first: Vec<String> = r[0].items().iter().map(|t| t.text()).collect();
    assert_eq!(first.len(), 50_000);
    for t in &first {
        assert_uuid_v4(t);
    }
    assert_eq!(stats_of(&r[1]), [50_000, 50_000, 0, 0, 0]);
    let second: Vec<String> = r[2].items().iter().map(|t| t.text()).collect();
    assert_eq!(second.len(), 5_000);
    let all: HashSet<&String> = first.iter().chain(&second).collect();
    assert_eq!(all.len(), 55_000, "every token distinct");
    assert_eq!(r[3], Resp::Simple("PONG".into()));
    assert_eq!(stats(&mut c, "big").await, [55_000, 55_000, 0, 0, 0]);
    // In a transaction the GEN is queued, not run ahead: EXEC makes it.
    let mut pipe = Vec::new();
    for cmd in [&["MULTI"][..], &["TOKEN.GEN", "txn", "COUNT", "20000"], &["EXEC"]] {
        pipe.extend(encode_cmd(cmd));
    }
    let r = c.pipeline(&pipe, 3).await;
    assert_eq!(r[1], Resp::Simple("QUEUED".into()));
    assert_eq!(r[2].items()[0].items().len(), 20_000);
    assert_eq!(stats(&mut c, "txn").await, [20_000, 20_000, 0, 0, 0]);
}

#[tokio::test]
async fn inline_commands() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    c.send_raw(b"PING\r\n").await;
    assert_eq!(c.read().await, Resp::Simple("PONG".into()));
    c.send_raw(b"TOKEN.GEN p\r\n").await;
    assert_uuid_v4(&c.read().await.text());
    c.send_raw(b"TOKEN.STATS p\r\n").await;
    assert_eq!(stats_of(&c.read().await), [1, 1, 0, 0, 0]);
    // Bare LF, quoting, several on one write, and an empty line (no reply).
    c.send_raw(b"echo \"a b\"\n\r\nTOKEN.GEN 'my pool'\r\nTOKEN.STATS \"my pool\"\r\n").await;
    assert_eq!(c.read().await, Resp::Bulk(b"a b".to_vec()));
    assert_uuid_v4(&c.read().await.text());
    assert_eq!(stats_of(&c.read().await), [1, 1, 0, 0, 0]);
    // Inline and RESP mixed on one connection.
    c.send_raw(b"PING\r\n*1\r\n$4\r\nPING\r\n").await;
    assert_eq!(c.read().await, Resp::Simple("PONG".into()));
    assert_eq!(c.read().await, Resp::Simple("PONG".into()));
    // Redis's sdssplitargs: hex escapes in double quotes, a quote opening
    // inside a word.
    c.send_raw(b"ECHO \"\\x41\\x42\"\r\nECHO a\"b c\"\r\n").await;
    assert_eq!(c.read().await, Resp::Bulk(b"AB".to_vec()));
    assert_eq!(c.read().await, Resp::Bulk(b"ab c".to_vec()));
    // Unbalanced quotes are a protocol error, as in Redis.
    c.send_raw(b"ECHO a'b c'd\r\n").await;
    assert_eq!(c.read().await, Resp::Error("ERR Protocol error: unbalanced quotes in request".into()));
    c.assert_closed().await;
}

#[tokio::test]
async fn a_request_split_across_many_writes() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let req = encode_cmd(&["TOKEN.GEN", "p", "PX", "5000"]);
    for b in &req {
        c.send_raw(std::slice::from_ref(b)).await;
    }
    assert_uuid_v4(&c.read().await.text());
}

#[tokio::test]
async fn unknown_command_in_a_pipeline_does_not_stop_the_rest() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut pipe = encode_cmd(&["PING"]);
    pipe.extend(encode_cmd(&["NOPE", "x"]));
    pipe.extend(encode_cmd(&["TOKEN.GEN", "p"]));
    pipe.extend(encode_cmd(&["TOKEN.GEN"]));
    pipe.extend(encode_cmd(&["TOKEN.STATS", "p"]));
    let r = c.pipeline(&pipe, 5).await;
    assert_eq!(r[0], Resp::Simple("PONG".into()));
    assert_eq!(r[1], Resp::Error("ERR unknown command 'NOPE', with args beginning with: 'x' ".into()));
    assert_uuid_v4(&r[2].text());
    assert_eq!(r[3], Resp::Error("ERR wrong number of arguments for 'token.gen' command".into()));
    assert_eq!(stats_of(&r[4]), [1, 1, 0, 0, 0]);
}

#[tokio::test]
async fn huge_bulk_length_is_a_protocol_error_and_closes() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    // A command before it in the same write is still answered.
    c.send_raw(b"*1\r\n$4\r\nPING\r\n*1\r\n$4294967295\r\n").await;
    assert_eq!(c.read().await, Resp::Simple("PONG".into()));
    assert_eq!(c.read().await, Resp::Error("ERR Protocol error: invalid bulk length".into()));
    c.assert_closed().await;
    // The server is fine.
    let mut d = server.raw().await;
    assert_eq!(d.cmd("PING").await, Resp::Simple("PONG".into()));
}

#[tokio::test]
async fn other_protocol_errors_close_too() {
    let server = TestServer::start();
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n:5\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
        (b"ECHO \"unbalanced\r\n", "ERR Protocol error: unbalanced quotes in request"),
    ];
    let mut wrong = Vec::new();
    for (bytes, want) in cases {
        let mut c = server.raw().await;
        c.send_raw(bytes).await;
        let got = c.read().await;
        if got != Resp::Error(want.to_string()) {
            wrong.push(format!("{:?} → {got:?} (want -{want})", String::from_utf8_lossy(bytes)));
        }
        c.assert_closed().await;
    }
    assert!(wrong.is_empty(), "protocol errors worded unlike Redis:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn resp3_after_hello_3() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let hello = c.cmd("HELLO 3").await;
    let Resp::Map(kv) = &hello else { panic!("HELLO 3 replies with a RESP3 map: {hello:?}") };
    let proto = kv.iter().find(|(k, _)| k.text() == "proto").map(|(_, v)| v.clone());
    assert_eq!(proto, Some(Resp::Int(3)));

    c.cmd("TOKEN.GEN p").await;
    let s = c.cmd("TOKEN.STATS p").await;
    assert!(matches!(s, Resp::Map(_)), "TOKEN.STATS is a % map in RESP3: {s:?}");
    assert_eq!(stats_of(&s), [1, 1, 0, 0, 0]);
    c.cmd("TOKEN.ACQUIRE p").await.text();
    assert_eq!(c.cmd("TOKEN.ACQUIRE p").await, Resp::Null, "nil is `_` in RESP3");

    // Raw bytes: the map header and the null.
    c.send_raw(&encode_cmd(&["TOKEN.ACQUIRE", "p"])).await;
    let mut buf = vec![0u8; 3];
    tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_exact(&mut c.stream, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, b"_\r\n");

    // Back to RESP2: flat array and $-1.
    c.cmd("HELLO 2").await;
    assert!(matches!(c.cmd("TOKEN.STATS p").await, Resp::Array(_)));
    assert_eq!(c.cmd("TOKEN.ACQUIRE p").await, Resp::NullBulk);
    assert_eq!(c.cmd("HELLO 4").await.err().split(' ').next(), Some("NOPROTO"));
}

#[tokio::test]
async fn resp2_pubsub_context_rejects_other_commands() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let r = c.cmd("SUBSCRIBE ch").await;
    assert_eq!(r, Resp::Array(vec![Resp::Bulk(b"subscribe".to_vec()), Resp::Bulk(b"ch".to_vec()), Resp::Int(1)]));
    assert_eq!(
        c.cmd("TOKEN.GEN p").await,
        Resp::Error(
            "ERR Can't execute 'token.gen': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are \
             allowed in this context"
                .into()
        )
    );
    // PING in pub/sub (RESP2) is ["pong", ""].
    assert_eq!(c.cmd("PING").await, Resp::Array(vec![Resp::Bulk(b"pong".to_vec()), Resp::Bulk(vec![])]));
    // Nothing was generated.
    let mut d = server.raw().await;
    assert_eq!(stats(&mut d, "p").await, [0; 5]);
    // A published message arrives.
    assert_eq!(d.cmd("PUBLISH ch hello").await, Resp::Int(1));
    assert_eq!(
        c.read().await,
        Resp::Array(vec![Resp::Bulk(b"message".to_vec()), Resp::Bulk(b"ch".to_vec()), Resp::Bulk(b"hello".to_vec())])
    );
    // UNSUBSCRIBE leaves the context; commands work again.
    let r = c.cmd("UNSUBSCRIBE").await;
    assert_eq!(r.items()[2], Resp::Int(0));
    assert_uuid_v4(&c.cmd("TOKEN.GEN p").await.text());

    // RESET also leaves it.
    c.cmd("PSUBSCRIBE x*").await;
    assert!(c.cmd("TOKEN.STATS p").await.err().starts_with("ERR Can't execute 'token.stats'"));
    assert_eq!(c.cmd("RESET").await, Resp::Simple("RESET".into()));
    assert_eq!(stats_of(&c.cmd("TOKEN.STATS p").await), [1, 1, 0, 0, 0]);

    // In RESP3 a subscribed connection may run any command; messages are pushes.
    let mut r3 = server.raw().await;
    r3.cmd("HELLO 3").await;
    let r = r3.cmd("SUBSCRIBE ch").await;
    assert!(matches!(r, Resp::Push(_)), "{r:?}");
    assert_uuid_v4(&r3.cmd("TOKEN.GEN p").await.text());
    d.cmd("PUBLISH ch m").await;
    assert_eq!(
        r3.read().await,
        Resp::Push(vec![Resp::Bulk(b"message".to_vec()), Resp::Bulk(b"ch".to_vec()), Resp::Bulk(b"m".to_vec())])
    );
}

#[tokio::test]
async fn quit_replies_ok_and_closes() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    // Commands pipelined after QUIT are not run.
    let mut pipe = encode_cmd(&["QUIT"]);
    pipe.extend(encode_cmd(&["TOKEN.GEN", "p"]));
    c.send_raw(&pipe).await;
    assert_eq!(c.read().await, Resp::Simple("OK".into()));
    c.assert_closed().await;
    let mut d = server.raw().await;
    assert_eq!(stats(&mut d, "p").await, [0; 5], "the GEN after QUIT must not run");
}

#[tokio::test]
async fn requirepass() {
    let server = TestServer::start_with(|c| c.requirepass = Some("s3cret".into()));
    let mut c = server.raw().await;
    let noauth = Resp::Error("NOAUTH Authentication required.".into());
    assert_eq!(c.cmd("TOKEN.GEN p").await, noauth);
    assert_eq!(c.cmd("PING").await, noauth, "PING needs AUTH too, as in Redis");
    assert_eq!(c.cmd("TOKEN.STATS p").await, noauth);
    assert_eq!(c.cmd("SUBSCRIBE ch").await, noauth);
    assert_eq!(
        c.cmd("AUTH wrong").await,
        Resp::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(
        c.cmd("AUTH default wrong").await,
        Resp::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(c.cmd("TOKEN.GEN p").await, noauth, "a wrong password does not authenticate");
    // The right password followed by 65,536 NUL bytes is another password,
    // for AUTH and for HELLO … AUTH.
    let mut padded = b"s3cret".to_vec();
    padded.resize(6 + 65_536, 0);
    let wrongpass = Resp::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(c.call(&[&b"AUTH"[..], &padded]).await, wrongpass);
    assert_eq!(c.call(&[&b"AUTH"[..], b"default", &padded]).await, wrongpass);
    assert_eq!(c.call(&[&b"HELLO"[..], b"3", b"AUTH", b"default", &padded]).await, wrongpass);
    assert_eq!(c.cmd("TOKEN.GEN p").await, noauth, "a padded password does not authenticate");
    assert_eq!(c.cmd("AUTH s3cret").await, Resp::Simple("OK".into()));
    assert_uuid_v4(&c.cmd("TOKEN.GEN p").await.text());
    assert_eq!(c.cmd("PING").await, Resp::Simple("PONG".into()));

    // HELLO 3 AUTH default <pass> authenticates and switches to RESP3.
    let mut h = server.raw().await;
    let bad = h.cmd("HELLO 3 AUTH default nope").await;
    assert!(bad.err().starts_with("WRONGPASS"), "{bad:?}");
    let no = h.cmd("HELLO 3").await;
    assert!(no.err().starts_with("NOAUTH"), "HELLO without AUTH on a password server: {no:?}");
    let ok = h.cmd("HELLO 3 AUTH default s3cret").await;
    assert!(matches!(ok, Resp::Map(_)), "{ok:?}");
    assert_eq!(stats_of(&h.cmd("TOKEN.STATS p").await), [1, 1, 0, 0, 0]);
    assert!(matches!(h.cmd("TOKEN.STATS p").await, Resp::Map(_)), "RESP3 after HELLO 3 AUTH");

    // RESET forgets the authentication.
    assert_eq!(h.cmd("RESET").await, Resp::Simple("RESET".into()));
    assert_eq!(h.cmd("TOKEN.STATS p").await, noauth);

    // A client library with the password in its URL.
    let url = format!("redis://:s3cret@{}/", server.addr);
    let mut con = common::connect_url(&url).await;
    let t: String = redis::cmd("TOKEN.GEN").arg("p").query_async(&mut con).await.unwrap();
    assert_uuid_v4(&t);
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let url = format!("redis://:s3cret@{}/?protocol=resp3", server.addr);
    let mut con = common::connect_url(&url).await;
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn auth_without_a_password_configured() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let e = c.cmd("AUTH x").await.err();
    assert!(e.starts_with("ERR AUTH <password> called without any password configured"), "{e}");
    assert_eq!(c.cmd("PING").await, Resp::Simple("PONG".into()));
}

/// RESP2: messages published before an UNSUBSCRIBE is processed all come
/// before its confirmation, however many are waiting to be read, and none
/// after it.
#[tokio::test]
async fn unsubscribe_confirmation_comes_after_every_earlier_message() {
    let server = TestServer::start();
    let mut sub = server.raw().await;
    assert_eq!(sub.cmd("SUBSCRIBE ch").await.items()[0], Resp::Bulk(b"subscribe".to_vec()));
    let mut publisher = server.raw().await;
    let payload = "x".repeat(2048);
    // 20 MiB waiting: far more than the sockets hold, within the 32 MiB a
    // subscriber may have queued.
    const N: usize = 10_000;
    let mut pipe = Vec::new();
    for _ in 0..N {
        pipe.extend(encode_cmd(&["PUBLISH", "ch", &payload]));
    }
    let replies = publisher.pipeline(&pipe, N).await;
    assert!(replies.iter().all(|r| *r == Resp::Int(1)));
    // The subscriber has read nothing yet; now it unsubscribes.
    sub.send(&["UNSUBSCRIBE", "ch"]).await;
    let mut messages = 0;
    loop {
        let r = sub.read().await;
        let kind = r.items()[0].text();
        if kind == "unsubscribe" {
            break;
        }
        assert_eq!(kind, "message");
        messages += 1;
    }
    assert_eq!(messages, N, "every message published before the UNSUBSCRIBE came before its confirmation");
    assert_eq!(publisher.cmd("PUBLISH ch late").await, Resp::Int(0));
    assert_eq!(sub.cmd("PING").await, Resp::Simple("PONG".into()), "nothing queued after the confirmation");
}

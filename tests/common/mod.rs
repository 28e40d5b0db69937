//! Shared test harness: an in-process `tokend` server on an ephemeral port,
//! clients for it (the `redis` crate, and a raw RESP connection that shows
//! exactly what went over the wire), and a small RESP2/RESP3 reply parser.
//!
//! The server runs on its own Tokio runtime in its own thread, so it is
//! independent of the test's runtime flavour (and of whether the test is
//! async at all), and dropping the [`TestServer`] shuts it down and waits
//! for it.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokend::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single read from the server may take before a test fails
/// (generous: it only matters when something is broken).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A `tokend` server running in-process on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub port: u16,
    /// Where `/metrics` is served (with `--metrics-addr`).
    pub metrics: Option<SocketAddr>,
    /// Where the HTTP API is served (with `--http-addr`).
    pub http: Option<SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// A server with the default configuration.
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// A server whose configuration `tweak` adjusts first.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default_for_tests();
        config.port = 0;
        tweak(&mut config);
        let (addr_tx, addr_rx) =
            std::sync::mpsc::channel::<std::io::Result<(SocketAddr, Option<SocketAddr>, Option<SocketAddr>)>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tokend-test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let started = async {
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                        let server = tokend::server::Server::new(listener, config).await?;
                        let addr = (server.local_addr()?, server.metrics_addr(), server.http_addr());
                        Ok::<_, std::io::Error>((server, addr))
                    };
                    match started.await {
                        Ok((server, addr)) => {
                            // Tell the test once every command is served
                            // (with a backing Redis, after loading).
                            let mut ready = server.ready();
                            let run = tokio::spawn(server.run(async {
                                let _ = stop_rx.await;
                            }));
                            let _ = ready.wait_for(|r| *r).await;
                            let _ = addr_tx.send(Ok(addr));
                            if let Ok(Err(e)) = run.await {
                                panic!("the test server failed: {e}");
                            }
                        }
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                        }
                    }
                });
                rt.shutdown_background();
                let _ = done_tx.send(());
            })
            .expect("spawn the server thread");
        let (addr, metrics, http) =
            addr_rx.recv().expect("server thread died before binding").expect("server failed to start");
        TestServer {
            addr,
            port: addr.port(),
            metrics,
            http,
            shutdown: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
        }
    }

    /// `redis://127.0.0.1:<port>/` (add `?protocol=resp3` for RESP3).
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A `redis` crate client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// A multiplexed `redis` crate connection (RESP2) with a response timeout
    /// long enough for blocking commands.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        connect_url(&self.url()).await
    }

    /// A multiplexed `redis` crate connection that negotiated RESP3 (`HELLO 3`).
    pub async fn conn_resp3(&self) -> redis::aio::MultiplexedConnection {
        connect_url(&format!("{}?protocol=resp3", self.url())).await
    }

    /// A raw connection (bytes on a `TcpStream`).
    pub async fn raw(&self) -> RawConn {
        RawConn::connect(self.addr).await
    }

    /// Stops the server and waits for it (also done on drop).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
            // The server waits for its connections; a bounded wait keeps a
            // test with a stuck connection from hanging forever, and a stop
            // that hangs fails the test (unless it is failing already).
            if self.done.recv_timeout(Duration::from_secs(15)).is_err() {
                if !std::thread::panicking() {
                    panic!("the test server did not stop within 15 s");
                }
                return;
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects the `redis` crate to `url` with a 10 s response timeout (the
/// crate's default of 500 ms would cut blocking commands short).
pub async fn connect_url(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("client");
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    client.get_multiplexed_async_connection_with_config(&config).await.expect("connect with the redis crate")
}

/// A `redis` crate error as the server sent it: `CODE detail`.
pub fn err_line(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => format!("{e}"),
    }
}

/// Checks that `s` is a canonical lower-case UUID version 4 (RFC 4122
/// variant) and returns it.
#[track_caller]
pub fn assert_uuid_v4(s: &str) -> String {
    let b = s.as_bytes();
    assert_eq!(b.len(), 36, "a token is 36 characters: {s:?}");
    for (i, &c) in b.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            assert_eq!(c, b'-', "dash expected at {i} in {s:?}");
        } else {
            assert!(c.is_ascii_digit() || (b'a'..=b'f').contains(&c), "lower-case hex expected at {i} in {s:?}");
        }
    }
    assert_eq!(b[14], b'4', "version nibble must be 4 in {s:?}");
    assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "variant nibble must be 8, 9, a or b in {s:?}");
    s.to_string()
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_cmd<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply, keeping the distinctions RESP2 and RESP3 make on the wire.
#[derive(Clone, PartialEq)]
pub enum Resp {
    /// `+…`
    Simple(String),
    /// `-…`
    Error(String),
    /// `:…`
    Int(i64),
    /// `$n` (RESP2 null bulk `$-1` is [`Resp::NullBulk`]).
    Bulk(Vec<u8>),
    /// `$-1`
    NullBulk,
    /// `*n` (`*-1` is [`Resp::NullArray`]).
    Array(Vec<Resp>),
    /// `*-1`
    NullArray,
    /// RESP3 `_`
    Null,
    /// RESP3 `%`
    Map(Vec<(Resp, Resp)>),
    /// RESP3 `~`
    Set(Vec<Resp>),
    /// RESP3 `>`
    Push(Vec<Resp>),
    /// RESP3 `,`
    Double(String),
    /// RESP3 `#`
    Bool(bool),
    /// RESP3 `=` (format, text)
    Verbatim(String, Vec<u8>),
    /// RESP3 `(`
    BigNumber(String),
    /// RESP3 `!`
    BlobError(String),
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, tag: &str, v: &[Resp]| {
            f.write_str(tag)?;
            f.debug_list().entries(v).finish()
        };
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(e) => write!(f, "-{e}"),
            Resp::Int(i) => write!(f, ":{i}"),
            Resp::Bulk(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Resp::NullBulk => f.write_str("$-1"),
            Resp::NullArray => f.write_str("*-1"),
            Resp::Null => f.write_str("_"),
            Resp::Array(v) => list(f, "*", v),
            Resp::Set(v) => list(f, "~", v),
            Resp::Push(v) => list(f, ">", v),
            Resp::Map(kv) => {
                f.write_str("%")?;
                f.debug_map().entries(kv.iter().map(|(k, v)| (k, v))).finish()
            }
            Resp::Double(d) => write!(f, ",{d}"),
            Resp::Bool(b) => write!(f, "#{}", if *b { 't' } else { 'f' }),
            Resp::Verbatim(fmt, b) => write!(f, "={fmt}:{:?}", String::from_utf8_lossy(b)),
            Resp::BigNumber(n) => write!(f, "({n}"),
            Resp::BlobError(e) => write!(f, "!{e}"),
        }
    }
}

impl Resp {
    /// The text of a bulk or simple string (panics otherwise).
    #[track_caller]
    pub fn text(&self) -> String {
        match self {
            Resp::Bulk(b) => String::from_utf8(b.clone()).expect("utf-8 bulk"),
            Resp::Simple(s) => s.clone(),
            Resp::Verbatim(_, b) => String::from_utf8(b.clone()).expect("utf-8 verbatim"),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// The integer (panics otherwise).
    #[track_caller]
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    /// The elements of an array, set or push (panics otherwise).
    #[track_caller]
    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(v) | Resp::Set(v) | Resp::Push(v) => v,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// The error text (panics otherwise).
    #[track_caller]
    pub fn err(&self) -> String {
        match self {
            Resp::Error(e) | Resp::BlobError(e) => e.clone(),
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    /// True for any kind of null.
    pub fn is_null(&self) -> bool {
        matches!(self, Resp::Null | Resp::NullBulk | Resp::NullArray)
    }

    /// Field/value pairs of a RESP3 map or of a RESP2 flat field/value array,
    /// in the order they were sent; fields must be strings.
    #[track_caller]
    pub fn pairs(&self) -> Vec<(String, Resp)> {
        match self {
            Resp::Map(kv) => kv.iter().map(|(k, v)| (k.text(), v.clone())).collect(),
            Resp::Array(v) => {
                assert!(v.len() % 2 == 0, "a field/value array has an even length: {v:?}");
                v.chunks(2).map(|c| (c[0].text(), c[1].clone())).collect()
            }
            other => panic!("expected a map or a flat field/value array, got {other:?}"),
        }
    }
}

/// Parses one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`,
/// `Ok(None)` when more bytes are needed, `Err` on bytes that are not RESP.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0)
}

fn line_at(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let pos = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..pos], at + pos + 2))
}

fn parse_int(b: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad integer {:?}", String::from_utf8_lossy(b)))
}

fn parse_at(buf: &[u8], at: usize) -> Result<Option<(Resp, usize)>, String> {
    if at >= buf.len() {
        return Ok(None);
    }
    let kind = buf[at];
    let Some((line, next)) = line_at(buf, at + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let blob = |n: i64| -> Option<(Vec<u8>, usize)> {
        let n = n as usize;
        if buf.len() < next + n + 2 {
            return None;
        }
        Some((buf[next..next + n].to_vec(), next + n + 2))
    };
    let aggregate = |n: i64, per: usize| -> Result<Option<(Vec<Resp>, usize)>, String> {
        let mut items = Vec::with_capacity((n.max(0) as usize * per).min(1 << 16));
        let mut pos = next;
        for _ in 0..n.max(0) as usize * per {
            match parse_at(buf, pos)? {
                Some((r, p)) => {
                    items.push(r);
                    pos = p;
                }
                None => return Ok(None),
            }
        }
        Ok(Some((items, pos)))
    };
    Ok(Some(match kind {
        b'+' => (Resp::Simple(text()), next),
        b'-' => (Resp::Error(text()), next),
        b':' => (Resp::Int(parse_int(line)?), next),
        b'_' => (Resp::Null, next),
        b',' => (Resp::Double(text()), next),
        b'(' => (Resp::BigNumber(text()), next),
        b'#' => (Resp::Bool(line == b"t"), next),
        b'$' | b'!' | b'=' => {
            let n = parse_int(line)?;
            if n < 0 {
                (Resp::NullBulk, next)
            } else {
                let Some((data, end)) = blob(n) else { return Ok(None) };
                match kind {
                    b'$' => (Resp::Bulk(data), end),
                    b'!' => (Resp::BlobError(String::from_utf8_lossy(&data).into_owned()), end),
                    _ => {
                        if data.len() < 4 {
                            return Err("verbatim string shorter than its format".into());
                        }
                        (Resp::Verbatim(String::from_utf8_lossy(&data[..3]).into_owned(), data[4..].to_vec()), end)
                    }
                }
            }
        }
        b'*' | b'~' | b'>' => {
            let n = parse_int(line)?;
            if n < 0 {
                (Resp::NullArray, next)
            } else {
                let Some((items, end)) = aggregate(n, 1)? else { return Ok(None) };
                match kind {
                    b'*' => (Resp::Array(items), end),
                    b'~' => (Resp::Set(items), end),
                    _ => (Resp::Push(items), end),
                }
            }
        }
        b'%' => {
            let n = parse_int(line)?;
            let Some((items, end)) = aggregate(n, 2)? else { return Ok(None) };
            let mut it = items.into_iter();
            let mut kv = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                kv.push((k, v));
            }
            (Resp::Map(kv), end)
        }
        other => return Err(format!("unknown RESP type byte {:?} at {at}", other as char)),
    }))
}

/// A raw client: writes bytes, parses replies itself.
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed by parsed replies.
    pos: usize,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawConn { stream, buf: Vec::with_capacity(64 * 1024), pos: 0 }
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the server");
    }

    /// Writes one command (as a RESP array).
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let b = encode_cmd(args);
        self.send_raw(&b).await;
    }

    /// Sends a command and reads its reply.
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        self.send(args).await;
        self.read().await
    }

    /// Like `call` with string arguments split on spaces (for brevity).
    pub async fn cmd(&mut self, line: &str) -> Resp {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.call(&args).await
    }

    /// Reads one reply, failing the test after [`READ_TIMEOUT`].
    #[track_caller]
    pub fn read(&mut self) -> impl std::future::Future<Output = Resp> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match tokio::time::timeout(READ_TIMEOUT, self.read_inner()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => panic!("{caller}: reading a reply: {e}"),
                Err(_) => panic!("{caller}: no reply within {READ_TIMEOUT:?}"),
            }
        }
    }

    /// Reads one reply, or `None` if none is complete within `wait`.
    pub async fn read_within(&mut self, wait: Duration) -> Option<Resp> {
        match tokio::time::timeout(wait, self.read_inner()).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => panic!("reading a reply: {e}"),
            Err(_) => None,
        }
    }

    /// Cancel-safe: partial data stays in `buf`.
    async fn read_inner(&mut self) -> Result<Resp, String> {
        loop {
            if let Some((r, used)) = parse_reply(&self.buf[self.pos..])? {
                self.pos += used;
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                }
                return Ok(r);
            }
            if self.pos > 0 && self.pos * 2 > self.buf.len() {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            // Read straight into the heap buffer (no large array in the future).
            self.buf.reserve(64 * 1024);
            let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "connection closed by the server ({} unparsed bytes: {:?})",
                    self.buf.len() - self.pos,
                    String::from_utf8_lossy(&self.buf[self.pos..])
                ));
            }
        }
    }

    /// Reads `n` replies while `bytes` is being written (so a large pipeline
    /// cannot deadlock on full socket buffers).
    pub async fn pipeline(&mut self, bytes: &[u8], n: usize) -> Vec<Resp> {
        let (mut rd, mut wr) = self.stream.split();
        let buf = &mut self.buf;
        let pos = &mut self.pos;
        let write = async move {
            wr.write_all(bytes).await.expect("write the pipeline");
        };
        let read = async move {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                // Parse every complete reply in the buffer.
                loop {
                    if out.len() == n {
                        break;
                    }
                    match parse_reply(&buf[*pos..]).expect("valid RESP") {
                        Some((r, used)) => {
                            *pos += used;
                            out.push(r);
                        }
                        None => break,
                    }
                }
                if out.len() == n {
                    break;
                }
                buf.drain(..*pos);
                *pos = 0;
                buf.reserve(256 * 1024);
                let got = tokio::time::timeout(READ_TIMEOUT, rd.read_buf(buf))
                    .await
                    .unwrap_or_else(|_| panic!("stalled after {} of {n} replies", out.len()))
                    .expect("read");
                assert!(got > 0, "connection closed after {} of {n} replies", out.len());
            }
            out
        };
        let ((), out) = tokio::join!(write, read);
        out
    }

    /// Asserts the server closes the connection (after any pending replies
    /// were read) within [`READ_TIMEOUT`].
    pub async fn assert_closed(&mut self) {
        assert_eq!(self.pos, self.buf.len(), "unread data before the close: {:?}", &self.buf[self.pos..]);
        let mut chunk = vec![0u8; 1024];
        match tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => {}
            Ok(Err(_)) => {} // reset: closed too
            Ok(Ok(n)) => panic!("expected the connection to be closed, got {:?}", String::from_utf8_lossy(&chunk[..n])),
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

/// TOKEN.STATS of `pool` as (total, free, assigned, expired-remembered,
/// blocked-waiters), checking the field names.
pub async fn stats(conn: &mut RawConn, pool: &str) -> [i64; 5] {
    let r = conn.call(&["TOKEN.STATS", pool]).await;
    stats_of(&r)
}

/// Decodes a TOKEN.STATS reply (either protocol), checking names and order.
#[track_caller]
pub fn stats_of(r: &Resp) -> [i64; 5] {
    let pairs = r.pairs();
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["total", "free", "assigned", "expired-remembered", "blocked-waiters"], "TOKEN.STATS fields");
    let v: Vec<i64> = pairs.iter().map(|(_, v)| v.int()).collect();
    assert_eq!(v[0], v[1] + v[2], "total = free + assigned in {v:?}");
    [v[0], v[1], v[2], v[3], v[4]]
}

/// Polls TOKEN.STATS on `conn` until `blocked-waiters` is `want` (a
/// condition on the server, not a sleep); fails after 5 s.
pub async fn wait_for_waiters(conn: &mut RawConn, pool: &str, want: i64) {
    let start = Instant::now();
    loop {
        let s = stats(conn, pool).await;
        if s[4] == want {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "blocked-waiters stayed {} (want {want})", s[4]);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The live tokens the backing Redis holds for `pool` (a pool without
/// braces in its name, prefix `tokend:`), each with its record written as
/// the tokens hash of earlier layouts had it
/// (`state:life:lease_deadline:lifetime:lease:times`): the records of its
/// slab strings (64 bytes a slot, see docs/durability.md) and whatever its
/// tokens hash still holds (a slot's record wins: the hash is of an
/// earlier layout, deleted once its tokens are in slots).
#[allow(dead_code)]
pub fn backing_records<C: redis::ConnectionLike>(c: &mut C, pool: &str) -> std::collections::HashMap<String, String> {
    let mut out: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("tokend:{{{pool}}}:tokens")).query(c).unwrap();
    let slabs: Vec<u32> = redis::cmd("SMEMBERS").arg(format!("tokend:{{{pool}}}:slabs")).query(c).unwrap();
    for k in slabs {
        let bytes: Vec<u8> = redis::cmd("GET").arg(format!("tokend:{{{pool}}}:slab:{k}")).query(c).unwrap();
        assert!(bytes.len() <= 16_384 * 64, "slab string {k} is {} bytes", bytes.len());
        for (j, r) in bytes.chunks(64).enumerate() {
            assert_eq!(r.len(), 64, "slab string {k} ends in a cut record");
            let token = u128::from_le_bytes(r[0..16].try_into().unwrap());
            if token == 0 {
                assert!(r.iter().all(|&b| b == 0), "slot {j} of slab string {k}: an empty slot is all zeros");
                continue;
            }
            assert_eq!(r[52], 1, "slot {j} of slab string {k}: the format byte");
            let n = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap());
            let times = u32::from_le_bytes(r[48..52].try_into().unwrap());
            let state = if n(24) > 0 { 'a' } else { 'f' };
            let text = uuid::Uuid::from_u128(token).hyphenated().to_string();
            let rec = format!("{state}:{}:{}:{}:{}:{times}", n(16), n(24), n(32), n(40));
            out.insert(text, rec);
        }
    }
    out
}

/// Every command the server lists (each subcommand too), queued inside
/// MULTI after a token command, so that the transaction holds that pool's
/// shard (or every shard, for a command that reads the whole store), gets
/// its answer, and the server goes on answering another client. INFO,
/// CONFIG RESETSTAT and CLUSTER COUNTKEYSINSLOT / GETKEYSINSLOT used to
/// lock the shards again from inside EXEC and wait forever for themselves,
/// with every other client of those shards waiting behind them. The server
/// at `addr` runs with `--enable-flush yes`.
pub async fn every_command_inside_exec(addr: SocketAddr) {
    let mut c = RawConn::connect(addr).await;
    let mut other = RawConn::connect(addr).await;
    c.cmd("SLOWLOG RESET").await;
    // Commands that act at once inside MULTI (or end the connection).
    let not_queued = ["multi", "exec", "discard", "watch", "quit", "reset"];
    // (the pool the transaction makes a token in first, the call): a call's
    // pools are its filler, so that in cluster mode they share one slot.
    let mut calls: Vec<(&str, Vec<String>)> = Vec::new();
    let mut names = Vec::new();
    for entry in c.cmd("COMMAND").await.items() {
        let e = entry.items();
        let subs = e.get(9).map(|s| s.items().to_vec()).unwrap_or_default();
        for spec in std::iter::once(entry).chain(subs.iter()) {
            let name = spec.items()[0].text();
            let arity = spec.items()[1].int();
            if not_queued.contains(&name.as_str()) {
                continue;
            }
            names.push(name.clone());
            let words: Vec<String> = name.split('|').map(str::to_string).collect();
            let fill = (arity.unsigned_abs() as usize).saturating_sub(words.len());
            for filler in ["p", "0"] {
                calls.push((
                    filler,
                    words.iter().cloned().chain(std::iter::repeat_n(filler.to_string(), fill)).collect(),
                ));
            }
        }
    }
    assert!(names.len() > 80, "COMMAND listed only {names:?}");
    // Arguments that make the commands that read the whole store (and a
    // few more) run rather than fail to parse.
    let ran_alone: &[&str] = &[
        "INFO",
        "INFO all",
        "INFO everything",
        "INFO stats expiry tokens keyspace",
        "CONFIG RESETSTAT",
        "CONFIG GET *",
        "DBSIZE",
        "KEYS *",
        "SCAN 0",
        "SCAN 0 MATCH p* COUNT 10",
        "EXISTS p",
        "TYPE p",
        "MEMORY USAGE p",
        "TOKEN.STATS p",
        "TOKEN.ACQUIRE p",
        "LATENCY LATEST",
        "SLOWLOG GET",
        "CLIENT LIST",
        "ROLE",
        "UNLINK p",
        "FLUSHALL",
    ];
    calls.extend(ran_alone.iter().map(|l| ("p", l.split(' ').map(str::to_string).collect())));
    let mut seen = std::collections::HashSet::new();
    calls.retain(|c| seen.insert(c.clone()));
    let mut ran = std::collections::HashSet::new();
    for (pool, call) in &calls {
        // Watched, so that the transaction holds its shard for that too
        // (and a queued UNWATCH runs while it does).
        assert_eq!(c.call(&["WATCH", pool]).await, Resp::Simple("OK".into()), "before {call:?}");
        assert_eq!(c.cmd("MULTI").await, Resp::Simple("OK".into()), "before {call:?}");
        assert_eq!(c.call(&["TOKEN.GEN", pool]).await, Resp::Simple("QUEUED".into()), "before {call:?}");
        let queued = c.call(call).await;
        let exec = c.cmd("EXEC").await;
        match (&queued, &exec) {
            (Resp::Simple(q), Resp::Array(items)) if q == "QUEUED" => {
                assert_eq!(items.len(), 2, "{call:?}: {exec:?}");
                assert_uuid_v4(&items[0].text());
                if !matches!(items[1], Resp::Error(_)) {
                    ran.insert(call.join(" "));
                }
            }
            (Resp::Error(_), Resp::Error(e)) => assert!(e.starts_with("EXECABORT"), "{call:?}: {e}"),
            _ => panic!("{call:?}: queued as {queued:?}, EXEC answered {exec:?}"),
        }
        assert_eq!(other.cmd("PING").await, Resp::Simple("PONG".into()), "after {call:?}");
    }
    for line in ran_alone {
        assert!(ran.contains(*line), "{line} did not run inside EXEC");
    }
    if c.cmd("INFO cluster").await.text().contains("cluster_enabled:1") {
        for line in ["cluster countkeysinslot 0", "cluster getkeysinslot 0 0", "cluster slots"] {
            assert!(ran.contains(line), "{line} did not run inside EXEC");
        }
    }
    // Most generic fillers are not valid arguments; still, a good part runs.
    let idle: Vec<String> = calls.iter().map(|(_, c)| c.join(" ")).filter(|c| !ran.contains(c)).collect();
    assert!(ran.len() * 3 > calls.len(), "only {} of {} calls ran inside EXEC; not: {idle:?}", ran.len(), calls.len());
    // The counts the transactions' INFO read are the store's.
    assert_uuid_v4(&c.cmd("TOKEN.GEN q").await.text());
    let info = c.cmd("INFO tokens").await.text();
    assert!(info.contains("pools:1\r\n"), "{info}");
}

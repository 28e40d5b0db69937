//! `tokend-bench`: a load generator for tokend and for the Redis reference
//! (the token semantics as a Redis 7 function library, `scripts/tokens.lua`),
//! in the spirit of `redis-benchmark`.
//!
//! It speaks raw RESP2 over TCP: requests are encoded by hand into one buffer
//! per pipelined batch (one `write` per batch), replies are decoded with the
//! `redis-protocol` crate. The same code path drives both servers, so the
//! client's cost per request is the same for both.
//!
//! Each connection runs `--pipeline` independent *lanes*; a lane is a small
//! state machine (e.g. ACQUIRE → KEEPALIVE → UNBLOCK on the token it got), so
//! a batch holds one request per lane and the next request of a lane depends
//! on its previous reply, as in a real client. Latency is measured per
//! request from the moment its batch is written to the moment the read that
//! completed its reply returned (as redis-benchmark does), in microseconds,
//! into an HDR histogram.
//!
//! Workloads:
//! - `gen`: GEN one token per request.
//! - `cycle`: ACQUIRE → KEEPALIVE → UNBLOCK on the token it got.
//! - `acquire`: ACQUIRE → UNBLOCK (the pool size stays constant).
//! - `mixed`: ACQUIRE → KEEPALIVE → INFO → UNBLOCK, and every 8th cycle of a
//!   lane starts with a GEN (about 3% GEN, 24% each of the others).
//! - `ping`: PING.
//! - `expiry`: makes `--tokens` tokens due within one second (`--spread-ms`)
//!   a few seconds ahead, subscribes to `__keyevent@0__:expired`, and reports
//!   how many events arrived and how late each was after its deadline.
//! - `fill`: only the pre-fill (`--tokens`), timed.
//! - `pools`: one token in each of `--tokens` pools (`<pool>-0`, `<pool>-1`,
//!   …), pipelined, timed: what many small pools cost.
//!
//! `--target http` drives tokend's HTTP API instead (acquire only, one
//! request at a time per connection, through hyper's HTTP/1.1 client).
//!
//! Output: a progress line on stderr each second; a human-readable summary;
//! with `--json`, one line of JSON on stdout (and the summary on stderr).

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Gen,
    Cycle,
    Acquire,
    Mixed,
    Ping,
    Expiry,
    Fill,
    Pools,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Gen => "gen",
            Workload::Cycle => "cycle",
            Workload::Acquire => "acquire",
            Workload::Mixed => "mixed",
            Workload::Ping => "ping",
            Workload::Expiry => "expiry",
            Workload::Fill => "fill",
            Workload::Pools => "pools",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// tokend's TOKEN.* commands.
    Tokend,
    /// A Redis 7 server with scripts/tokens.lua loaded (FCALL tokend_*).
    RedisFn,
    /// tokend's HTTP API (`--http-addr`) at --port: the `acquire` workload
    /// only (GET /token/acquireToken → PUT /token/unblockToken), one request
    /// at a time per connection (HTTP/1.1 keep-alive); pre-fill the pool
    /// over RESP first.
    Http,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Tokend => "tokend",
            Target::RedisFn => "redis-fn",
            Target::Http => "http",
        }
    }
}

/// Load generator for tokend and its Redis function-library reference.
#[derive(Parser, Debug, Clone)]
#[command(name = "tokend-bench", version, about, max_term_width = 100)]
struct Args {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Server port.
    #[arg(short, long, default_value_t = 6380)]
    port: u16,

    /// Concurrent connections.
    #[arg(short, long, default_value_t = 50)]
    clients: usize,

    /// Requests in flight per connection (1 = no pipelining).
    #[arg(short = 'P', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pipeline: u64,

    /// Stop after this many requests in total (instead of --duration).
    #[arg(short = 'n', long)]
    requests: Option<u64>,

    /// Run for this many seconds.
    #[arg(short, long, default_value_t = 5.0)]
    duration: f64,

    /// What to run.
    #[arg(short, long, value_enum, default_value_t = Workload::Cycle)]
    workload: Workload,

    /// Which server protocol to speak.
    #[arg(short, long, value_enum, default_value_t = Target::Tokend)]
    target: Target,

    /// Pool name.
    #[arg(long, default_value = "bench")]
    pool: String,

    /// Tokens to generate before the run (the expiry workload: tokens made due).
    #[arg(long, default_value_t = 0)]
    tokens: u64,

    /// Lease given by ACQUIRE (ms).
    #[arg(long, default_value_t = 60_000)]
    lease_ms: u64,

    /// Lifetime given by GEN (ms).
    #[arg(long, default_value_t = 300_000)]
    lifetime_ms: u64,

    /// Print each request answered more than this many µs after it was
    /// sent, with when it was sent on CLOCK_MONOTONIC (to find the stall
    /// in `perf record -k mono`; RESP targets).
    #[arg(long)]
    slow_us: Option<u64>,

    /// The cores the server and this client run on (`0,1`): the host's
    /// steal time of them (`/proc/stat`) is watched, and each reply slower
    /// than 1 ms is judged by whether the host held one of them while it
    /// was awaited (a virtual machine's core can be taken away for 100 ms at
    /// a time, which no server on it can answer through). With the expiry
    /// workload: their steal from the window's start to the last event.
    #[arg(long, value_delimiter = ',')]
    host_steal_cpus: Vec<usize>,

    /// The server's own timing of the run (RESP targets): for the run its
    /// slow log keeps every command of 1 ms or more, and those naming
    /// --pool are reported (how many, and the slowest); its settings are
    /// put back after. The server times a command from its handler's start
    /// to its end, waits for a lock included; a reply can still wait longer
    /// for the server's thread to run, the network, and this client.
    #[arg(long)]
    server_slowlog: bool,

    /// Expiry: the deadlines are spread evenly over this many ms (0 = all in one ms).
    #[arg(long, default_value_t = 1000)]
    spread_ms: u64,

    /// Expiry: the due window starts at least this many ms after the start (rounded up to a second).
    #[arg(long, default_value_t = 5000)]
    lead_ms: u64,

    /// Expiry: stop waiting for events this many seconds after the last deadline.
    #[arg(long, default_value_t = 20.0)]
    expiry_timeout: f64,

    /// Expiry: after the report, wait this many seconds before freeing the
    /// tables and exiting (freeing gigabytes stalls the core it runs on,
    /// which a probe sharing that core would count as the server's).
    #[arg(long, default_value_t = 0.0)]
    linger_secs: f64,

    /// Expiry: the server's process id (on this machine). Its CPU time
    /// (all threads, from /proc) from the window's start to the last event
    /// is reported, and per event received.
    #[arg(long)]
    server_pid: Option<u32>,

    /// With --target redis-fn: FUNCTION LOAD REPLACE this library first.
    #[arg(long)]
    library: Option<std::path::PathBuf>,

    /// Worker threads of the client (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Print one line of JSON on stdout (the human summary goes to stderr).
    #[arg(long)]
    json: bool,

    /// A label copied into the JSON summary.
    #[arg(long, default_value = "")]
    label: String,

    /// No progress line.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokend-bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn run(args: Args) -> Res<()> {
    let addr = format!("{}:{}", args.host, args.port);
    if args.server_slowlog && args.target == Target::Http {
        return Err("--server-slowlog needs a RESP target".into());
    }
    let cmds = Commands::new(&args);
    if let (Target::RedisFn, Some(lib)) = (args.target, &args.library) {
        let code = std::fs::read(lib).map_err(|e| format!("cannot read {}: {e}", lib.display()))?;
        let mut c = Conn::connect(&addr).await?;
        c.call_ok(&[b"FUNCTION", b"LOAD", b"REPLACE", &code]).await?;
    }
    match args.workload {
        Workload::Expiry => return expiry(&args, &addr, &cmds).await,
        Workload::Fill | Workload::Pools => {
            let t0 = Instant::now();
            let mut c = Conn::connect(&addr).await?;
            if args.workload == Workload::Pools {
                fill_pools(&mut c, &cmds, &args.pool, args.tokens, args.lifetime_ms).await?;
            } else {
                fill(&mut c, &cmds, &args.pool, args.tokens, args.lifetime_ms).await?;
            }
            let secs = t0.elapsed().as_secs_f64();
            let s = Summary::fill(&args, secs);
            s.print(&args);
            return Ok(());
        }
        _ => {}
    }
    if args.target == Target::Http {
        if args.workload != Workload::Acquire || args.pipeline != 1 || args.tokens > 0 {
            return Err("--target http runs -w acquire with -P 1; pre-fill the pool over RESP".into());
        }
        return load_http(&args, &addr).await;
    }
    if args.tokens > 0 {
        let mut c = Conn::connect(&addr).await?;
        let t0 = Instant::now();
        fill(&mut c, &cmds, &args.pool, args.tokens, args.lifetime_ms).await?;
        if !args.quiet {
            eprintln!("pre-filled {} tokens into '{}' in {:.2}s", args.tokens, args.pool, t0.elapsed().as_secs_f64());
        }
    }
    load(&args, &addr, cmds).await
}

// ---------------------------------------------------------------------------
// Commands for each target.

/// Request builders for one target; arguments are pre-encoded where constant.
#[derive(Clone)]
struct Commands {
    target: Target,
    pool: Bytes,
    lease: Bytes,
    lifetime: Bytes,
}

impl Commands {
    fn new(args: &Args) -> Commands {
        Commands {
            target: args.target,
            pool: Bytes::copy_from_slice(args.pool.as_bytes()),
            lease: Bytes::from(args.lease_ms.to_string()),
            lifetime: Bytes::from(args.lifetime_ms.to_string()),
        }
    }

    fn gen_one(&self, w: &mut Vec<u8>) {
        match self.target {
            Target::Tokend | Target::Http => encode(w, &[b"TOKEN.GEN", &self.pool, b"PX", &self.lifetime]),
            Target::RedisFn => {
                let t = new_uuid();
                encode(w, &[b"FCALL", b"tokend_gen", b"1", &self.pool, &self.lifetime, &t])
            }
        }
    }

    /// GEN of `ids.len()` tokens (redis-fn; the ids are made by the client) or
    /// `count` (tokend) with the given lifetime.
    fn gen_many(&self, w: &mut Vec<u8>, pool: &[u8], lifetime: &[u8], count: usize, ids: &[[u8; 36]]) {
        match self.target {
            Target::Tokend | Target::Http => {
                let n = count.to_string();
                encode(w, &[b"TOKEN.GEN", pool, b"PX", lifetime, b"COUNT", n.as_bytes()])
            }
            Target::RedisFn => {
                let mut a: Vec<&[u8]> = vec![b"FCALL", b"tokend_gen", b"1", pool, lifetime];
                a.extend(ids.iter().map(|t| &t[..]));
                encode(w, &a)
            }
        }
    }

    fn acquire(&self, w: &mut Vec<u8>) {
        match self.target {
            Target::Tokend | Target::Http => encode(w, &[b"TOKEN.ACQUIRE", &self.pool, b"PX", &self.lease]),
            Target::RedisFn => encode(w, &[b"FCALL", b"tokend_acquire", b"1", &self.pool, &self.lease]),
        }
    }

    fn on_token(&self, w: &mut Vec<u8>, tokend_cmd: &[u8], fname: &[u8], tok: &[u8]) {
        match self.target {
            Target::Tokend | Target::Http => encode(w, &[tokend_cmd, &self.pool, tok]),
            Target::RedisFn => encode(w, &[b"FCALL", fname, b"1", &self.pool, tok]),
        }
    }
}

fn new_uuid() -> [u8; 36] {
    let mut b = [0u8; 36];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut b);
    b
}

/// Appends one RESP array of bulk strings.
fn encode(w: &mut Vec<u8>, args: &[&[u8]]) {
    w.push(b'*');
    push_int(w, args.len());
    w.extend_from_slice(b"\r\n");
    for a in args {
        w.push(b'$');
        push_int(w, a.len());
        w.extend_from_slice(b"\r\n");
        w.extend_from_slice(a);
        w.extend_from_slice(b"\r\n");
    }
}

fn push_int(w: &mut Vec<u8>, mut n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&buf[i..]);
}

// ---------------------------------------------------------------------------
// Connection: one TCP stream, a read buffer, a write buffer.

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// When the last read returned: the arrival time of every reply it completed.
    last_read: Instant,
}

impl Conn {
    async fn connect(addr: &str) -> Res<Conn> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: Vec::with_capacity(64 * 1024),
            last_read: Instant::now(),
        })
    }

    /// Writes the whole write buffer and clears it.
    async fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// The next reply, and the time the read that completed it returned.
    async fn next(&mut self) -> Res<(BytesFrame, Instant)> {
        loop {
            if let Some((frame, _, _)) = decode_bytes_mut(&mut self.rbuf)? {
                return Ok((frame, self.last_read));
            }
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                self.rbuf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            self.last_read = Instant::now();
            if n == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }

    /// Flushes what is queued and takes the next reply, which must not be
    /// an error (`what` names the step in the error).
    async fn reply_ok(&mut self, what: &str) -> Res<()> {
        self.flush().await?;
        match self.next().await?.0 {
            BytesFrame::Error(e) => Err(format!("{what}: {e}").into()),
            _ => Ok(()),
        }
    }

    async fn call(&mut self, args: &[&[u8]]) -> Res<BytesFrame> {
        encode(&mut self.wbuf, args);
        self.flush().await?;
        Ok(self.next().await?.0)
    }

    /// Sends one command and takes its reply, which must not be an error
    /// (the error names the command's first two words).
    async fn call_ok(&mut self, args: &[&[u8]]) -> Res<BytesFrame> {
        match self.call(args).await? {
            BytesFrame::Error(e) => {
                let what: Vec<_> = args.iter().take(2).map(|a| String::from_utf8_lossy(a)).collect();
                Err(format!("{}: {e}", what.join(" ")).into())
            }
            r => Ok(r),
        }
    }
}

/// Generates `n` tokens into `pool` (GEN COUNT in chunks for tokend; FCALL
/// tokend_gen with client-made ids for Redis), pipelined.
async fn fill(c: &mut Conn, cmds: &Commands, pool: &str, n: u64, lifetime_ms: u64) -> Res<()> {
    let chunk: u64 = match cmds.target {
        Target::Tokend | Target::Http => 100_000,
        Target::RedisFn => 1_000,
    };
    let depth = match cmds.target {
        Target::Tokend | Target::Http => 2,
        Target::RedisFn => 16,
    };
    let lifetime = lifetime_ms.to_string();
    let mut left = n;
    let mut inflight = 0;
    let mut ids = Vec::new();
    while left > 0 || inflight > 0 {
        while left > 0 && inflight < depth {
            let k = left.min(chunk);
            ids.clear();
            if cmds.target == Target::RedisFn {
                ids.extend((0..k).map(|_| new_uuid()));
            }
            cmds.gen_many(&mut c.wbuf, pool.as_bytes(), lifetime.as_bytes(), k as usize, &ids);
            left -= k;
            inflight += 1;
        }
        c.reply_ok("pre-fill").await?;
        inflight -= 1;
    }
    Ok(())
}

/// Generates one token into each of `n` pools `<pool>-<i>`, 256 requests a
/// write, at most two writes in flight.
async fn fill_pools(c: &mut Conn, cmds: &Commands, pool: &str, n: u64, lifetime_ms: u64) -> Res<()> {
    const BATCH: u64 = 256;
    let lifetime = lifetime_ms.to_string();
    let (mut next, mut inflight) = (0u64, 0u64);
    while next < n || inflight > 0 {
        while next < n && inflight < 2 * BATCH {
            for i in next..(next + BATCH).min(n) {
                let name = format!("{pool}-{i}");
                let ids = if cmds.target == Target::RedisFn { vec![new_uuid()] } else { Vec::new() };
                cmds.gen_many(&mut c.wbuf, name.as_bytes(), lifetime.as_bytes(), 1, &ids);
                inflight += 1;
            }
            next = (next + BATCH).min(n);
        }
        c.reply_ok("GEN into many pools").await?;
        inflight -= 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The closed-loop load: lanes, connections, progress.

#[derive(Clone)]
enum Step {
    Gen,
    Acquire,
    Keepalive(Bytes),
    Info(Bytes),
    Unblock(Bytes),
    Ping,
}

struct Lane {
    step: Step,
    cycles: u64,
}

#[derive(Default)]
struct ConnStats {
    errors: u64,
    empty: u64,
    first_error: Option<String>,
    /// With `--host-steal-cpus`: the replies slower than [`SLOW_US`], as
    /// (sent on CLOCK_MONOTONIC, latency) in µs, and the slowest of the others.
    slow: Vec<(u64, u64)>,
    max_fast_us: u64,
}

/// Replies slower than this (µs) are kept to be judged against the host's
/// steal time.
const SLOW_US: u64 = 1_000;

impl ConnStats {
    /// Adds one connection's results to the totals.
    fn add(&mut self, hist: &mut Histogram<u64>, h: Histogram<u64>, s: ConnStats) -> Res<()> {
        hist.add(&h).map_err(|e| format!("histogram: {e}"))?;
        self.errors += s.errors;
        self.empty += s.empty;
        if self.first_error.is_none() {
            self.first_error = s.first_error;
        }
        self.slow.extend(s.slow);
        self.max_fast_us = self.max_fast_us.max(s.max_fast_us);
        Ok(())
    }
}

impl Lane {
    fn first(workload: Workload) -> Step {
        match workload {
            Workload::Gen => Step::Gen,
            Workload::Ping => Step::Ping,
            _ => Step::Acquire,
        }
    }

    fn encode(&self, cmds: &Commands, w: &mut Vec<u8>) {
        match &self.step {
            Step::Gen => cmds.gen_one(w),
            Step::Acquire => cmds.acquire(w),
            Step::Keepalive(t) => cmds.on_token(w, b"TOKEN.KEEPALIVE", b"tokend_keepalive", t),
            Step::Info(t) => cmds.on_token(w, b"TOKEN.INFO", b"tokend_info", t),
            Step::Unblock(t) => cmds.on_token(w, b"TOKEN.UNBLOCK", b"tokend_unblock", t),
            Step::Ping => encode(w, &[b"PING"]),
        }
    }

    /// Moves the lane on according to the reply.
    fn advance(&mut self, workload: Workload, reply: BytesFrame, st: &mut ConnStats) {
        if let BytesFrame::Error(e) = &reply {
            st.errors += 1;
            if st.first_error.is_none() {
                st.first_error = Some(e.to_string());
            }
            self.step = Lane::first(workload);
            return;
        }
        let restart = |cycles: &mut u64| {
            *cycles += 1;
            if workload == Workload::Mixed && (*cycles).is_multiple_of(8) { Step::Gen } else { Step::Acquire }
        };
        self.step = match (std::mem::replace(&mut self.step, Step::Ping), workload) {
            (Step::Ping, _) => Step::Ping,
            (Step::Gen, Workload::Gen) => Step::Gen,
            (Step::Gen, _) => Step::Acquire,
            (Step::Acquire, _) => match reply {
                BytesFrame::BulkString(t) => match workload {
                    Workload::Acquire => Step::Unblock(t),
                    _ => Step::Keepalive(t),
                },
                _ => {
                    st.empty += 1;
                    Step::Acquire
                }
            },
            (Step::Keepalive(t), Workload::Mixed) => Step::Info(t),
            (Step::Keepalive(t), _) => Step::Unblock(t),
            (Step::Info(t), _) => Step::Unblock(t),
            (Step::Unblock(_), _) => restart(&mut self.cycles),
        };
    }
}

struct Shared {
    /// `--slow-us`.
    slow_us: Option<u64>,
    /// `--host-steal-cpus` was given: keep the slow replies.
    keep_slow: bool,
    done: AtomicU64,
    stop: AtomicBool,
    /// Requests not yet issued (with --requests).
    budget: Option<AtomicU64>,
}

impl Shared {
    /// Takes up to `want` requests from the budget; 0 means stop.
    fn take(&self, want: u64) -> u64 {
        if self.stop.load(Ordering::Relaxed) {
            return 0;
        }
        match &self.budget {
            None => want,
            Some(b) => {
                let mut cur = b.load(Ordering::Relaxed);
                loop {
                    let k = cur.min(want);
                    if k == 0 {
                        return 0;
                    }
                    match b.compare_exchange_weak(cur, cur - k, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => return k,
                        Err(now) => cur = now,
                    }
                }
            }
        }
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn connection(
    mut c: Conn,
    cmds: Commands,
    workload: Workload,
    pipeline: u64,
    shared: Arc<Shared>,
    start: Arc<tokio::sync::Barrier>,
) -> Res<(Histogram<u64>, ConnStats)> {
    let mut hist = new_hist();
    let mut st = ConnStats::default();
    let mut lanes: Vec<Lane> = (0..pipeline).map(|_| Lane { step: Lane::first(workload), cycles: 0 }).collect();
    start.wait().await;
    loop {
        let n = shared.take(pipeline) as usize;
        if n == 0 {
            break;
        }
        for lane in &lanes[..n] {
            lane.encode(&cmds, &mut c.wbuf);
        }
        let t0 = Instant::now();
        c.flush().await?;
        for lane in &mut lanes[..n] {
            let (reply, at) = c.next().await?;
            let lat = at.duration_since(t0).as_micros().max(1) as u64;
            hist.saturating_record(lat);
            // When it was sent on CLOCK_MONOTONIC (to line up with `perf
            // record -k mono` and /proc/stat's samples), for slow replies only.
            let sent = || mono_us().saturating_sub(at.elapsed().as_micros() as u64 + lat);
            if shared.keep_slow {
                if lat > SLOW_US {
                    st.slow.push((sent(), lat));
                } else {
                    st.max_fast_us = st.max_fast_us.max(lat);
                }
            }
            if shared.slow_us.is_some_and(|x| lat > x) {
                let sent = sent();
                eprintln!(
                    "slow: sent at {}.{:06} (monotonic s), answered after {lat} µs",
                    sent / 1_000_000,
                    sent % 1_000_000
                );
            }
            lane.advance(workload, reply, &mut st);
        }
        shared.done.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok((hist, st))
}

/// This process's CPU time so far, all threads, in seconds.
fn cpu_secs() -> f64 {
    process_cpu_ns("self").unwrap_or(0) as f64 / 1e9
}

fn progress_end() -> &'static str {
    if io::stderr().is_terminal() { "\r" } else { "\n" }
}

async fn load(args: &Args, addr: &str, cmds: Commands) -> Res<()> {
    let shared = Arc::new(Shared {
        slow_us: args.slow_us,
        keep_slow: !args.host_steal_cpus.is_empty(),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        budget: args.requests.map(AtomicU64::new),
    });
    let slowlog = if args.server_slowlog { Some(ServerSlowlog::start(addr).await?) } else { None };
    let start = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let mut conns = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        conns.push(Conn::connect(addr).await?);
    }
    let mut tasks = Vec::with_capacity(args.clients);
    for c in conns {
        tasks.push(tokio::spawn(connection(
            c,
            cmds.clone(),
            args.workload,
            args.pipeline,
            shared.clone(),
            start.clone(),
        )));
    }
    let steal = (!args.host_steal_cpus.is_empty()).then(|| StealWatch::start(args.host_steal_cpus.clone()));
    start.wait().await;
    let t0 = Instant::now();
    let began = mono_us();
    let began_epoch_ms = epoch_us() / 1000;
    let cpu0 = cpu_secs();
    // Progress and the duration limit.
    let ticker = {
        let shared = shared.clone();
        let quiet = args.quiet;
        let limit = if args.requests.is_some() { None } else { Some(Duration::from_secs_f64(args.duration)) };
        let name = format!("{} against {}", args.workload.name(), args.target.name());
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
            let deadline = limit.map(|d| tokio::time::Instant::now() + d);
            loop {
                let sleep = sleep_until_opt(deadline);
                tokio::select! {
                    _ = tick.tick() => {
                        let done = shared.done.load(Ordering::Relaxed);
                        if !quiet {
                            eprint!("{name}: {:>5.1}s {:>10} ops/s {:>12} ops{}", t0.elapsed().as_secs_f64(), done - last, done, progress_end());
                        }
                        last = done;
                    }
                    _ = sleep => {
                        shared.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        })
    };
    let mut hist = new_hist();
    let mut st = ConnStats::default();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok((h, s))) => st.add(&mut hist, h, s)?,
            Ok(Err(e)) => failure = Some(e.to_string()),
            Err(e) => failure = Some(e.to_string()),
        }
        // One connection failing stops the others.
        if failure.is_some() {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    ticker.abort();
    // The server's settings go back whether or not the run failed.
    let server_slow = match slowlog {
        Some(s) => Some(s.finish(args.pool.as_bytes()).await),
        None => None,
    };
    if let Some(e) = failure {
        return Err(format!("a connection failed: {e}").into());
    }
    let server_slow = server_slow.transpose()?;
    if !args.quiet && io::stderr().is_terminal() {
        eprintln!();
    }
    let steal = steal.map(|w| w.judge(&st.slow, st.max_fast_us, &hist, began));
    let mut s = Summary::load(args, secs, cpu, &hist, st, steal, server_slow);
    // Lines the run up with others' epoch times (an expiry's window).
    s.fields.push(("began_epoch_ms", began_epoch_ms.to_string()));
    s.print(args);
    Ok(())
}

/// The shortest command (µs) a server's slow log keeps for
/// `--server-slowlog`.
const SERVER_SLOWLOG_US: u64 = 1_000;

/// `--server-slowlog`: the server's slow-log settings before the run, to
/// be put back after it.
struct ServerSlowlog {
    conn: Conn,
    saved: Vec<(&'static [u8], Bytes)>,
}

impl ServerSlowlog {
    /// Keeps every command of [`SERVER_SLOWLOG_US`] or more, as many as
    /// there are, in an emptied log.
    async fn start(addr: &str) -> Res<ServerSlowlog> {
        let mut conn = Conn::connect(addr).await?;
        let threshold = SERVER_SLOWLOG_US.to_string();
        let mut saved = Vec::new();
        let settings: [(&'static [u8], &[u8]); 2] =
            [(b"slowlog-log-slower-than", threshold.as_bytes()), (b"slowlog-max-len", b"1000000")];
        for (name, value) in settings {
            let r = conn.call_ok(&[b"CONFIG", b"GET", name]).await?;
            let Some(BytesFrame::BulkString(old)) = field(&r, 1) else {
                return Err(format!("CONFIG GET {}: {r:?}", String::from_utf8_lossy(name)).into());
            };
            saved.push((name, old.clone()));
            conn.call_ok(&[b"CONFIG", b"SET", name, value]).await?;
        }
        conn.call_ok(&[b"SLOWLOG", b"RESET"]).await?;
        Ok(ServerSlowlog { conn, saved })
    }

    /// How many of the logged commands name `pool`, and the slowest of
    /// them (µs); the settings go back as they were.
    async fn finish(mut self, pool: &[u8]) -> Res<(u64, u64)> {
        let log = self.conn.call_ok(&[b"SLOWLOG", b"GET", b"-1"]).await;
        for (name, old) in &self.saved {
            self.conn.call_ok(&[b"CONFIG", b"SET", name, old]).await?;
        }
        let log = log?;
        slowlog_of_pool(&log, pool)
    }
}

/// Of a `SLOWLOG GET` reply, the entries with an argument equal to `pool`
/// (a TOKEN.* command's first, an FCALL's third): how many, and the most
/// µs one took.
fn slowlog_of_pool(log: &BytesFrame, pool: &[u8]) -> Res<(u64, u64)> {
    let BytesFrame::Array(entries) = log else { return Err(format!("SLOWLOG GET: {log:?}").into()) };
    let (mut count, mut max_us) = (0, 0);
    for e in entries {
        let (Some(BytesFrame::Integer(us)), Some(BytesFrame::Array(argv))) = (field(e, 2), field(e, 3)) else {
            return Err(format!("SLOWLOG GET: an entry is not id, time, µs, arguments…: {e:?}").into());
        };
        if argv.iter().any(|a| matches!(a, BytesFrame::BulkString(b) if b[..] == *pool)) {
            count += 1;
            max_us = max_us.max((*us).max(0) as u64);
        }
    }
    Ok((count, max_us))
}

/// The `i`th element of an array reply.
fn field(frame: &BytesFrame, i: usize) -> Option<&BytesFrame> {
    match frame {
        BytesFrame::Array(v) => v.get(i),
        _ => None,
    }
}

/// What the host's steal time of the watched cores says of a run's slow
/// replies.
struct StealReport {
    cpus: Vec<usize>,
    /// The cores' steal time over the whole run.
    total_ms: u64,
    /// Replies slower than 5 ms, and how many of them the host held the
    /// cores during (a steal tick booked from 5 ms before the request was
    /// sent to 20 ms after it was answered: steal is booked at a tick).
    over_5ms: u64,
    over_5ms_stolen: u64,
    /// When each reply slower than 5 ms was sent (ms from the run's start)
    /// and how long it took (µs), in time order: which part of a run they
    /// fell in.
    over_5ms_at: Vec<(u64, u64)>,
    /// The slowest reply awaited while the host held none of the cores.
    max_unstolen_us: u64,
}

/// Samples some cores' steal time (`/proc/stat`, in clock ticks) every
/// 5 ms on a thread of its own until judged.
struct StealWatch {
    cpus: Vec<usize>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, u64)>>,
}

impl StealWatch {
    fn start(cpus: Vec<usize>) -> StealWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let watched = cpus.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            loop {
                if let Some(t) = steal_ticks(&watched) {
                    samples.push((mono_us(), t));
                }
                if flag.load(Ordering::Relaxed) {
                    return samples;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        StealWatch { cpus, stop, thread }
    }

    /// Stops sampling and judges the `slow` replies (sent, latency in µs);
    /// `max_fast_us` is the slowest of the others, `hist` holds them all,
    /// `began` is the run's start (µs on CLOCK_MONOTONIC).
    /// The slowest unheld reply is given on `hist`'s scale, as its `max` is,
    /// so the two are equal when the host held no core during the worst.
    fn judge(self, slow: &[(u64, u64)], max_fast_us: u64, hist: &Histogram<u64>, began: u64) -> StealReport {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        StealReport::judge(self.cpus, &samples, 1000 / clock_ticks_per_sec(), slow, max_fast_us, hist, began)
    }
}

impl StealReport {
    /// The report from the steal `samples` (µs on CLOCK_MONOTONIC, ticks
    /// of `ms_per_tick`); the rest as [`StealWatch::judge`].
    fn judge(
        cpus: Vec<usize>,
        samples: &[(u64, u64)],
        ms_per_tick: u64,
        slow: &[(u64, u64)],
        max_fast_us: u64,
        hist: &Histogram<u64>,
        began: u64,
    ) -> StealReport {
        let stolen = |from: u64, to: u64| stolen_ticks(samples, from, to) * ms_per_tick;
        let mut r = StealReport {
            cpus,
            total_ms: stolen(0, u64::MAX),
            over_5ms: 0,
            over_5ms_stolen: 0,
            over_5ms_at: Vec::new(),
            max_unstolen_us: if samples.is_empty() { hist.max() } else { max_fast_us },
        };
        for &(sent, lat) in slow {
            let held = !samples.is_empty() && stolen(sent.saturating_sub(5_000), sent + lat + 20_000) > 0;
            if lat > 5_000 {
                r.over_5ms += 1;
                r.over_5ms_stolen += held as u64;
                r.over_5ms_at.push((sent.saturating_sub(began) / 1000, lat));
            }
            if !held {
                r.max_unstolen_us = r.max_unstolen_us.max(lat);
            }
        }
        // Connections' replies come one connection after another.
        r.over_5ms_at.sort_unstable();
        r.max_unstolen_us = hist.highest_equivalent(r.max_unstolen_us).min(hist.max());
        r
    }
}

/// `at` (ms from the start, latency µs) as `6.512:7.08 21.300:23.54`,
/// the first 20 only, then `+N` for the N left out.
fn slow_times(at: &[(u64, u64)]) -> String {
    let mut s: Vec<String> = at
        .iter()
        .take(20)
        .map(|(ms, us)| format!("{}.{:03}:{:.2}", ms / 1000, ms % 1000, *us as f64 / 1000.0))
        .collect();
    if at.len() > 20 {
        s.push(format!("+{}", at.len() - 20));
    }
    s.join(" ")
}

/// The steal ticks booked between the last sample at or before `from` and
/// the first at or after `to` (the ends of `samples` where there is none).
fn stolen_ticks(samples: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else { return 0 };
    // The samples are in time order: a binary search each way.
    let a = samples[..samples.partition_point(|s| s.0 <= from)].last().unwrap_or(first).1;
    let b = samples.get(samples.partition_point(|s| s.0 < to)).unwrap_or(last).1;
    b.saturating_sub(a)
}

/// The steal time of cores `cpus` in `/proc/stat`, in clock ticks; None
/// if one of them is not there.
fn steal_ticks(cpus: &[usize]) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let mut total = 0;
    for cpu in cpus {
        let name = format!("cpu{cpu}");
        let mut fields =
            text.lines().map(str::split_whitespace).find_map(|mut f| (f.next() == Some(&name)).then_some(f))?;
        // user nice system idle iowait irq softirq steal
        total += fields.nth(7)?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

// ---------------------------------------------------------------------------
// The HTTP API: ACQUIRE → UNBLOCK as the old service's clients do it.

/// One HTTP/1.1 keep-alive connection (hyper's client connection).
async fn http_conn(addr: &str) -> Res<hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// One connection's loop: (latencies, stats).
async fn http_connection(
    mut send: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    host: String,
    pool: String,
    shared: Arc<Shared>,
    start: Arc<tokio::sync::Barrier>,
) -> Res<(Histogram<u64>, ConnStats)> {
    use http_body_util::BodyExt;
    let mut hist = new_hist();
    let mut st = ConnStats::default();
    let acquire = format!("/token/acquireToken?pool={pool}");
    let unblock = format!("/token/unblockToken?pool={pool}");
    start.wait().await;
    while !shared.stop.load(Ordering::Relaxed) && shared.take(1) > 0 {
        let t0 = Instant::now();
        let req = hyper::Request::get(&acquire).header("host", &host).body(http_body_util::Full::new(Bytes::new()))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
        shared.done.fetch_add(1, Ordering::Relaxed);
        if status == hyper::StatusCode::BAD_REQUEST {
            st.empty += 1;
            continue;
        }
        // {"token":"<36 characters>"}
        let token = body.get(10..46).filter(|_| status == hyper::StatusCode::OK && body.len() == 48);
        let Some(token) = token else {
            st.errors += 1;
            st.first_error.get_or_insert_with(|| format!("acquire: {status} {}", String::from_utf8_lossy(&body)));
            continue;
        };
        let payload = format!("{{\"token\": \"{}\"}}", String::from_utf8_lossy(token));
        let t0 = Instant::now();
        let req = hyper::Request::put(&unblock)
            .header("host", &host)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(payload)))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
        shared.done.fetch_add(1, Ordering::Relaxed);
        if status != hyper::StatusCode::OK {
            st.errors += 1;
            st.first_error.get_or_insert_with(|| format!("unblock: {status} {}", String::from_utf8_lossy(&body)));
        }
    }
    Ok((hist, st))
}

/// The acquire workload over HTTP.
async fn load_http(args: &Args, addr: &str) -> Res<()> {
    let shared = Arc::new(Shared {
        slow_us: None,
        keep_slow: false,
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        budget: args.requests.map(|n| AtomicU64::new(n.div_ceil(2))),
    });
    let start = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let send = http_conn(addr).await?;
        tasks.push(tokio::spawn(http_connection(
            send,
            addr.to_string(),
            args.pool.clone(),
            shared.clone(),
            start.clone(),
        )));
    }
    start.wait().await;
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    if args.requests.is_none() {
        let shared = shared.clone();
        let d = Duration::from_secs_f64(args.duration);
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            shared.stop.store(true, Ordering::Relaxed);
        });
    }
    let mut hist = new_hist();
    let mut st = ConnStats::default();
    for t in tasks {
        let (h, s) = t.await??;
        st.add(&mut hist, h, s)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    Summary::load(args, secs, cpu, &hist, st, None, None).print(args);
    Ok(())
}

// ---------------------------------------------------------------------------
// Expiry: N tokens due within one second; how late does each event arrive?

/// Most tokens one GEN makes: tokend's default `--max-gen-count`.
const GEN_CHUNK: u64 = 100_000;

/// How the expiry workload makes `n` tokens due over `spread` ms: (tokens
/// in one GEN, due offset in ms from the window's start). Slot i of S is
/// due at i * spread / S, evenly over the window; a slot of more than
/// [`GEN_CHUNK`] tokens is made by several GENs with the same offset.
fn gen_plan(n: u64, spread: u64) -> Vec<(u64, u64)> {
    let spread = spread.max(1);
    let per_slot = n.div_ceil(spread).max(1);
    let slots = n.div_ceil(per_slot);
    let mut plan = Vec::new();
    let mut made = 0;
    for slot in 0..slots {
        let offset = slot * spread / slots;
        let mut left = per_slot.min(n - made);
        made += left;
        while left > 0 {
            let k = left.min(GEN_CHUNK);
            plan.push((k, offset));
            left -= k;
        }
    }
    plan
}

/// CLOCK_MONOTONIC in µs (perf's `-k mono` clock).
fn mono_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; the clock id
    // is a valid constant.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn epoch_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// CPU time of every thread of process `pid` ("self" or a number) so far,
/// ns (the first field of each `/proc/<pid>/task/<tid>/schedstat`: exact,
/// where `/proc/<pid>/stat` counts 10 ms ticks); None if no thread's could
/// be read. A thread that exited meanwhile is not counted.
fn process_cpu_ns(pid: &str) -> Option<u64> {
    let mut total = None;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(t) = t else { continue };
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else { continue };
        if let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            *total.get_or_insert(0) += ns;
        }
    }
    total
}

/// What every `message` on `channel` starts with, up to its payload's
/// length.
fn message_head(channel: &[u8]) -> Vec<u8> {
    let mut head = b"*3\r\n$7\r\nmessage\r\n$".to_vec();
    head.extend_from_slice(channel.len().to_string().as_bytes());
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(channel);
    head.extend_from_slice(b"\r\n$");
    head
}

/// Takes the next pushed message off `buf`: `Some(Some(token))` for a
/// message that starts with `head` ([`message_head`]; the token is the
/// payload's last 36 bytes), `Some(None)` for any other complete frame,
/// `None` if the buffer holds no complete frame yet. A message on the
/// channel is matched byte for byte, without building a frame: with a
/// redis-protocol frame per message, the subscriber fell behind a 10M-token
/// mass expiry and the server disconnected it after 2.8M and 5.3M events
/// (two runs).
fn next_message(buf: &mut BytesMut, head: &[u8]) -> Res<Option<Option<[u8; 36]>>> {
    let n = head.len().min(buf.len());
    if buf[..n] == head[..n] {
        if buf.len() <= head.len() {
            return Ok(None);
        }
        let rest = &buf[head.len()..];
        let Some(cr) = rest.iter().take(21).position(|&b| b == b'\r') else {
            return if rest.len() > 20 { Err("bad bulk length".into()) } else { Ok(None) };
        };
        let len: usize = std::str::from_utf8(&rest[..cr]).ok().and_then(|d| d.parse().ok()).ok_or("bad bulk length")?;
        let end = head.len() + cr + 2 + len + 2;
        if buf.len() < end {
            return Ok(None);
        }
        let token = (len >= 36).then(|| {
            let mut t = [0u8; 36];
            t.copy_from_slice(&buf[end - 2 - 36..end - 2]);
            t
        });
        bytes::Buf::advance(buf, end);
        return Ok(Some(token));
    }
    Ok(decode_bytes_mut(buf)?.map(|_| None))
}

async fn expiry(args: &Args, addr: &str, cmds: &Commands) -> Res<()> {
    let n = args.tokens.max(1);
    let spread = args.spread_ms.max(1);
    let channel: &[u8] = b"__keyevent@0__:expired";
    let mut c = Conn::connect(addr).await?;
    if args.target == Target::RedisFn {
        // Redis publishes key expirations only when asked to.
        c.call_ok(&[b"CONFIG", b"SET", b"notify-keyspace-events", b"Ex"]).await?;
    }
    let mut sub = Conn::connect(addr).await?;
    let r = sub.call(&[b"SUBSCRIBE", channel]).await?;
    if !matches!(r, BytesFrame::Array(_)) {
        return Err(format!("SUBSCRIBE: unexpected reply {r:?}").into());
    }
    // The due window: [window, window + spread), a whole second at least
    // lead_ms ahead.
    let now_ms = epoch_us() / 1000;
    let window = (now_ms + args.lead_ms).div_ceil(1000) * 1000;
    let last_due = window + spread - 1;
    let timeout_at = last_due + (args.expiry_timeout * 1000.0) as u64;
    // The subscriber records (token, arrival µs) until it has n or times out.
    let listener = tokio::spawn(async move {
        let mut got: Vec<([u8; 36], u64)> = Vec::with_capacity(n as usize);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(timeout_at.saturating_sub(epoch_us() / 1000));
        let mut evicted = None;
        // Each message is timed by the read that brought it in: parsing
        // the ones before it is the subscriber's time, not the server's.
        let mut at = epoch_us();
        let head = message_head(channel);
        'read: while (got.len() as u64) < n {
            loop {
                match next_message(&mut sub.rbuf, &head) {
                    Ok(Some(Some(t))) => got.push((t, at)),
                    Ok(Some(None)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        evicted = Some(e.to_string());
                        break 'read;
                    }
                }
                if got.len() as u64 >= n {
                    break 'read;
                }
            }
            if sub.rbuf.capacity() - sub.rbuf.len() < 16 * 1024 {
                sub.rbuf.reserve(256 * 1024);
            }
            match tokio::time::timeout_at(deadline, sub.stream.read_buf(&mut sub.rbuf)).await {
                Err(_) => break,
                Ok(Ok(0)) => {
                    evicted = Some("the server closed the connection".to_string());
                    break;
                }
                Ok(Ok(_)) => at = epoch_us(),
                Ok(Err(e)) => {
                    evicted = Some(e.to_string());
                    break;
                }
            }
        }
        (got, evicted)
    });
    // Generate: one GEN per due millisecond slot (several when a slot holds
    // more than one GEN may make), sequentially (no pipelining) so each
    // request's deadline is known to within its round trip.
    let plan = gen_plan(n, spread);
    let pool = cmds.pool.clone();
    let mut deadlines: HashMap<[u8; 36], u64> = HashMap::with_capacity(n as usize);
    // The longest GEN round trip: how much later than our estimate a server
    // deadline can be (the server's "now" is between send and reply).
    let mut max_rtt_us = 0u64;
    let mut late_start = 0u64;
    let t_gen = Instant::now();
    let mut made = 0u64;
    let mut ids: Vec<[u8; 36]> = Vec::new();
    for (k, offset) in plan {
        let due = window + offset;
        ids.clear();
        if cmds.target == Target::RedisFn {
            ids.extend((0..k).map(|_| new_uuid()));
        }
        let sent = Instant::now();
        let sent_us = epoch_us();
        let px = (due * 1000).saturating_sub(sent_us) / 1000;
        if px == 0 {
            late_start += k;
        }
        let px = px.max(1);
        // The server's deadline is its "now" (at or after `sent`) + px; ours
        // is the lower bound, so lateness is never underestimated.
        let deadline_ms = sent_us / 1000 + px;
        cmds.gen_many(&mut c.wbuf, &pool, px.to_string().as_bytes(), k as usize, &ids);
        c.flush().await?;
        let (r, at) = c.next().await?;
        max_rtt_us = max_rtt_us.max(at.duration_since(sent).as_micros() as u64);
        match r {
            BytesFrame::Error(e) => return Err(format!("GEN: {e}").into()),
            BytesFrame::Array(toks) if cmds.target == Target::Tokend => {
                for t in toks {
                    if let BytesFrame::BulkString(b) = t
                        && b.len() == 36
                    {
                        let mut a = [0u8; 36];
                        a.copy_from_slice(&b);
                        deadlines.insert(a, deadline_ms);
                    }
                }
            }
            _ => {
                for t in &ids {
                    deadlines.insert(*t, deadline_ms);
                }
            }
        }
        made += k;
    }
    debug_assert_eq!(made, n);
    let gen_secs = t_gen.elapsed().as_secs_f64();
    if !args.quiet {
        eprintln!(
            "expiry: {} tokens made in {:.2}s, due in [{}, {}] epoch ms; waiting for the events…",
            deadlines.len(),
            gen_secs,
            window,
            last_due
        );
    }
    // The server's CPU from the window's start (GEN is done by then unless
    // the lead was too short) to the last event.
    let cpu_start = match args.server_pid {
        Some(pid) => {
            let ahead = (window * 1000).saturating_sub(epoch_us());
            tokio::time::sleep(Duration::from_micros(ahead)).await;
            process_cpu_ns(&pid.to_string())
        }
        None => None,
    };
    let cpus = &args.host_steal_cpus;
    let steal_start = (!cpus.is_empty()).then(|| steal_ticks(cpus)).flatten();
    let (got, evicted) = listener.await?;
    let server_cpu_ns = cpu_start
        .zip(args.server_pid.and_then(|pid| process_cpu_ns(&pid.to_string())))
        .map(|(a, b)| b.saturating_sub(a));
    let host_steal_ms =
        steal_start.zip(steal_ticks(cpus)).map(|(a, b)| b.saturating_sub(a) * 1000 / clock_ticks_per_sec());
    if let Some(e) = &evicted
        && !args.quiet
    {
        eprintln!("expiry: the subscription ended early: {e}");
    }
    let mut hist = new_hist();
    let mut received = 0u64;
    let mut early = 0u64;
    let mut min_late_us = i64::MAX;
    let mut last_arrival = 0u64;
    for (t, at) in &got {
        let Some(&d) = deadlines.get(t) else { continue };
        received += 1;
        let late = *at as i64 - (d * 1000) as i64;
        min_late_us = min_late_us.min(late);
        if late < 0 {
            early += 1;
        }
        last_arrival = last_arrival.max(*at);
        hist.saturating_record(late.max(1) as u64);
    }
    let s = Summary::expiry(
        args,
        ExpiryResult {
            expected: deadlines.len() as u64,
            received,
            early,
            late_start,
            min_late_us: if received > 0 { min_late_us } else { 0 },
            gen_secs,
            spread_ms: spread,
            window_ms: window,
            drain_ms: (last_arrival / 1000).saturating_sub(window),
            max_rtt_us,
            evicted,
            server_cpu_ns,
            host_steal_ms,
        },
        &hist,
    );
    s.print(args);
    if args.linger_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.linger_secs)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Summary: human-readable and one-line JSON.

struct ExpiryResult {
    expected: u64,
    received: u64,
    early: u64,
    late_start: u64,
    min_late_us: i64,
    gen_secs: f64,
    spread_ms: u64,
    /// The window's start, epoch ms.
    window_ms: u64,
    drain_ms: u64,
    max_rtt_us: u64,
    evicted: Option<String>,
    /// The server's CPU time from the window's start to the last event.
    server_cpu_ns: Option<u64>,
    /// The host's steal time of the `--host-steal-cpus` over the same span.
    host_steal_ms: Option<u64>,
}

/// Ordered key/value pairs; values are JSON already.
struct Summary {
    human: String,
    fields: Vec<(&'static str, String)>,
}

fn jstr(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn jnum(x: f64) -> String {
    if x.is_finite() { format!("{:.3}", x) } else { "null".into() }
}

impl Summary {
    fn base(args: &Args) -> Vec<(&'static str, String)> {
        vec![
            ("label", jstr(&args.label)),
            ("workload", jstr(args.workload.name())),
            ("target", jstr(args.target.name())),
            ("port", args.port.to_string()),
            ("clients", args.clients.to_string()),
            ("pipeline", args.pipeline.to_string()),
            ("tokens", args.tokens.to_string()),
        ]
    }

    fn fill(args: &Args, secs: f64) -> Summary {
        let mut fields = Summary::base(args);
        let rate = args.tokens as f64 / secs.max(1e-9);
        fields.push(("secs", jnum(secs)));
        fields.push(("tokens_per_sec", jnum(rate)));
        Summary { human: format!("fill: {} tokens in {:.3}s ({:.0} tokens/s)", args.tokens, secs, rate), fields }
    }

    fn load(
        args: &Args,
        secs: f64,
        cpu: f64,
        h: &Histogram<u64>,
        st: ConnStats,
        steal: Option<StealReport>,
        server_slow: Option<(u64, u64)>,
    ) -> Summary {
        let ops = h.len();
        let rate = ops as f64 / secs.max(1e-9);
        let cpu_pct = 100.0 * cpu / secs.max(1e-9);
        let q = |p: f64| h.value_at_quantile(p);
        let mut fields = Summary::base(args);
        fields.extend([
            ("ops", ops.to_string()),
            ("secs", jnum(secs)),
            ("ops_per_sec", jnum(rate)),
            ("p50_us", q(0.50).to_string()),
            ("p99_us", q(0.99).to_string()),
            ("p999_us", q(0.999).to_string()),
            ("max_us", h.max().to_string()),
            ("mean_us", jnum(h.mean())),
            ("errors", st.errors.to_string()),
            ("empty", st.empty.to_string()),
            ("client_cpu_pct", jnum(cpu_pct)),
            ("first_error", st.first_error.as_deref().map(jstr).unwrap_or_else(|| "null".into())),
        ]);
        let mut human = format!(
            "{} against {} at {}:{}, {} clients, pipeline {}\n  {} requests in {:.2}s: {:.0} ops/s\n  \
             latency µs: p50 {}  p99 {}  p99.9 {}  max {}  mean {:.1}\n  client CPU {:.0}%  errors {}  nil acquires {}",
            args.workload.name(),
            args.target.name(),
            args.host,
            args.port,
            args.clients,
            args.pipeline,
            ops,
            secs,
            rate,
            q(0.50),
            q(0.99),
            q(0.999),
            h.max(),
            h.mean(),
            cpu_pct,
            st.errors,
            st.empty
        );
        if let Some(e) = &st.first_error {
            human.push_str(&format!("\n  first error: {e}"));
        }
        if let Some(r) = steal {
            fields.extend([
                ("host_steal_cpus", jstr(&cpu_list(&r.cpus))),
                ("host_steal_ms", r.total_ms.to_string()),
                ("over_5ms", r.over_5ms.to_string()),
                ("over_5ms_host_stolen", r.over_5ms_stolen.to_string()),
                ("max_unstolen_us", r.max_unstolen_us.to_string()),
                ("over_5ms_at", jstr(&slow_times(&r.over_5ms_at))),
            ]);
            human.push_str(&format!(
                "\n  host steal of cores {}: {} ms; replies over 5 ms: {}, {} of them while the host held one; \
                 the slowest reply without: {} µs",
                cpu_list(&r.cpus),
                r.total_ms,
                r.over_5ms,
                r.over_5ms_stolen,
                r.max_unstolen_us
            ));
            if !r.over_5ms_at.is_empty() {
                human.push_str(&format!(
                    "\n  replies over 5 ms (sent at s from the start: took ms): {}",
                    slow_times(&r.over_5ms_at)
                ));
            }
        }
        if let Some((count, max_us)) = server_slow {
            fields.extend([("server_slow_commands", count.to_string()), ("server_slow_max_us", max_us.to_string())]);
            human.push_str(&format!(
                "\n  the server's slow log: {count} of the run's commands on '{}' took {SERVER_SLOWLOG_US} µs or more \
                 there{}",
                args.pool,
                if count > 0 { format!(", the slowest {max_us} µs") } else { String::new() }
            ));
        }
        Summary { human, fields }
    }

    fn expiry(args: &Args, r: ExpiryResult, h: &Histogram<u64>) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| if r.received > 0 { ms(h.value_at_quantile(p)) } else { f64::NAN };
        let per_event_us = match r.server_cpu_ns {
            Some(ns) if r.received > 0 => ns as f64 / 1000.0 / r.received as f64,
            _ => f64::NAN,
        };
        let mut fields = Summary::base(args);
        fields.extend([
            ("expected", r.expected.to_string()),
            ("received", r.received.to_string()),
            ("missing", (r.expected - r.received.min(r.expected)).to_string()),
            ("early", r.early.to_string()),
            ("late_start", r.late_start.to_string()),
            ("spread_ms", r.spread_ms.to_string()),
            ("window_epoch_ms", r.window_ms.to_string()),
            ("gen_secs", jnum(r.gen_secs)),
            ("late_min_ms", jnum(r.min_late_us as f64 / 1000.0)),
            ("late_p50_ms", jnum(q(0.50))),
            ("late_p99_ms", jnum(q(0.99))),
            ("late_p999_ms", jnum(q(0.999))),
            ("late_max_ms", jnum(if r.received > 0 { ms(h.max()) } else { f64::NAN })),
            ("drain_ms", r.drain_ms.to_string()),
            ("deadline_uncertainty_ms", jnum(r.max_rtt_us as f64 / 1000.0)),
            ("server_cpu_ms", r.server_cpu_ns.map_or_else(|| "null".into(), |ns| jnum(ns as f64 / 1e6))),
            ("server_cpu_per_event_us", jnum(per_event_us)),
            ("host_steal_ms", r.host_steal_ms.map_or_else(|| "null".into(), |ms| ms.to_string())),
            ("subscription_error", r.evicted.as_deref().map(jstr).unwrap_or_else(|| "null".into())),
        ]);
        let mut human = format!(
            "expiry against {} at {}:{}: {} tokens due within {} ms\n  events received {} of {} ({} early)\n  \
             lateness ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  min {:.3}\n  last event {} ms after the \
             window opened; GEN took {:.2}s",
            args.target.name(),
            args.host,
            args.port,
            r.expected,
            r.spread_ms,
            r.received,
            r.expected,
            r.early,
            q(0.50),
            q(0.99),
            q(0.999),
            if r.received > 0 { ms(h.max()) } else { f64::NAN },
            r.min_late_us as f64 / 1000.0,
            r.drain_ms,
            r.gen_secs
        );
        if let Some(ns) = r.server_cpu_ns {
            human.push_str(&format!(
                "\n  server CPU from the window's start to the last event: {:.1} ms, {:.3} µs per event",
                ns as f64 / 1e6,
                per_event_us
            ));
        }
        if let Some(ms) = r.host_steal_ms {
            human.push_str(&format!("\n  the host's steal of the watched cores over the same span: {ms} ms"));
        }
        if r.late_start > 0 {
            human.push_str(&format!(
                "\n  warning: {} tokens were generated after their slot (lead too short)",
                r.late_start
            ));
        }
        if let Some(e) = &r.evicted {
            human.push_str(&format!("\n  subscription ended early: {e}"));
        }
        Summary { human, fields }
    }

    fn print(&self, args: &Args) {
        if args.json {
            eprintln!("{}", self.human);
            let body: Vec<String> = self.fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{{{}}}", body.join(","));
        } else {
            println!("{}", self.human);
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_slowlog_counts_the_commands_naming_the_pool() {
        let bulk = |s: &str| BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()));
        let entry = |us: i64, argv: &[&str]| {
            BytesFrame::Array(vec![
                BytesFrame::Integer(1),
                BytesFrame::Integer(1_764_000_000),
                BytesFrame::Integer(us),
                BytesFrame::Array(argv.iter().map(|a| bulk(a)).collect()),
                bulk("127.0.0.1:5000"),
                bulk(""),
            ])
        };
        let log = BytesFrame::Array(vec![
            entry(1_800, &["TOKEN.ACQUIRE", "probe", "PX", "60000"]),
            entry(24_000, &["TOKEN.GEN", "g1", "PX", "300000", "COUNT", "100000"]),
            entry(1_200, &["FCALL", "tokend_unblock", "1", "probe", "67e55044"]),
            entry(3_000, &["TOKEN.ACQUIRE", "probes", "PX", "60000"]),
        ]);
        assert_eq!(slowlog_of_pool(&log, b"probe").unwrap(), (2, 1_800));
        assert_eq!(slowlog_of_pool(&log, b"nothing").unwrap(), (0, 0));
        assert_eq!(slowlog_of_pool(&BytesFrame::Array(vec![]), b"probe").unwrap(), (0, 0));
        assert!(slowlog_of_pool(&BytesFrame::Array(vec![bulk("x")]), b"probe").is_err());
        assert!(slowlog_of_pool(&bulk("OK"), b"probe").is_err());
    }

    #[test]
    fn messages_are_taken_whole_however_the_reads_cut_them() {
        let channel: &[u8] = b"__keyevent@0__:expired";
        let head = message_head(channel);
        let tok = *b"67e55044-10b1-426f-9247-bb680e5fe0c8";
        let msg = |payload: &[u8]| {
            let mut m = head.clone();
            m.extend_from_slice(format!("{}\r\n", payload.len()).as_bytes());
            m.extend_from_slice(payload);
            m.extend_from_slice(b"\r\n");
            m
        };
        let mut stream = b"*3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:expired\r\n:1\r\n".to_vec();
        stream.extend(msg(&[b"p:".as_slice(), &tok].concat()));
        stream.extend(msg(b"short"));
        stream.extend(b"*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$1\r\nx\r\n");
        stream.extend(msg(&[b"a:b:c:".as_slice(), &tok].concat()));
        let want = vec![None, Some(tok), None, None, Some(tok)];
        // Fed a byte at a time, and all at once: the same messages.
        for step in [1, stream.len()] {
            let (mut buf, mut got) = (BytesMut::new(), Vec::new());
            for piece in stream.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(m) = next_message(&mut buf, &head).unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, want, "read {step} bytes at a time");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn steal_is_counted_between_the_samples_around_a_span() {
        // (µs on CLOCK_MONOTONIC, steal ticks): 10 ticks booked at 300 ms.
        let s = [(100_000, 5), (200_000, 5), (300_000, 15), (400_000, 15)];
        assert_eq!(stolen_ticks(&s, 150_000, 250_000), 10, "from the sample before to the one after");
        assert_eq!(stolen_ticks(&s, 300_000, 400_000), 0);
        assert_eq!(stolen_ticks(&s, 0, u64::MAX), 10, "the ends stand in where there is no sample");
        assert_eq!(stolen_ticks(&s, 100_000, 200_000), 0);
        assert_eq!(stolen_ticks(&[], 0, 1), 0);
    }

    #[test]
    fn the_worst_unheld_reply_is_on_the_histograms_scale() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for lat in [90, 800, 6_210, 8_578] {
            h.record(lat).unwrap();
        }
        let slow = [(1_000_000, 6_210), (2_000_000, 8_578)];
        // No steal anywhere: the worst reply is unheld, and reads as `max`.
        let calm = [(0, 5), (3_000_000, 5)];
        let r = StealReport::judge(vec![0, 1], &calm, 10, &slow, 800, &h, 250_000);
        assert_eq!((r.max_unstolen_us, r.over_5ms, r.over_5ms_stolen), (h.max(), 2, 0));
        assert_eq!(r.over_5ms_at, [(750, 6_210), (1_750, 8_578)], "sent times from the run's start");
        assert_eq!(slow_times(&r.over_5ms_at), "0.750:6.21 1.750:8.58");
        assert_eq!(h.max(), 8_583, "the histogram rounds its max up (runs 6 and 7 printed both)");
        // A tick booked during the worst: the one before is the worst unheld.
        let held = [(0, 5), (2_005_000, 5), (2_010_000, 6), (3_000_000, 6)];
        let r = StealReport::judge(vec![0, 1], &held, 10, &slow, 800, &h, 0);
        assert_eq!((r.max_unstolen_us, r.over_5ms_stolen, r.total_ms), (h.highest_equivalent(6_210), 1, 10));
        assert!(r.max_unstolen_us < h.max());
    }

    #[test]
    fn gen_plan_never_asks_one_gen_for_more_than_tokend_allows() {
        // `--spread-ms 0 --tokens 200000`: all due in one ms, two GENs.
        assert_eq!(gen_plan(200_000, 0), [(100_000, 0), (100_000, 0)]);
        assert_eq!(gen_plan(250_000, 1), [(100_000, 0), (100_000, 0), (50_000, 0)]);
        // Spread over a second: 200 per ms, offsets 0..999.
        let p = gen_plan(200_000, 1000);
        assert_eq!(p.len(), 1000);
        assert!(p.iter().all(|&(k, _)| k == 200));
        assert_eq!((p[0].1, p[999].1), (0, 999));
        for (n, spread) in [(1, 0), (7, 3), (1_000_001, 1000), (300_000, 2)] {
            let p = gen_plan(n, spread);
            assert_eq!(p.iter().map(|&(k, _)| k).sum::<u64>(), n);
            assert!(p.iter().all(|&(k, off)| k <= GEN_CHUNK && off < spread.max(1)));
        }
    }
}

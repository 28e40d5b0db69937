//! The command core: one [`execute`] for every front end.
//!
//! A front end (the RESP connection today; the HTTP API and cluster routing
//! call the same function) turns what it received into a request — the
//! command's arguments, name first — and calls [`execute`] with the server's
//! [`Ctx`] and the client's [`Session`]. What comes back is an [`Outcome`]:
//! a protocol-neutral [`Reply`] (or a request to block, or to close), which
//! the front end encodes its own way. Commands never see a socket.
//!
//! Every command is declared once, in [`table`]: name, arity, typed flags,
//! key positions, documentation and handler. The checks run in Redis's
//! order (`processCommand`): unknown command or subcommand, arity,
//! authentication, loading, the RESP2 pub/sub context, MULTI queueing, then
//! durability admission for writes, then the handler. Each command lives in
//! its own file with its parser and tests; connection commands that only
//! touch the session (PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET) share
//! `conn.rs`.

pub mod client;
pub mod cluster;
pub mod command;
pub mod conn;
pub mod keyspace;
pub mod monitor;
pub mod multi;
pub mod ops;
pub mod pubsub;
pub mod server_info;
pub mod session;
pub mod spec;
pub mod stats;
pub mod table;
pub mod token_acquire;
pub mod token_del;
pub mod token_delexpired;
pub mod token_gen;
pub mod token_import;
pub mod token_info;
pub mod token_keepalive;
pub mod token_stats;
pub mod token_unblock;

pub use monitor::Monitors;
pub use session::{ClientMeta, ClientNames, Clients, Session, Stats};

use crate::durable::Durability;
use crate::parse::{Parse, ParseError};
use crate::pubsub::PubSub;
use crate::reply::{Protocol, Reply};
use crate::store::{
    Acquired, ExpiryTotals, NotLocked, PoolStats, PoolUsage, Store, TokenError, TokenInfo, Totals, Txn, Waiting,
};
use crate::token::{self, TokenId};
use bytes::Bytes;
use spec::{CommandSpec, Flags};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What commands may touch: the store, pub/sub, durability, the settings
/// they read, the client registry and the counters. One per server.
pub struct Ctx {
    pub store: Store,
    pub pubsub: Arc<PubSub>,
    /// Set once a backing Redis is attached: writes are admitted by it and
    /// (in sync mode) their replies wait for it.
    durability: OnceLock<Arc<dyn Durability>>,
    /// Cluster mode's slot map (set once, at start-up, in cluster mode).
    cluster: OnceLock<Arc<crate::cluster::Cluster>>,
    pub settings: Settings,
    pub clients: Clients,
    pub stats: Stats,
    pub started: Instant,
    /// The dataset is still being loaded from the backing Redis: commands
    /// without the `loading` flag answer `-LOADING`.
    pub loading: AtomicBool,
    /// Clients in MONITOR mode.
    pub monitors: Monitors,
    /// Per-command counters and latency, and the slow log.
    pub cmdstats: stats::CommandStats,
    /// Cancelled by `SHUTDOWN`: the server stops as on SIGTERM.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Polling or napping before the runtime's thread sleeps
    /// (`--idle-poll-us`, `--idle-nap-us`).
    pub idle_poll: Arc<crate::idle_poll::IdlePoll>,
    /// `client-output-buffer-limit`'s replica class: tokend has no
    /// replicas, so it limits nothing; kept so that CONFIG GET shows what
    /// CONFIG SET set.
    pub replica_output_limit: std::sync::Mutex<crate::pubsub::QueueLimit>,
}

/// The settings commands read (the server's configuration, flattened).
#[derive(Clone, Debug)]
pub struct Settings {
    pub requirepass: Option<String>,
    /// Largest COUNT of TOKEN.GEN.
    pub max_gen_count: u64,
    pub maxclients: usize,
    /// The port actually listened on.
    pub port: u16,
    pub shards: usize,
    /// `sync`/`async` with a backing Redis, None without.
    pub durability: Option<&'static str>,
    /// Every setting by its name, as `CONFIG GET` shows it.
    pub params: Vec<(&'static str, String)>,
    /// FLUSHDB/FLUSHALL are allowed (`--enable-flush yes`).
    pub enable_flush: bool,
    /// `--slowlog-log-slower-than` (µs; negative: off).
    pub slowlog_log_slower_than: i64,
    pub slowlog_max_len: usize,
    /// `--latency-monitor-threshold` (ms; 0: off).
    pub latency_monitor_threshold: u64,
    /// `--idle-poll-us` (0: off).
    pub idle_poll_us: u64,
    /// The poller state the runtime's park hooks were given, if they were.
    pub idle_hooks: Option<Arc<crate::idle_poll::IdlePoll>>,
    /// `--rt-priority` (0: off).
    pub rt_priority: u8,
    /// `client-output-buffer-limit`'s replica class, as configured.
    pub replica_output_limit: crate::pubsub::QueueLimit,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            requirepass: None,
            max_gen_count: 0,
            maxclients: 0,
            port: 0,
            shards: 0,
            durability: None,
            params: Vec::new(),
            enable_flush: false,
            slowlog_log_slower_than: stats::DEFAULT_SLOWLOG_SLOWER_THAN_US,
            slowlog_max_len: stats::DEFAULT_SLOWLOG_MAX_LEN,
            latency_monitor_threshold: crate::store::DEFAULT_LATENCY_THRESHOLD_MS,
            idle_poll_us: crate::idle_poll::DEFAULT_LIMIT_US,
            idle_hooks: None,
            rt_priority: 0,
            replica_output_limit: crate::pubsub::QueueLimit::REPLICA,
        }
    }
}

impl Ctx {
    /// A context around a store, with nothing loaded and no backing store.
    pub fn new(store: Store, pubsub: Arc<PubSub>, settings: Settings) -> Ctx {
        store.latency().set_threshold_ms(settings.latency_monitor_threshold);
        let idle_poll = settings
            .idle_hooks
            .clone()
            // Without the park hooks nothing naps: CONFIG GET says 0.
            .unwrap_or_else(|| Arc::new(crate::idle_poll::IdlePoll::new(settings.idle_poll_us, 0)));
        Ctx {
            replica_output_limit: std::sync::Mutex::new(settings.replica_output_limit),
            cmdstats: stats::CommandStats::new(settings.slowlog_log_slower_than, settings.slowlog_max_len),
            store,
            pubsub,
            durability: OnceLock::new(),
            cluster: OnceLock::new(),
            settings,
            clients: Clients::default(),
            stats: Stats::default(),
            started: Instant::now(),
            loading: AtomicBool::new(false),
            monitors: Monitors::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            idle_poll,
        }
    }

    /// The durability hook, if replies must wait for the backing store.
    pub fn durability(&self) -> Option<&dyn Durability> {
        self.durability.get().map(|d| &**d)
    }

    /// Attaches the backing store's durability hook (once, before writes
    /// are admitted; a second call is ignored).
    pub fn set_durability(&self, d: Arc<dyn Durability>) {
        let _ = self.durability.set(d);
    }

    /// Cluster mode's slot map, if the server runs in cluster mode.
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.cluster.get().map(|c| &**c)
    }

    /// The slot map, shared (for the tasks that maintain it).
    pub fn cluster_arc(&self) -> Option<Arc<crate::cluster::Cluster>> {
        self.cluster.get().cloned()
    }

    /// Turns cluster mode on (once, before clients are served).
    pub fn set_cluster(&self, c: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(c);
    }

    /// True while the dataset is being loaded.
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }
}

/// What running a command asks the front end to do.
pub enum Outcome {
    Reply(Reply),
    /// Several replies (SUBSCRIBE to several channels).
    Replies(Vec<Reply>),
    /// Wait for a token (blocked ACQUIRE); `None` timeout = forever.
    Block {
        waiting: Waiting,
        timeout: Option<Duration>,
    },
    /// Send the reply, then close (QUIT).
    Close(Reply),
    /// Close without a reply (SHUTDOWN).
    Hangup,
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Self {
        Outcome::Reply(r)
    }
}

/// The store as a command sees it: directly (each operation atomic on its
/// own) or through a transaction's locked shards (EXEC).
pub enum Tokens<'a, 't> {
    Direct(&'a Store),
    Txn(&'t mut Txn<'a>),
}

impl From<NotLocked> for ParseError {
    fn from(_: NotLocked) -> Self {
        ParseError::Other("ERR the transaction touched a pool it did not declare".into())
    }
}

impl Tokens<'_, '_> {
    /// True inside EXEC (blocking options do not block there).
    pub fn in_txn(&self) -> bool {
        matches!(self, Tokens::Txn(_))
    }

    pub fn gen_tokens(
        &mut self,
        pool: &[u8],
        lifetime_ms: Option<u64>,
        count: u64,
    ) -> Result<Result<Vec<TokenId>, TokenError>, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.gen_tokens(pool, lifetime_ms, count)),
            Tokens::Txn(t) => t.gen_tokens(pool, lifetime_ms, count),
        }
    }

    pub fn import(
        &mut self,
        pool: &[u8],
        id: TokenId,
        life_ms: u64,
        lease_ms: Option<u64>,
    ) -> Result<Result<bool, TokenError>, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.import(pool, id, life_ms, lease_ms)),
            Tokens::Txn(t) => t.import(pool, id, life_ms, lease_ms),
        }
    }

    pub fn acquire(&mut self, pool: &[u8], lease_ms: Option<u64>, block: bool) -> Result<Acquired, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.acquire(pool, lease_ms, block)),
            Tokens::Txn(t) => t.acquire(pool, lease_ms),
        }
    }

    pub fn keepalive(&mut self, pool: &[u8], id: TokenId) -> Result<Result<u64, TokenError>, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.keepalive(pool, id)),
            Tokens::Txn(t) => t.keepalive(pool, id),
        }
    }

    pub fn unblock(&mut self, pool: &[u8], id: TokenId) -> Result<Result<(), TokenError>, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.unblock(pool, id)),
            Tokens::Txn(t) => t.unblock(pool, id),
        }
    }

    pub fn del(&mut self, pool: &[u8], id: TokenId) -> Result<bool, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.del(pool, id)),
            Tokens::Txn(t) => t.del(pool, id),
        }
    }

    pub fn del_expired(&mut self, pool: &[u8]) -> Result<u64, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.del_expired(pool)),
            Tokens::Txn(t) => t.del_expired(pool),
        }
    }

    pub fn info(&mut self, pool: &[u8], id: TokenId) -> Result<Result<TokenInfo, TokenError>, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.info(pool, id)),
            Tokens::Txn(t) => t.info(pool, id),
        }
    }

    pub fn stats(&mut self, pool: &[u8]) -> Result<PoolStats, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.stats(pool)),
            Tokens::Txn(t) => t.stats(pool),
        }
    }

    pub fn totals(&self) -> Result<Totals, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.totals()),
            Tokens::Txn(t) => t.totals(),
        }
    }

    /// Pending timers over the whole store.
    pub fn pending_timers(&self) -> Result<usize, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.pending_timers()),
            Tokens::Txn(t) => t.pending_timers(),
        }
    }

    /// Expiry totals since the start (the lateness from every shard).
    pub fn expiry_totals(&self) -> Result<ExpiryTotals, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.expiry_totals()),
            Tokens::Txn(t) => t.expiry_totals(),
        }
    }

    pub fn drop_pool(&mut self, pool: &[u8]) -> Result<bool, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.drop_pool(pool)),
            Tokens::Txn(t) => t.drop_pool(pool),
        }
    }

    pub fn exists(&mut self, pool: &[u8]) -> Result<bool, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.exists(pool)),
            Tokens::Txn(t) => t.exists(pool),
        }
    }

    pub fn memory_usage(&mut self, pool: &[u8]) -> Result<Option<PoolUsage>, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.memory_usage(pool)),
            Tokens::Txn(t) => t.memory_usage(pool),
        }
    }

    pub fn keys(&self, pattern: &[u8]) -> Result<Vec<Bytes>, NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.keys(pattern)),
            Tokens::Txn(t) => t.keys(pattern),
        }
    }

    /// SCAN from `cursor`; inside a transaction the whole store at once.
    pub fn scan(&self, cursor: u64, count: usize, pattern: Option<&[u8]>) -> Result<(u64, Vec<Bytes>), NotLocked> {
        match self {
            Tokens::Direct(s) => Ok(s.scan(cursor, count, pattern)),
            Tokens::Txn(t) => Ok((0, t.scan(pattern)?)),
        }
    }

    pub fn flush(&mut self) -> u64 {
        match self {
            Tokens::Direct(s) => s.flush(),
            Tokens::Txn(t) => t.flush(),
        }
    }
}

/// One command's call: the server, the client, and the store as it sees it.
pub struct Call<'a, 't> {
    pub ctx: &'a Ctx,
    pub session: &'t mut Session,
    pub tokens: Tokens<'a, 't>,
}

/// Runs one request (`args`: the command's name, then its arguments).
pub fn execute(ctx: &Ctx, session: &mut Session, mut args: Vec<Bytes>) -> Outcome {
    execute_in(ctx, session, &mut args)
}

/// [`execute`] on arguments the caller keeps: a queued transaction takes
/// them (leaving `args` empty); otherwise they are left as they were, for
/// the caller to clear and fill again (see `codec::decode_request_into`).
pub fn execute_in(ctx: &Ctx, session: &mut Session, args: &mut Vec<Bytes>) -> Outcome {
    // Cluster mode: a handover waits for commands between their routing
    // check and the end of their run (see `Cluster::barrier`).
    let _gate = ctx.cluster().map(|c| c.enter());
    let (spec, id) = match admit(ctx, session, args) {
        Ok(found) => found,
        Err((id, r)) => {
            if let Some(id) = id {
                ctx.cmdstats.reject(id);
            }
            // A command refused before it ran makes a transaction fail
            // (EXECABORT), as in Redis.
            if let Some(m) = &mut session.multi {
                m.aborted = true;
            }
            return r.into();
        }
    };
    if let Some(m) = &mut session.multi
        && !spec.flags.has(Flags::TXN_CONTROL)
    {
        return multi::queue(ctx, m, spec, id, std::mem::take(args)).into();
    }
    // Commands that change the store (the table's `write` flag, as Redis
    // marks them): the backing store must be able to take them, and in
    // sync durability mode their replies wait until it has the change.
    if spec.flags.has(Flags::WRITE) {
        if let Some(d) = ctx.durability()
            && let Err(msg) = d.admit()
        {
            ctx.cmdstats.reject(id);
            return Reply::Error(msg).into();
        }
        session.wrote = true;
    }
    session.note_command(spec.name);
    run(spec, id, args, &mut Call { ctx, session, tokens: Tokens::Direct(&ctx.store) })
}

/// The checks a request passes before it runs or is queued, in Redis's
/// order: unknown command (or subcommand), arity, authentication, loading,
/// the RESP2 pub/sub context.
/// A refusal names the command's number in [`table::flat`] when the
/// command is known (it counts as a rejected call of it).
fn admit(
    ctx: &Ctx,
    session: &Session,
    args: &[Bytes],
) -> Result<(&'static CommandSpec, usize), (Option<usize>, Reply)> {
    let (spec, id) = table::resolve_id(args)?;
    let refuse = |r: Reply| Err((Some(id), r));
    if !session.authenticated && !spec.flags.has(Flags::NO_AUTH) {
        return refuse(Reply::error("NOAUTH Authentication required."));
    }
    if !spec.flags.has(Flags::LOADING) && ctx.is_loading() {
        return refuse(Reply::error("LOADING tokend is loading the dataset in memory"));
    }
    if session.proto == Protocol::Resp2 && session.subscriptions() > 0 && !spec.flags.has(Flags::SUBSCRIBED_OK) {
        return refuse(Reply::error(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        )));
    }
    if let Some(cl) = ctx.cluster()
        && !spec.key_specs.is_empty()
        && let Err(e) = route(cl, spec, args)
    {
        return refuse(Reply::Error(e));
    }
    Ok((spec, id))
}

/// Cluster mode: the pools a command names must share one hash slot, and
/// this node must serve it (else `-CROSSSLOT`, `-MOVED`, `-TRYAGAIN` or
/// `-CLUSTERDOWN`, as a Redis Cluster node answers).
fn route(cl: &crate::cluster::Cluster, spec: &CommandSpec, args: &[Bytes]) -> Result<(), String> {
    let keys = spec.keys(args);
    let Some(first) = keys.first() else { return Ok(()) };
    let slot = crate::cluster::keyslot(first);
    if keys[1..].iter().any(|k| crate::cluster::keyslot(k) != slot) {
        return Err("CROSSSLOT Keys in request don't hash to the same slot".into());
    }
    match cl.route(slot).error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs a resolved command: its handler gets the arguments after the name
/// (and after the subcommand, for a subcommand).
///
/// Every call is counted and timed (`INFO commandstats`, `/metrics`); a slow
/// one goes to the slow log and the latency monitor, as in Redis's `call()`.
fn run(spec: &CommandSpec, id: usize, args: &[Bytes], call: &mut Call) -> Outcome {
    let Some(handler) = spec.run else {
        return Reply::error(format!("ERR command '{}' is not implemented", spec.name)).into();
    };
    let mut p = Parse::after(args, spec.depth());
    let started = stats::tick();
    let out = handler(&mut p, call).unwrap_or_else(|e| Reply::error(e.to_string()).into());
    let nsec = stats::nanos_between(started, stats::tick());
    let usec = nsec / 1000;
    let ctx = call.ctx;
    let failed = matches!(&out, Outcome::Reply(Reply::Error(_)) | Outcome::Close(Reply::Error(_)));
    ctx.cmdstats.record(id, nsec, failed);
    let event = if spec.flags.has(Flags::FAST) { "fast-command" } else { "command" };
    ctx.store.latency().record(event, usec / 1000);
    let slow = !spec.flags.has(Flags::SKIP_SLOWLOG) && ctx.cmdstats.slowlog.wants(usec);
    // MONITOR shows what ran, as Redis does (after it ran; admin commands
    // are not shown).
    let shown = ctx.monitors.active() && !spec.flags.has(Flags::ADMIN);
    if slow || shown {
        if slow {
            let meta = &call.session.meta;
            let shown_args: Vec<Bytes> = args
                .iter()
                .enumerate()
                .map(|(i, a)| if monitor::redacted(args, i) { Bytes::from_static(b"(redacted)") } else { a.clone() })
                .collect();
            let name = meta.name.lock().map(|n| n.name.clone()).unwrap_or_default();
            ctx.cmdstats.slowlog.push(&shown_args, usec, meta.addr.to_string(), name);
        }
        if shown {
            ctx.monitors.feed(call.session.meta.addr, args);
        }
    }
    out
}

/// Lets the store start loading what the batch's requests on existing
/// tokens will touch, before any of them runs (see [`Store::prefetch`]).
/// Runs of requests on the same pool go to the store together. Only a hint:
/// requests are still checked and run one by one, in order, by [`execute`].
pub fn prefetch(ctx: &Ctx, batch: &[Vec<Bytes>]) {
    let mut i = 0;
    while i < batch.len() {
        let Some(pool) = names_token(&batch[i]) else {
            i += 1;
            continue;
        };
        let run = batch[i..].iter().take_while(|a| names_token(a) == Some(pool)).count();
        ctx.store.prefetch(pool, batch[i..i + run].iter().filter_map(|a| token::parse(&a[2])));
        i += run;
    }
}

/// Before a request runs (every front end awaits this, then calls
/// [`execute`]): while some shard has a backlog of due expiries, or due
/// expiries its driver has not queued yet, waits until the pools the
/// request names have none, helping to fire them (see
/// [`crate::store::Store::ready`]); for an EXEC, the pools of the queued
/// requests and the watched ones; for a request that locks every shard
/// (FLUSHALL, FLUSHDB, an EXEC of one that reads the whole store), every
/// shard. What is left for the request itself is what fell due since:
/// it fires that under its locks.
///
/// `due`: [`crate::store::Store::maybe_due`], read by the caller once for
/// a batch of requests it read together (the clock read in it costs 36 ns
/// on the benchmark VM, 6% of a pipelined GEN's server time). A deadline
/// that comes while the batch runs is met as before it, by the request's
/// own firing under its lock. One atomic load when `due` is false (a
/// backlog may have formed meanwhile). `session`: the client's, where it
/// has one (RESP).
pub async fn ready(ctx: &Ctx, session: Option<&Session>, args: &[Bytes], due: bool) {
    if !due && !ctx.store.behind() {
        return;
    }
    let Some(base) = args.first().and_then(|n| table::lookup_bytes(n)) else { return };
    let spec = match args.get(1) {
        Some(sub) if !base.subcommands.is_empty() => base.subcommand(sub).unwrap_or(base),
        _ => base,
    };
    if !spec.arity_ok(args.len()) {
        return;
    }
    if let Some(session) = session
        && let Some(m) = &session.multi
    {
        // Inside MULTI only EXEC runs anything now.
        if spec.name != "exec" || m.aborted {
            return;
        }
        if m.queued.iter().any(|(s, _, _)| s.flags.has(Flags::WHOLE_STORE)) {
            return ctx.store.ready_all().await;
        }
        let queued = m.queued.iter().flat_map(|(s, _, a)| s.keys(a));
        for pool in queued.chain(session.watched.iter().map(|(p, _)| p)) {
            ctx.store.ready(pool).await;
        }
        return;
    }
    // Run as a transaction over every shard (see `Store::flush`).
    if spec.flags.has(Flags::WHOLE_STORE) && spec.flags.has(Flags::WRITE) {
        return ctx.store.ready_all().await;
    }
    for pool in spec.keys(args) {
        ctx.store.ready(pool).await;
    }
}

/// The pool of a `NAME pool token` request on an existing token (the
/// table's `NAMES_TOKEN` flag).
fn names_token(args: &[Bytes]) -> Option<&Bytes> {
    let [name, pool, _] = args else { return None };
    table::lookup_bytes(name).filter(|s| s.flags.has(Flags::NAMES_TOKEN)).map(|_| pool)
}

/// Reads the pool argument: any non-empty string.
pub(crate) fn pool_arg<'a>(p: &mut Parse<'a>) -> Result<&'a [u8], ParseError> {
    let pool = p.next_slice()?;
    if pool.is_empty() {
        return Err(ParseError::Other("ERR invalid pool name: it must not be empty".into()));
    }
    Ok(pool)
}

/// `pool` and nothing else.
pub(crate) fn pool_only<'a>(p: &mut Parse<'a>) -> Result<&'a [u8], ParseError> {
    let pool = pool_arg(p)?;
    p.finish()?;
    Ok(pool)
}

/// The MULTI check of `NAME pool`.
fn check_pool(p: &mut Parse, _: &Ctx) -> Result<(), ParseError> {
    pool_only(p).map(drop)
}

/// The MULTI check of `NAME pool token`.
fn check_pool_token(p: &mut Parse, _: &Ctx) -> Result<(), ParseError> {
    PoolToken::parse(p).map(drop)
}

/// `pool token` arguments. A token that is not a canonical UUID cannot be one
/// the server made: `token` is None and the command answers as for an
/// unknown token.
#[derive(Debug)]
pub struct PoolToken<'a> {
    pub pool: &'a [u8],
    pub token: Option<TokenId>,
}

impl<'a> PoolToken<'a> {
    pub fn parse(p: &mut Parse<'a>) -> Result<PoolToken<'a>, ParseError> {
        let pool = pool_arg(p)?;
        let t = p.next_slice()?;
        p.finish()?;
        Ok(PoolToken { pool, token: token::parse(t) })
    }
}

/// The reply for a token the pool never had.
pub(crate) fn no_token() -> Reply {
    Reply::error(TokenError::NoToken.to_string())
}

/// A store result as a reply: `ok` on success, the error's text otherwise.
pub(crate) fn reply_or_error<T>(r: Result<T, TokenError>, ok: impl FnOnce(T) -> Reply) -> Reply {
    match r {
        Ok(v) => ok(v),
        Err(e) => Reply::error(e.to_string()),
    }
}

/// Longest accepted duration: 100 years in ms. Far beyond any real lease,
/// and it keeps every `now + duration` far from u64 overflow.
pub(crate) const MAX_DURATION_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The `EX seconds | PX milliseconds` option, with SET's rules: repeated
/// EX (or PX) — the last one wins; EX with PX — syntax error; a value that is
/// not an integer — "not an integer"; zero, negative or absurd — "invalid
/// expire time in '<cmd>' command".
pub(crate) struct TtlOption {
    cmd: &'static str,
    unit: Option<u8>,
    ms: Option<u64>,
}

impl TtlOption {
    pub fn new(cmd: &'static str) -> TtlOption {
        TtlOption { cmd, unit: None, ms: None }
    }

    /// If `opt` is EX or PX, reads its value and returns true.
    pub fn try_parse(&mut self, opt: &str, p: &mut Parse) -> Result<bool, ParseError> {
        let (unit, scale) = match opt {
            "EX" => (b'e', 1000),
            "PX" => (b'p', 1),
            _ => return Ok(false),
        };
        if self.unit.is_some_and(|u| u != unit) {
            return Err(ParseError::Syntax);
        }
        let v = p.next_i64()?;
        let invalid = || ParseError::Other(format!("ERR invalid expire time in '{}' command", self.cmd));
        let ms = v.checked_mul(scale).filter(|&ms| ms > 0 && ms <= MAX_DURATION_MS).ok_or_else(invalid)?;
        self.unit = Some(unit);
        self.ms = Some(ms as u64);
        Ok(true)
    }

    /// The duration in ms, if given.
    pub fn value(&self) -> Option<u64> {
        self.ms
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cursor over string arguments (tests: the arguments are leaked, so
    /// that the cursor can be returned).
    pub fn args(a: &[&str]) -> Parse<'static> {
        Parse::new(Vec::leak(a.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect()))
    }

    /// A server of two shards that fire 16 expiries per lock hold (so that
    /// 1,000 due make a backlog), on tokio's clock, with FLUSHALL allowed;
    /// no expiry drivers.
    fn two_small_batch_shards() -> Ctx {
        use crate::clock::Clock;
        use crate::notify::{EventClasses, Notifier};
        use crate::store::StoreConfig;
        let pubsub = Arc::new(PubSub::default());
        let notifier = Arc::new(Notifier::new(EventClasses::parse("").unwrap(), pubsub.clone()));
        let config = StoreConfig { shards: 2, expiry_batch: 16, ..StoreConfig::default() };
        let store = Store::new(config, Clock::starting_at(1_700_000_000_000), notifier);
        Ctx::new(store, pubsub, Settings { shards: 2, enable_flush: true, ..Settings::default() })
    }

    /// Before an EXEC, and before a FLUSHALL, the front end fires the
    /// backlog of due expiries the request would meet, a batch at a time,
    /// yielding to the runtime in between: the request does not fire it all
    /// under its locks, holding its thread and every connection on it.
    #[tokio::test(start_paused = true)]
    async fn ready_fires_the_backlog_an_exec_or_a_flushall_meets_batch_by_batch() {
        use std::future::Future;
        let ctx = two_small_batch_shards();
        let _drivers = crate::store::expiry::spawn(&ctx.store);
        let addr = "127.0.0.1:1".parse().unwrap();
        let argv = |a: &[&str]| -> Vec<Bytes> { a.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect() };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for (queued, request) in [(Some("TOKEN.ACQUIRE big"), "EXEC"), (Some("INFO"), "EXEC"), (None, "FLUSHALL")] {
            // 1,000 tokens due together, then the driver's first batch:
            // the rest is a backlog.
            ctx.store.gen_tokens(b"big", Some(100), 1_000).unwrap();
            tokio::time::advance(Duration::from_millis(100)).await;
            tokio::task::yield_now().await;
            assert!(ctx.store.behind(), "{request}: a backlog");
            let mut session = Session::new(&ctx, addr, addr);
            if let Some(q) = queued {
                execute(&ctx, &mut session, argv(&["MULTI"]));
                execute(&ctx, &mut session, argv(&q.split(' ').collect::<Vec<_>>()));
            }
            let args = argv(&[request]);
            {
                let mut waiting = std::pin::pin!(ready(&ctx, Some(&session), &args, ctx.store.maybe_due()));
                assert!(waiting.as_mut().poll(&mut cx).is_pending(), "{request} after {queued:?}: it yields");
                waiting.await;
            }
            assert!(!ctx.store.behind(), "{request} after {queued:?}: nothing left");
            assert_eq!(ctx.store.live_tokens(), 0);
            session.close(&ctx);
        }
    }

    /// A request that comes the instant its pool's expiries fall due,
    /// before the driver has looked (here there is no driver at all), does
    /// not fire them under its lock either: the front end queues them and
    /// fires them a batch at a time, yielding in between, and the request
    /// then sees none of the expired tokens.
    #[tokio::test(start_paused = true)]
    async fn ready_fires_what_fell_due_before_the_driver_looked_batch_by_batch() {
        use std::future::Future;
        let ctx = two_small_batch_shards();
        let addr = "127.0.0.1:1".parse().unwrap();
        let argv = |a: &[&str]| -> Vec<Bytes> { a.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect() };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let cases = [
            (None, "TOKEN.ACQUIRE big"),
            (Some("TOKEN.ACQUIRE big"), "EXEC"),
            (Some("INFO"), "EXEC"),
            (None, "FLUSHALL"),
        ];
        for (queued, request) in cases {
            ctx.store.gen_tokens(b"big", Some(100), 1_000).unwrap();
            assert!(!ctx.store.maybe_due(), "{request}: nothing due yet");
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(!ctx.store.behind(), "{request}: nothing queued");
            assert!(ctx.store.maybe_due(), "{request}: 1,000 due");
            let mut session = Session::new(&ctx, addr, addr);
            if let Some(q) = queued {
                execute(&ctx, &mut session, argv(&["MULTI"]));
                execute(&ctx, &mut session, argv(&q.split(' ').collect::<Vec<_>>()));
            }
            let args = argv(&request.split(' ').collect::<Vec<_>>());
            {
                let mut waiting = std::pin::pin!(ready(&ctx, Some(&session), &args, ctx.store.maybe_due()));
                assert!(waiting.as_mut().poll(&mut cx).is_pending(), "{request} after {queued:?}: it yields");
                waiting.await;
            }
            assert!(!ctx.store.behind(), "{request} after {queued:?}: nothing left");
            assert_eq!(ctx.store.live_tokens(), 0, "{request} after {queued:?}");
            let reply = match execute(&ctx, &mut session, args) {
                Outcome::Reply(r) => r,
                _ => panic!("{request} after {queued:?}: not a reply"),
            };
            if queued == Some("TOKEN.ACQUIRE big") || request.starts_with("TOKEN.") {
                let nil = if queued.is_some() { Reply::Array(vec![Reply::Null]) } else { Reply::Null };
                assert_eq!(reply, nil, "{request} after {queued:?}: no expired token");
            }
            session.close(&ctx);
            // The drivers' late look: nothing is due (what they look at
            // next is when the expired tokens are forgotten).
            for idx in 0..2 {
                assert!(ctx.store.tick(idx) > ctx.store.clock().now_ms(), "{request} after {queued:?}");
            }
        }
    }

    #[test]
    fn unknown_command_wording_matches_redis() {
        let r = crate::testing::run(&["foo", "a", "b"]);
        assert_eq!(r, Reply::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' "));
        let r = crate::testing::run(&["foo"]);
        assert_eq!(r, Reply::error("ERR unknown command 'foo', with args beginning with: "));
    }

    #[test]
    fn ttl_bounds() {
        let mut t = TtlOption::new("x");
        assert!(t.try_parse("EX", &mut args(&["9223372036854775807"])).is_err());
        assert!(t.try_parse("PX", &mut args(&["1"])).unwrap());
        assert_eq!(t.value(), Some(1));
        assert!(!t.try_parse("COUNT", &mut args(&["1"])).unwrap());
    }

    #[test]
    fn every_command_in_the_table_has_a_handler() {
        for c in table::all() {
            for c in std::iter::once(c).chain(c.subcommands) {
                // A container is resolved to its subcommands, except COMMAND
                // (which runs alone too).
                assert!(c.run.is_some() || !c.subcommands.is_empty(), "{} has no handler", c.name);
            }
        }
    }
}

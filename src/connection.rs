//! The RESP front end: one client connection — read requests, run them
//! through the command core ([`cmd::execute`]), write replies.
//!
//! Pipelining: every complete request in the read buffer is executed and its
//! reply appended to one write buffer, which is written once per batch (not
//! once per reply). A blocked `TOKEN.ACQUIRE` flushes what came before it and
//! then waits, while still watching the socket so that a client that goes
//! away releases its place in the queue (and any token handed to it).

use crate::cmd::{self, Ctx, Outcome, Session};
use crate::codec::{Limits, decode_request_into};
use crate::durable::Fate;
use crate::reply::Reply;
use crate::store::{Handed, Store, Waiting};
use crate::token::{self, TokenId};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Flush the write buffer early when a pipeline's replies exceed this
/// (bounds memory for a client that pipelines a million commands).
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// The most written in one go before yielding to the other clients (a
/// quarter of a millisecond of copying).
const WRITE_PIECE: usize = 256 * 1024;

/// Initial read buffer; grows as needed for large requests.
const READ_BUFFER: usize = 16 * 1024;

/// Tokens of a GEN's reply formatted between two yields (about half a
/// millisecond, with the reply's fresh pages faulted in).
const TOKENS_PIECE: usize = 8 * 1024;

/// Requests decoded ahead of running them, so that the store can start
/// loading what they will touch (a pipeline of 16 fits in one look).
const LOOKAHEAD: usize = 32;

/// Argument vectors longer than this are not kept between batches.
const KEEP_ARGS: usize = 16;

/// Buffers that grew past this are released once empty.
const KEEP_BUFFER: usize = 256 * 1024;

/// A piece of pub/sub messages at least this big is written from where it
/// is rather than copied into the write buffer (a burst of expiries is
/// hundreds of kilobytes, which would also make the buffer outgrow
/// [`KEEP_BUFFER`], be released and grow again at every burst).
const DIRECT_WRITE: usize = 32 * 1024;

/// What a connection needs besides the command context.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub limits: Limits,
    /// Close a client idle this long (subscribers and blocked clients are
    /// never closed for idleness, as in Redis).
    pub idle_timeout: Option<Duration>,
}

/// What a client blocked in ACQUIRE gets when the server stops: no token
/// was assigned to it, and it should retry elsewhere or later.
const SHUTDOWN_REPLY: &str = "SHUTDOWN tokend is shutting down; no token was assigned";

/// A connection and its buffers, over plain TCP or TLS.
pub struct Connection<S> {
    stream: S,
    ctx: Arc<Ctx>,
    opts: Options,
    session: Session,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Decoded requests waiting to run (kept to reuse its allocation).
    batch: Vec<Vec<Bytes>>,
    /// Replies in `wbuf` to writes whose changes must be durable before
    /// they are sent (sync mode): their byte range and journal unit.
    pending: Vec<(usize, usize, u64)>,
    /// The TCP socket under the stream (-1: not known), for the nap's look
    /// at which clients sent again (`idle_poll`).
    fd: i32,
}

/// Writes `buf` a piece at a time, yielding in between: a single 4 MB write
/// is one syscall of several milliseconds (loopback delivers inside it)
/// that no other client of this thread can interrupt. Redis bounds a
/// client's writes per event loop turn the same way
/// (NET_MAX_WRITES_PER_EVENT, 64 KB).
async fn write_in_pieces<S: AsyncWrite + Unpin>(stream: &mut S, buf: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let end = buf.len().min(at + WRITE_PIECE);
        stream.write_all(&buf[at..end]).await?;
        at = end;
        if at < buf.len() {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, addr: SocketAddr, laddr: SocketAddr, ctx: Arc<Ctx>, opts: Options) -> Connection<S> {
        Connection {
            stream,
            session: Session::new(&ctx, addr, laddr),
            ctx,
            opts,
            rbuf: BytesMut::with_capacity(READ_BUFFER),
            wbuf: BytesMut::with_capacity(READ_BUFFER),
            batch: Vec::with_capacity(LOOKAHEAD),
            pending: Vec::new(),
            fd: -1,
        }
    }

    /// Names the TCP socket under the stream.
    pub fn with_fd(mut self, fd: i32) -> Connection<S> {
        self.fd = fd;
        self
    }

    /// Serves the client until it leaves, errs, or the server stops.
    pub async fn run(mut self, stop: &CancellationToken) -> std::io::Result<()> {
        let r = self.serve(stop).await;
        self.session.close(&self.ctx);
        r
    }

    async fn serve(&mut self, stop: &CancellationToken) -> std::io::Result<()> {
        let idle = self.opts.idle_timeout;
        loop {
            if !self.process_buffer(stop).await? {
                return Ok(());
            }
            // Wait for input, a pub/sub message, or shutdown.
            // Subscribers are never closed for idleness (as in Redis).
            let idle = if self.session.subscriptions() > 0 || self.session.monitor_rx.is_some() { None } else { idle };
            let read = async {
                match idle {
                    Some(d) => tokio::time::timeout(d, self.stream.read_buf(&mut self.rbuf)).await.ok(),
                    None => Some(self.stream.read_buf(&mut self.rbuf).await),
                }
            };
            let msg = async {
                match self.session.pubsub_rx.as_mut() {
                    Some(rx) => rx.recv_bytes().await,
                    None => std::future::pending().await,
                }
            };
            let line = async {
                match self.session.monitor_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                l = line => match l {
                    Some(l) => {
                        self.push_monitor_line(&l);
                        while let Some(l) = self.session.monitor_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
                            self.push_monitor_line(&l);
                            if self.wbuf.len() > WRITE_HIGH_WATER {
                                break;
                            }
                        }
                        self.flush_and_yield().await?;
                    }
                    // Dropped for not reading its lines.
                    None => return Ok(()),
                },
                r = read => match r {
                    None => return Ok(()), // idle timeout
                    Some(Ok(0)) => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                },
                m = msg => match m {
                    Some(m) => {
                        let mut taken = m.len();
                        self.push_messages(m).await?;
                        while taken <= WRITE_HIGH_WATER
                            && let Some(m) = self.session.pubsub_rx.as_mut().and_then(|rx| rx.try_recv_bytes())
                        {
                            taken += m.len();
                            self.push_messages(m).await?;
                        }
                        self.flush().await?;
                        if taken > WRITE_HIGH_WATER {
                            tokio::task::yield_now().await;
                        }
                    }
                    // The broker dropped us: our queue overflowed.
                    None => return Ok(()),
                },
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Runs every complete request in the read buffer and writes the
    /// replies. Returns false when the connection must close.
    ///
    /// Requests are decoded [`LOOKAHEAD`] at a time and shown to the store
    /// before the first of them runs (see [`cmd::prefetch`]); then they run
    /// one by one, in order, exactly as if decoded one at a time.
    async fn process_buffer(&mut self, stop: &CancellationToken) -> std::io::Result<bool> {
        let mut keep_open = true;
        // The argument vectors are kept from one batch to the next (see
        // `decode_request_into`); `n` of them hold this batch's requests.
        let mut batch = std::mem::take(&mut self.batch);
        'read: loop {
            let mut bad = None;
            let mut n = 0;
            while n < LOOKAHEAD {
                if batch.len() == n {
                    batch.push(Vec::new());
                }
                batch[n].clear();
                match decode_request_into(&mut self.rbuf, &self.opts.limits, &mut batch[n]) {
                    Ok(true) if batch[n].is_empty() => {}
                    Ok(true) => n += 1,
                    Ok(false) => break,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            if n == 0 && bad.is_none() {
                break;
            }
            if self.session.authenticated {
                cmd::prefetch(&self.ctx, &batch[..n]);
            }
            let due = self.ctx.store.maybe_due();
            for args in &mut batch[..n] {
                // Messages published before this command ran go out before
                // its reply, as Redis's output buffer orders them (an
                // UNSUBSCRIBE's confirmation comes after every message of
                // that channel).
                if self.session.pubsub_rx.is_some() {
                    self.drain_pubsub().await?;
                }
                self.ctx.stats.commands_processed.fetch_add(1, Ordering::Relaxed);
                let start = self.wbuf.len();
                cmd::ready(&self.ctx, Some(&self.session), args, due).await;
                // Last before the command: the stock waits for it in a
                // thread-local, and no other task may run on this thread
                // in between.
                let request = (self.session.authenticated && self.session.multi.is_none())
                    .then(|| cmd::token_gen::stock_request(&self.ctx, args))
                    .flatten();
                let stocked = match request {
                    Some((pool, count)) => self.ctx.store.stock_gen(pool, count).await,
                    None => false,
                };
                Store::take_appended();
                let outcome = cmd::execute_in(&self.ctx, &mut self.session, args);
                // Its arguments hold the read buffer's memory: let go now.
                args.clear();
                if stocked {
                    Store::discard_stock();
                }
                match outcome {
                    Outcome::Reply(Reply::Tokens(ids)) if ids.len() > TOKENS_PIECE => {
                        let appended = Store::take_appended();
                        self.encode_tokens(&ids).await;
                        self.note_write(start, appended);
                    }
                    Outcome::Reply(r) => {
                        r.encode(self.session.proto, &mut self.wbuf);
                        self.note_write(start, Store::take_appended());
                    }
                    Outcome::Replies(rs) => {
                        for r in rs {
                            r.encode(self.session.proto, &mut self.wbuf);
                        }
                    }
                    Outcome::Close(r) => {
                        r.encode(self.session.proto, &mut self.wbuf);
                        keep_open = false;
                        break 'read;
                    }
                    Outcome::Hangup => {
                        keep_open = false;
                        break 'read;
                    }
                    Outcome::Block { waiting, timeout } => {
                        self.session.wrote = false;
                        self.commit().await?;
                        match self.block(waiting, timeout, stop).await? {
                            Some((r, unit)) => {
                                let start = self.wbuf.len();
                                r.encode(self.session.proto, &mut self.wbuf);
                                // A served waiter's token was assigned by
                                // another command's unit.
                                self.note_write(start, unit);
                            }
                            None => return Ok(false),
                        }
                        if stop.is_cancelled() {
                            keep_open = false;
                            break 'read;
                        }
                    }
                }
                if self.wbuf.len() > WRITE_HIGH_WATER {
                    self.commit().await?;
                }
            }
            if let Some(e) = bad {
                Reply::Error(e.0).encode(self.session.proto, &mut self.wbuf);
                keep_open = false;
                break;
            }
        }
        // What a request that was not run (the connection closes) holds,
        // and vectors grown by a long request, go.
        for args in &mut batch {
            args.clear();
            if args.capacity() > KEEP_ARGS {
                *args = Vec::new();
            }
        }
        self.batch = batch;
        self.ctx.idle_poll.touch(self.fd);
        self.session
            .meta
            .last_active_ms
            .store(self.session.meta.created.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.commit().await?;
        if !keep_open {
            let _ = self.stream.shutdown().await;
        }
        Ok(keep_open)
    }

    /// Encodes a big array of tokens (a GEN's) a piece at a time, letting
    /// the runtime serve other connections between pieces: 100k tokens
    /// are milliseconds of formatting.
    async fn encode_tokens(&mut self, ids: &[TokenId]) {
        // The GEN itself ran just before, with no yield since.
        tokio::task::yield_now().await;
        // Room for all of it first: growing piece by piece would copy it
        // over and over.
        self.wbuf.reserve(crate::reply::tokens_len(ids.len()));
        crate::reply::put_array_header(&mut self.wbuf, ids.len());
        for piece in ids.chunks(TOKENS_PIECE) {
            crate::reply::put_tokens(&mut self.wbuf, piece);
            tokio::task::yield_now().await;
        }
    }

    /// The reply just encoded from `start` is a write's: if its changes went
    /// to journal unit `seq`, it may only be sent once that is durable.
    fn note_write(&mut self, start: usize, seq: Option<u64>) {
        if std::mem::take(&mut self.session.wrote)
            && let Some(seq) = seq
        {
            self.pending.push((start, self.wbuf.len(), seq));
        }
    }

    /// Writes the pending replies. In sync mode the replies to writes wait
    /// until their changes are durable (up to `--persist-timeout`); a write
    /// whose change is not confirmed in time, or was refused by the backing
    /// Redis, gets its own error in place of its reply. Every other reply is
    /// left as it is: each request has exactly its own reply, in order.
    async fn commit(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            if let Some(d) = self.ctx.durability()
                && d.waits()
            {
                let upto = self.pending.iter().map(|p| p.2).max().unwrap_or(0);
                d.wait(upto).await;
                let mut out: Option<BytesMut> = None;
                let mut at = 0;
                for &(start, end, seq) in &self.pending {
                    let (Fate::Pending(msg) | Fate::Refused(msg)) = d.fate(seq) else { continue };
                    let o = out.get_or_insert_with(|| BytesMut::with_capacity(self.wbuf.len()));
                    o.extend_from_slice(&self.wbuf[at..start]);
                    Reply::Error(msg).encode(self.session.proto, o);
                    at = end;
                }
                if let Some(mut o) = out {
                    o.extend_from_slice(&self.wbuf[at..]);
                    self.wbuf = o;
                }
            }
            self.pending.clear();
        }
        self.flush().await
    }

    /// Takes a piece of pub/sub messages: a small one into the write
    /// buffer, a big one straight to the socket (after what the buffer
    /// holds).
    async fn push_messages(&mut self, m: Bytes) -> std::io::Result<()> {
        if m.len() < DIRECT_WRITE {
            self.wbuf.extend_from_slice(&m);
            return Ok(());
        }
        self.flush().await?;
        write_in_pieces(&mut self.stream, &m).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            write_in_pieces(&mut self.stream, &self.wbuf).await?;
            self.wbuf.clear();
            // One huge reply (GEN COUNT 100000 is ~4 MB) must not pin its
            // buffer for the connection's lifetime.
            if self.wbuf.capacity() > KEEP_BUFFER {
                self.wbuf = BytesMut::with_capacity(READ_BUFFER);
            }
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_BUFFER {
            self.rbuf = BytesMut::with_capacity(READ_BUFFER);
        }
        Ok(())
    }

    /// Waits for a blocked ACQUIRE. Returns its reply (and the journal unit
    /// that assigned the token it hands over), or None if the client
    /// disconnected meanwhile; when the server stops, the reply is
    /// `-SHUTDOWN` (no token). A token handed over in the instant the client
    /// went away or the server stopped goes back to the pool (`waiting` is a
    /// drop guard).
    async fn block(
        &mut self,
        mut waiting: Waiting,
        timeout: Option<Duration>,
        stop: &CancellationToken,
    ) -> std::io::Result<Option<(Reply, Option<u64>)>> {
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let waiting_pool = waiting.pool().clone();
        loop {
            let sleep = crate::clock::sleep_until_opt(deadline);
            // A RESP3 client may be subscribed while it waits: its messages
            // are delivered as they come, as Redis does.
            let msg = async {
                match self.session.pubsub_rx.as_mut() {
                    Some(rx) => rx.recv_bytes().await,
                    None => std::future::pending().await,
                }
            };
            // Biased, socket first: a client that already hung up must not be
            // handed a token it will never read.
            tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.rbuf) => match r {
                    // Later pipelined commands wait in the buffer until we
                    // are served; a closed socket gives the place up.
                    Ok(n) if n > 0 && self.rbuf.len() <= self.opts.limits.max_bulk => {}
                    _ => return Ok(None),
                },
                _ = stop.cancelled() => {
                    drop(waiting);
                    return Ok(Some((Reply::error(SHUTDOWN_REPLY), None)));
                }
                t = waiting.recv() => {
                    return Ok(Some(match t {
                        Handed::Token(t) => {
                            self.session.wrote = true;
                            (Reply::bulk(token::format(t)), waiting.assigned_in())
                        }
                        Handed::Gone => (Reply::Null, None),
                        Handed::Moved => (moved(&self.ctx, &waiting_pool), None),
                    }));
                }
                m = msg => match m {
                    Some(m) => {
                        self.wbuf.extend_from_slice(&m);
                        self.flush().await?;
                    }
                    // Evicted for not reading: the connection ends.
                    None => return Ok(None),
                },
                _ = sleep => {
                    return Ok(Some(match waiting.cancel() {
                        Some((t, unit)) => {
                            self.session.wrote = true;
                            (Reply::bulk(token::format(t)), unit)
                        }
                        None => (Reply::Null, None),
                    }));
                }
            }
        }
    }

    /// Writes a batch of pushed messages (or MONITOR lines), then lets the
    /// runtime run other tasks when the batch was a full one. A socket
    /// that takes every write at once never makes the write wait, and the
    /// queue's `try_recv` spends none of tokio's budget: a subscriber of a
    /// burst of a million expiries would otherwise keep its thread (the
    /// only one on a one-core server) for tens of milliseconds at a time.
    async fn flush_and_yield(&mut self) -> std::io::Result<()> {
        let full = self.wbuf.len() > WRITE_HIGH_WATER;
        self.flush().await?;
        if full {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Moves every queued pub/sub message into the write buffer (written in
    /// pieces if there are many).
    async fn drain_pubsub(&mut self) -> std::io::Result<()> {
        while let Some(m) = self.session.pubsub_rx.as_mut().and_then(|rx| rx.try_recv_bytes()) {
            self.wbuf.extend_from_slice(&m);
            if self.wbuf.len() > WRITE_HIGH_WATER {
                self.commit().await?;
            }
        }
        Ok(())
    }

    /// Appends a MONITOR line (a status reply, as Redis sends it).
    fn push_monitor_line(&mut self, line: &[u8]) {
        self.wbuf.extend_from_slice(b"+");
        self.wbuf.extend_from_slice(line);
        self.wbuf.extend_from_slice(b"\r\n");
    }
}

/// The reply of a blocked ACQUIRE whose pool's hash slot left this node:
/// where the slot went (`-MOVED`), or `-TRYAGAIN` while it is on its way.
fn moved(ctx: &Ctx, pool: &[u8]) -> Reply {
    let route = ctx.cluster().map(|cl| cl.redirect(crate::cluster::keyslot(pool)));
    match route.and_then(|r| r.error()) {
        Some(e) => Reply::Error(e),
        None => Reply::error(crate::cluster::Route::TryAgain.error().unwrap_or_default()),
    }
}

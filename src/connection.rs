//! One client connection: read requests, run them, write replies.
//!
//! Pipelining: every complete request in the read buffer is executed and its
//! reply appended to one write buffer, which is written once per batch (not
//! once per reply). A blocked `TOKEN.ACQUIRE` flushes what came before it and
//! then waits, while still watching the socket so that a client that goes
//! away releases its place in the queue (and any token handed to it).

use crate::cmd::{self, Outcome};
use crate::codec::decode_request;
use crate::pubsub::PubMsg;
use crate::reply::{Protocol, Reply};
use crate::server::{ClientMeta, ClientNames, Shared};
use crate::store::Waiting;
use crate::token;
use bytes::{Bytes, BytesMut};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

/// Flush the write buffer early when a pipeline's replies exceed this
/// (bounds memory for a client that pipelines a million commands).
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Initial read buffer; grows as needed for large requests.
const READ_BUFFER: usize = 16 * 1024;

/// Requests decoded ahead of running them, so that the store can start
/// loading what they will touch (a pipeline of 16 fits in one look).
const LOOKAHEAD: usize = 32;

/// Buffers that grew past this are released once empty.
const KEEP_BUFFER: usize = 256 * 1024;

/// Per-connection state that commands can see and change.
pub struct Session {
    pub id: u64,
    pub proto: Protocol,
    pub authenticated: bool,
    pub meta: Arc<ClientMeta>,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    pub pubsub_rx: Option<mpsc::Receiver<PubMsg>>,
    /// A command in the current batch changed state (sync durability waits).
    pub wrote: bool,
    /// The last command's name (mirrored into `meta` only when it changes).
    pub last_cmd: &'static str,
}

impl Session {
    /// A fresh client session registered with the server (a connection, or
    /// a harness such as the fuzz target that drives commands directly).
    pub fn new(shared: &Arc<Shared>, addr: SocketAddr, laddr: SocketAddr) -> Session {
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        let meta = Arc::new(ClientMeta {
            id,
            addr,
            laddr,
            created: Instant::now(),
            last_active_ms: Default::default(),
            name: std::sync::Mutex::new(ClientNames { resp: 2, ..Default::default() }),
        });
        shared.clients.insert(id, meta.clone());
        Session {
            id,
            proto: Protocol::Resp2,
            authenticated: shared.config.requirepass.is_none(),
            meta,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            pubsub_rx: None,
            wrote: false,
            last_cmd: "",
        }
    }

    /// Unregisters the session (its subscriptions and its CLIENT LIST entry).
    pub fn close(&mut self, shared: &Shared) {
        shared.clients.remove(&self.id);
        if self.pubsub_rx.take().is_some() {
            shared.pubsub.detach(self.id);
        }
    }

    /// Subscriptions of both kinds.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Keeps `CLIENT LIST`'s view current.
    pub fn update_meta(&self, f: impl FnOnce(&mut ClientNames)) {
        let mut g = self.meta.name.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
    }
}

/// A connection and its buffers, over plain TCP or TLS.
pub struct Connection<S> {
    stream: S,
    shared: Arc<Shared>,
    session: Session,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Decoded requests waiting to run (kept to reuse its allocation).
    batch: Vec<Vec<Bytes>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, addr: SocketAddr, laddr: SocketAddr, shared: Arc<Shared>) -> Connection<S> {
        Connection {
            stream,
            session: Session::new(&shared, addr, laddr),
            shared,
            rbuf: BytesMut::with_capacity(READ_BUFFER),
            wbuf: BytesMut::with_capacity(READ_BUFFER),
            batch: Vec::with_capacity(LOOKAHEAD),
        }
    }

    /// Serves the client until it leaves, errs, or the server stops.
    pub async fn run(mut self, stop: &mut broadcast::Receiver<()>) -> std::io::Result<()> {
        let r = self.serve(stop).await;
        self.session.close(&self.shared);
        r
    }

    async fn serve(&mut self, stop: &mut broadcast::Receiver<()>) -> std::io::Result<()> {
        let idle = match self.shared.config.timeout {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        loop {
            if !self.process_buffer(stop).await? {
                return Ok(());
            }
            // Wait for input, a pub/sub message, or shutdown.
            // Subscribers are never closed for idleness (as in Redis).
            let idle = if self.session.subscriptions() > 0 { None } else { idle };
            let read = async {
                match idle {
                    Some(d) => tokio::time::timeout(d, self.stream.read_buf(&mut self.rbuf)).await.ok(),
                    None => Some(self.stream.read_buf(&mut self.rbuf).await),
                }
            };
            let msg = async {
                match self.session.pubsub_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = read => match r {
                    None => return Ok(()), // idle timeout
                    Some(Ok(0)) => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                },
                m = msg => match m {
                    Some(m) => {
                        self.push_message(m);
                        while let Some(m) = self.session.pubsub_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
                            self.push_message(m);
                            if self.wbuf.len() > WRITE_HIGH_WATER {
                                break;
                            }
                        }
                        self.flush().await?;
                    }
                    // The broker dropped us: our queue overflowed.
                    None => return Ok(()),
                },
                _ = stop.recv() => return Ok(()),
            }
        }
    }

    /// Runs every complete request in the read buffer and writes the
    /// replies. Returns false when the connection must close.
    ///
    /// Requests are decoded [`LOOKAHEAD`] at a time and shown to the store
    /// before the first of them runs (see [`cmd::prefetch`]); then they run
    /// one by one, in order, exactly as if decoded one at a time.
    async fn process_buffer(&mut self, stop: &mut broadcast::Receiver<()>) -> std::io::Result<bool> {
        let mut keep_open = true;
        let mut batch = std::mem::take(&mut self.batch);
        'read: loop {
            let mut bad = None;
            while batch.len() < LOOKAHEAD {
                match decode_request(&mut self.rbuf, &self.shared.limits) {
                    Ok(Some(args)) if args.is_empty() => {}
                    Ok(Some(args)) => batch.push(args),
                    Ok(None) => break,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            if batch.is_empty() && bad.is_none() {
                break;
            }
            if self.session.authenticated {
                cmd::prefetch(&self.shared, &batch);
            }
            for args in batch.drain(..) {
                self.shared.stats.commands_processed.fetch_add(1, Ordering::Relaxed);
                match cmd::execute(&mut self.session, &self.shared, args) {
                    Outcome::Reply(r) => r.encode(self.session.proto, &mut self.wbuf),
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
                    Outcome::Block { waiting, timeout } => {
                        self.commit().await?;
                        match self.block(waiting, timeout, stop).await? {
                            Some(r) => r.encode(self.session.proto, &mut self.wbuf),
                            None => return Ok(false),
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
        batch.clear();
        self.batch = batch;
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

    /// Writes the pending replies, after waiting for durability if a command
    /// in the batch changed state and the server runs in sync mode.
    async fn commit(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.session.wrote)
            && let Some(sp) = self.shared.sync_point()
            && let Err(msg) = sp.wait().await
        {
            // The changes are queued and will still be written; the client
            // is told its reply could not be confirmed in time.
            self.wbuf.clear();
            Reply::Error(msg).encode(self.session.proto, &mut self.wbuf);
        }
        self.flush().await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
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

    /// Waits for a blocked ACQUIRE. Returns its reply, or None if the client
    /// disconnected (or the server is stopping) meanwhile; either way a token
    /// handed over in that instant goes back to the pool.
    async fn block(
        &mut self,
        mut waiting: Waiting,
        timeout: Option<Duration>,
        stop: &mut broadcast::Receiver<()>,
    ) -> std::io::Result<Option<Reply>> {
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        loop {
            let sleep = crate::clock::sleep_until_opt(deadline);
            // Biased, socket first: a client that already hung up must not be
            // handed a token it will never read.
            tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.rbuf) => match r {
                    // Later pipelined commands wait in the buffer until we
                    // are served; a closed socket gives the place up.
                    Ok(n) if n > 0 && self.rbuf.len() <= self.shared.limits.max_bulk => {}
                    _ => {
                        waiting.release();
                        return Ok(None);
                    }
                },
                _ = stop.recv() => {
                    waiting.release();
                    return Ok(None);
                }
                t = waiting.recv() => {
                    self.session.wrote = true;
                    return Ok(Some(match t {
                        Some(t) => Reply::bulk(token::format(t)),
                        None => Reply::Null,
                    }));
                }
                _ = sleep => {
                    return Ok(Some(match waiting.cancel() {
                        Some(t) => {
                            self.session.wrote = true;
                            Reply::bulk(token::format(t))
                        }
                        None => Reply::Null,
                    }));
                }
            }
        }
    }

    /// Encodes a pub/sub message as Redis does for each protocol.
    fn push_message(&mut self, m: PubMsg) {
        let r = match m {
            PubMsg::Message { channel, payload } => {
                Reply::Push(vec![Reply::bulk_static("message"), Reply::Bulk(channel), Reply::Bulk(payload)])
            }
            PubMsg::PMessage { pattern, channel, payload } => Reply::Push(vec![
                Reply::bulk_static("pmessage"),
                Reply::Bulk(pattern),
                Reply::Bulk(channel),
                Reply::Bulk(payload),
            ]),
        };
        r.encode(self.session.proto, &mut self.wbuf);
    }
}

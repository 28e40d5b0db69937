//! Per-client state that commands see and change (not the connection: a
//! session has no socket, so the HTTP API and tests drive commands the
//! same way), the registry `CLIENT LIST` reads, and the server's counters.

use super::Ctx;
use super::spec::CommandSpec;
use crate::reply::Protocol;
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// What `CLIENT LIST` shows about a client. Shared between its session
/// (which updates it) and the registry.
#[derive(Debug)]
pub struct ClientMeta {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    /// Milliseconds since `created` of the last command.
    pub last_active_ms: AtomicU64,
    pub name: std::sync::Mutex<ClientNames>,
}

/// Names a client gave itself.
#[derive(Debug, Default, Clone)]
pub struct ClientNames {
    pub name: String,
    pub lib_name: String,
    pub lib_ver: String,
    pub resp: u8,
    pub sub: usize,
    pub psub: usize,
    pub multi: Option<usize>,
    pub last_cmd: String,
}

/// Every client of the server.
#[derive(Default)]
pub struct Clients {
    map: DashMap<u64, Arc<ClientMeta>>,
    next_id: AtomicU64,
}

impl Clients {
    /// The number of clients.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True without clients.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every client, by id.
    pub fn snapshot(&self) -> Vec<Arc<ClientMeta>> {
        let mut v: Vec<_> = self.map.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|m| m.id);
        v
    }
}

/// Server-wide counters, totals since the start (Prometheus counters read
/// them, and a counter never goes back). `INFO stats` shows them since the
/// last `CONFIG RESETSTAT` ([`Stats::since_reset`]).
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// What the three read at the last `CONFIG RESETSTAT`.
    base: std::sync::Mutex<StatCounts>,
}

/// The values of [`Stats`]' counters at one time, or their growth since.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatCounts {
    pub connections_received: u64,
    pub commands_processed: u64,
    pub rejected_connections: u64,
}

impl Stats {
    fn now(&self) -> StatCounts {
        StatCounts {
            connections_received: self.connections_received.load(Ordering::Relaxed),
            commands_processed: self.commands_processed.load(Ordering::Relaxed),
            rejected_connections: self.rejected_connections.load(Ordering::Relaxed),
        }
    }

    /// `CONFIG RESETSTAT`: INFO counts from zero again, as Redis's do; the
    /// counters themselves go on.
    pub fn reset(&self) {
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = self.now();
    }

    /// The counters' growth since the last `CONFIG RESETSTAT` (INFO stats).
    pub fn since_reset(&self) -> StatCounts {
        let base = *self.base.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now();
        StatCounts {
            connections_received: now.connections_received.saturating_sub(base.connections_received),
            commands_processed: now.commands_processed.saturating_sub(base.commands_processed),
            rejected_connections: now.rejected_connections.saturating_sub(base.rejected_connections),
        }
    }
}

/// A transaction being queued (between MULTI and EXEC).
#[derive(Default)]
pub struct Multi {
    /// The queued requests, checked, with their commands.
    pub queued: Vec<(&'static CommandSpec, usize, Vec<Bytes>)>,
    /// A request failed to queue: EXEC answers `-EXECABORT`.
    pub aborted: bool,
}

/// One client's state.
pub struct Session {
    pub id: u64,
    pub proto: Protocol,
    pub authenticated: bool,
    pub meta: Arc<ClientMeta>,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    pub pubsub_rx: Option<crate::pubsub::Inbox>,
    /// MONITOR lines, once the client asked for them.
    pub monitor_rx: Option<mpsc::Receiver<Bytes>>,
    /// A command in the current batch changed state (sync durability waits).
    pub wrote: bool,
    /// The last command's name (mirrored into `meta` only when it changes).
    pub last_cmd: &'static str,
    /// Between MULTI and EXEC.
    pub multi: Option<Multi>,
    /// Pools this client WATCHes, with the version each had then.
    pub watched: Vec<(Bytes, u64)>,
}

impl Session {
    /// A fresh client session registered with the server (a connection, an
    /// HTTP request, or a harness such as the fuzz target).
    pub fn new(ctx: &Ctx, addr: SocketAddr, laddr: SocketAddr) -> Session {
        let id = ctx.clients.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let meta = Arc::new(ClientMeta {
            id,
            addr,
            laddr,
            created: Instant::now(),
            last_active_ms: Default::default(),
            name: std::sync::Mutex::new(ClientNames { resp: 2, ..Default::default() }),
        });
        ctx.clients.map.insert(id, meta.clone());
        Session {
            id,
            proto: Protocol::Resp2,
            authenticated: ctx.settings.requirepass.is_none(),
            meta,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            pubsub_rx: None,
            monitor_rx: None,
            wrote: false,
            last_cmd: "",
            multi: None,
            watched: Vec::new(),
        }
    }

    /// Unregisters the session (its subscriptions, its watches and its
    /// CLIENT LIST entry).
    pub fn close(&mut self, ctx: &Ctx) {
        ctx.clients.map.remove(&self.id);
        if self.pubsub_rx.take().is_some() {
            ctx.pubsub.detach(self.id);
        }
        if self.monitor_rx.take().is_some() {
            ctx.monitors.detach(self.id);
        }
        self.unwatch_all(ctx);
    }

    /// Forgets every WATCH of this client.
    pub fn unwatch_all(&mut self, ctx: &Ctx) {
        for (pool, _) in self.watched.drain(..) {
            ctx.store.unwatch(&pool);
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

    /// Records the command about to run, for CLIENT LIST's `cmd=` (the
    /// shared copy is updated only when it changes).
    pub fn note_command(&mut self, name: &'static str) {
        if !std::ptr::eq(self.last_cmd, name) {
            self.last_cmd = name;
            self.update_meta(|m| m.last_cmd = name.to_string());
        }
    }
}

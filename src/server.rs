//! The TCP server: accepts connections, caps their number, and shuts down
//! gracefully.
//!
//! Shutdown: the future passed to [`run`] resolving (SIGINT/SIGTERM in the
//! binary) closes the listener, tells every connection to stop through a
//! broadcast channel (each finishes the request it is on and flushes its
//! replies), waits for them, and finally flushes the backing store.

use crate::clock::Clock;
use crate::codec::Limits;
use crate::config::Config;
use crate::connection::Connection;
use crate::notify::Notifier;
use crate::persist::{self, Backing};
use crate::pubsub::PubSub;
use crate::store::{Store, expiry};
use dashmap::DashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};

/// What `CLIENT LIST` shows about a connection. Shared between the
/// connection (which updates it) and the registry.
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
    pub last_cmd: String,
}

/// Server-wide counters for `INFO stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub connected: AtomicUsize,
}

/// Everything a connection shares with the rest of the server.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub pubsub: Arc<PubSub>,
    pub clients: DashMap<u64, Arc<ClientMeta>>,
    pub stats: Stats,
    pub started: Instant,
    pub next_client_id: AtomicU64,
    pub limits: Limits,
    pub port: u16,
    /// Waits for durability of changes (set when a backing Redis is used in
    /// sync mode).
    pub durability: std::sync::RwLock<Option<Arc<dyn SyncPoint>>>,
}

/// A place to wait until everything queued so far is durable.
pub trait SyncPoint: Send + Sync {
    /// Whether a write may run now (`Err` is a `-TRYAGAIN …` reply); checked
    /// before the write changes anything.
    fn admit(&self) -> Result<(), String>;
    /// Resolves `Ok` when every change queued before the call is durable;
    /// `Err(msg)` (a `-TRYAGAIN …` reply) after the persist timeout.
    fn wait(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

impl Shared {
    /// The sync point, if replies must wait for durability.
    pub fn sync_point(&self) -> Option<Arc<dyn SyncPoint>> {
        self.durability.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A server ready to run: the store exists (and may be loaded from the
/// backing Redis) before any client is accepted.
pub struct Server {
    pub shared: Arc<Shared>,
    listener: TcpListener,
    _expiry: expiry::ExpiryDrivers,
    backing: Option<Arc<Backing>>,
}

impl Server {
    /// Builds the store around a bound listener. With a backing Redis, loads
    /// every pool from it first (clients are not served until that is done),
    /// then attaches it; then starts the expiry drivers, whose first run fires
    /// whatever fell due while the server was down.
    pub async fn new(listener: TcpListener, config: Config) -> std::io::Result<Server> {
        let pubsub = Arc::new(PubSub::default());
        let notifier = Arc::new(Notifier::new(config.notify_keyspace_events, pubsub.clone()));
        let store = Store::new(config.store_config(), Clock::new(), notifier.clone());
        let port = listener.local_addr()?.port();
        let limits = Limits { max_bulk: config.proto_max_bulk_len, ..Limits::default() };
        let mut backing = None;
        if let Some(url) = &config.redis {
            let mut con = persist::connect(url).await.map_err(std::io::Error::other)?;
            let items = persist::recover(&mut con, &config.redis_prefix)
                .await
                .map_err(|e| std::io::Error::other(format!("cannot load from the backing Redis: {e}")))?;
            store.restore(items);
            let b = Backing::start(con, &config);
            store.set_journal(b.clone());
            notifier.set_sink(b.clone());
            backing = Some(b);
        }
        let expiry = expiry::spawn(&store);
        let shared = Arc::new(Shared {
            config,
            store,
            pubsub,
            clients: DashMap::new(),
            stats: Stats::default(),
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            limits,
            port,
            durability: std::sync::RwLock::new(backing.clone().map(|b| b as Arc<dyn SyncPoint>)),
        });
        Ok(Server { shared, listener, _expiry: expiry, backing })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn run(self, shutdown: impl Future) {
        let (notify_shutdown, _) = broadcast::channel::<()>(1);
        // Every connection holds a clone; when all are dropped, all are done.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let shared = self.shared.clone();
        tokio::select! {
            _ = accept_loop(&self.listener, &shared, &notify_shutdown, &done_tx) => {}
            _ = shutdown => {
                tracing::info!("shutting down");
            }
        }
        drop(self.listener);
        let _ = notify_shutdown.send(());
        drop(done_tx);
        let _ = tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await;
        if let Some(b) = &self.backing {
            if b.flush(Duration::from_secs(10)).await {
                tracing::info!("backing Redis flushed");
            } else {
                tracing::error!(backlog = b.backlog(), "could not flush the backing Redis before exit");
            }
        }
    }
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    notify_shutdown: &broadcast::Sender<()>,
    done: &mpsc::Sender<()>,
) {
    let mut backoff = Duration::from_millis(1);
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(1);
                x
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed; backing off {:?}", backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        shared.stats.connections_received.fetch_add(1, Ordering::Relaxed);
        let _ = socket.set_nodelay(true);
        if shared.stats.connected.load(Ordering::Relaxed) >= shared.config.maxclients {
            shared.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(reject(socket));
            continue;
        }
        shared.stats.connected.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let mut stop = notify_shutdown.subscribe();
        let done = done.clone();
        tokio::spawn(async move {
            let conn = Connection::new(socket, addr, shared.clone());
            if let Err(e) = conn.run(&mut stop).await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
            shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
            drop(done);
        });
    }
}

/// Answers a client over the limit the way Redis does, then closes.
async fn reject(mut socket: TcpStream) {
    let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
    let _ = socket.shutdown().await;
}

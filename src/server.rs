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
use tokio_rustls::TlsAcceptor;

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
    pub durability: Option<Arc<dyn SyncPoint>>,
}

/// A place to wait until everything queued so far is durable.
pub trait SyncPoint: Send + Sync {
    /// Whether a write may run now (`Err` is a `-TRYAGAIN …` reply); checked
    /// before the write changes anything.
    fn admit(&self) -> Result<(), String>;
    /// Resolves `Ok` when every change queued before the call is durable;
    /// `Err(msg)` (a `-TRYAGAIN …` reply) after the persist timeout.
    fn wait(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;

    /// For `INFO persistence`: changes queued and not yet acknowledged, and
    /// whether the last write to the backing store failed.
    fn status(&self) -> (usize, bool);
}

impl Shared {
    /// The sync point, if replies must wait for durability.
    pub fn sync_point(&self) -> Option<&dyn SyncPoint> {
        self.durability.as_deref()
    }
}

/// A server ready to run: the store exists (and may be loaded from the
/// backing Redis) before any client is accepted.
pub struct Server {
    pub shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
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
            let key = persist::slot_key(&mut con, &config.redis_prefix, store.slot_key())
                .await
                .map_err(|e| std::io::Error::other(format!("cannot read the slot key from the backing Redis: {e}")))?;
            store.set_slot_key(key);
            let items = persist::recover(&mut con, &config.redis_prefix)
                .await
                .map_err(|e| std::io::Error::other(format!("cannot load from the backing Redis: {e}")))?;
            store.restore(items);
            release_freed_memory();
            let b = Backing::start(con, &config);
            store.set_journal(b.clone());
            notifier.set_sink(b.clone());
            backing = Some(b);
        }
        let expiry = expiry::spawn_threads(&store)?;
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
            durability: backing.clone().map(|b| b as Arc<dyn SyncPoint>),
        });
        Ok(Server { shared, listener, tls: None, _expiry: expiry, backing })
    }

    /// Adds a TLS listener using `--tls-cert` and `--tls-key`.
    pub fn add_tls(&mut self, listener: TcpListener) -> std::io::Result<()> {
        let (Some(cert), Some(key)) = (&self.shared.config.tls_cert, &self.shared.config.tls_key) else {
            return Err(std::io::Error::other("TLS needs --tls-cert and --tls-key"));
        };
        let acceptor = crate::tls::acceptor(cert, key).map_err(std::io::Error::other)?;
        self.tls = Some((listener, acceptor));
        Ok(())
    }

    /// The TLS listener's address, if any.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
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
        let tls = async {
            match &self.tls {
                Some((l, acceptor)) => accept_loop(l, Some(acceptor), &shared, &notify_shutdown, &done_tx).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = accept_loop(&self.listener, None, &shared, &notify_shutdown, &done_tx) => {}
            _ = tls => {}
            _ = shutdown => {
                tracing::info!("shutting down");
            }
        }
        drop(self.listener);
        drop(self.tls);
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
    tls: Option<&TlsAcceptor>,
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
        if protected_mode_denies(&shared.config, addr.ip()) {
            shared.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(deny_protected(socket));
            continue;
        }
        shared.stats.connected.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let mut stop = notify_shutdown.subscribe();
        let done = done.clone();
        let tls = tls.cloned();
        tokio::spawn(async move {
            let laddr = socket.local_addr().unwrap_or(addr);
            let r = match tls {
                None => Connection::new(socket, addr, laddr, shared.clone()).run(&mut stop).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => Connection::new(stream, addr, laddr, shared.clone()).run(&mut stop).await,
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
                },
            };
            if let Err(e) = r {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
            shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
            drop(done);
        });
    }
}

/// A TLS client must finish its handshake within this time, so half-open
/// handshakes cannot hold connection slots.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Redis's protected-mode explanation, adapted to tokend's flags.
const PROTECTED_MODE_DENIED: &[u8] = b"-DENIED tokend is running in protected mode because protected mode is enabled \
and no password is set for the default user. In this mode connections are only accepted from the loopback interface. \
If you want to connect from external computers to tokend you may adopt one of the following solutions: \
1) Set a password with --requirepass (or TOKEND_REQUIREPASS) and have clients AUTH. \
2) If you are sure tokend is not reachable from untrusted networks, restart it with '--protected-mode no'. \
NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

/// Protected mode: with no password, only loopback clients are accepted.
pub fn protected_mode_denies(config: &Config, peer: std::net::IpAddr) -> bool {
    let loopback = match peer {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    };
    config.protected_mode && config.requirepass.is_none() && !loopback
}

/// Refuses a non-loopback client in protected mode, as Redis does.
async fn deny_protected(mut socket: TcpStream) {
    let _ = socket.write_all(PROTECTED_MODE_DENIED).await;
    let _ = socket.shutdown().await;
}

/// Answers a client over the limit the way Redis does, then closes.
async fn reject(mut socket: TcpStream) {
    let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
    let _ = socket.shutdown().await;
}

/// Hands memory freed after recovery back to the OS. Reading the backing
/// Redis parses whole hashes (see `persist::HGETALL_MAX`), and glibc keeps
/// what it frees in its heap: 65 MB of RSS after recovering 1M tokens.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_mode_rules() {
        let mut c = Config::default_for_tests();
        let outside: std::net::IpAddr = "203.0.113.9".parse().unwrap();
        assert!(protected_mode_denies(&c, outside));
        assert!(!protected_mode_denies(&c, "127.0.0.1".parse().unwrap()));
        assert!(!protected_mode_denies(&c, "::1".parse().unwrap()));
        assert!(!protected_mode_denies(&c, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(protected_mode_denies(&c, "::ffff:203.0.113.9".parse().unwrap()));
        c.requirepass = Some("x".into());
        assert!(!protected_mode_denies(&c, outside), "a password lifts it");
        c.requirepass = None;
        c.protected_mode = false;
        assert!(!protected_mode_denies(&c, outside), "--protected-mode no lifts it");
    }
}

//! The server: wires the store, the backing Redis and the command core
//! together, accepts connections, caps their number, and shuts down
//! gracefully.
//!
//! Start-up: the listener is bound and clients are served at once; with a
//! backing Redis the dataset loads in the background meanwhile, and every
//! command that needs it answers `-LOADING` (as Redis does while it loads),
//! with `loading:1` in `INFO persistence`.
//!
//! Shutdown: the future passed to [`Server::run`] resolving (SIGINT/SIGTERM
//! in the binary) closes the listener and cancels one token that every
//! connection watches (each finishes the request it is on, flushes its
//! replies, and answers a blocked ACQUIRE `-SHUTDOWN`); a task tracker says
//! when all are done; finally the backing store is flushed.

use crate::clock::Clock;
use crate::cluster::{Cluster, Node};
use crate::cmd::{Ctx, Settings};
use crate::codec::Limits;
use crate::config::Config;
use crate::connection::{self, Connection};
use crate::durable::Durability;
use crate::notify::Notifier;
use crate::persist::cluster::{Membership, MembershipHandle};
use crate::persist::{self, Attached, Backing, Identity};
use crate::pubsub::PubSub;
use crate::store::{Store, expiry};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A server ready to run.
pub struct Server {
    pub ctx: Arc<Ctx>,
    config: Config,
    listener: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
    /// `--metrics-addr`'s listener.
    metrics: Option<TcpListener>,
    /// `--http-addr`'s listener.
    http: Option<TcpListener>,
    /// The backing Redis, connected and owned, not loaded yet.
    backing: Option<Attached>,
    /// Set when the dataset is loaded and the expiry drivers run.
    ready: watch::Sender<bool>,
}

/// What runs once the dataset is loaded: the expiry drivers (a drop guard)
/// and the backing store's writer.
#[derive(Default)]
struct Running {
    expiry: Option<expiry::ExpiryDrivers>,
    backing: Option<(Arc<Backing>, persist::Con, Identity)>,
    /// Cluster mode's membership task (it hands the slots over at a
    /// graceful stop).
    membership: Option<MembershipHandle>,
}

/// The address a node listening on every interface announces: the local
/// end of a connection to the backing Redis, i.e. the address of the
/// interface that reaches it, which the other nodes (and, in the usual
/// network, the clients) reach this one at. Only addresses of a family
/// listened on count (`0.0.0.0` is IPv4 only). 127.0.0.1, with a warning,
/// when there is none: a Unix socket, a Redis reached over IPv6 only, or
/// none reached within the backing Redis's connect timeout (the start then
/// fails on it).
async fn outward_ip(config: &Config) -> String {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    const LOOPBACK: &str = "127.0.0.1";
    let Some(info) = config.redis.as_deref().and_then(|url| url.into_connection_info().ok()) else {
        return LOOPBACK.into();
    };
    let (host, port) = match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => (host.as_str(), *port),
        _ => return LOOPBACK.into(),
    };
    let v4_only = config.bind == "0.0.0.0";
    let deadline = tokio::time::Instant::now() + persist::CONNECT_TIMEOUT;
    loop {
        let candidates: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(all) => {
                let all: Vec<SocketAddr> = all.collect();
                let usable: Vec<SocketAddr> = all.iter().copied().filter(|a| a.is_ipv4() || !v4_only).collect();
                if usable.is_empty() && !all.is_empty() {
                    tracing::warn!(bind = %config.bind, redis = %host, announce = LOOPBACK,
                        "the backing Redis has no IPv4 address to find this host's own from: set --cluster-announce-ip");
                    return LOOPBACK.into();
                }
                usable
            }
            Err(_) => Vec::new(),
        };
        for a in candidates {
            if let Ok(Ok(s)) = tokio::time::timeout_at(deadline, TcpStream::connect(a)).await
                && let Ok(local) = s.local_addr()
            {
                return local.ip().to_canonical().to_string();
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(bind = %config.bind, redis = %host, announce = LOOPBACK,
                "cannot reach the backing Redis to find this host's own address: set --cluster-announce-ip");
            return LOOPBACK.into();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Server {
    /// Builds the store around a bound listener. With a backing Redis,
    /// connects to it and reads its slot key now (an unreachable backing
    /// Redis is a start-up error); the dataset itself is loaded by
    /// [`Server::run`] while clients are already answered.
    pub async fn new(listener: TcpListener, config: Config) -> std::io::Result<Server> {
        let pubsub = Arc::new(PubSub::default());
        pubsub.set_queue_limit(config.client_output_buffer_limit.pubsub);
        let notifier = Arc::new(Notifier::new(config.notify_keyspace_events, pubsub.clone()));
        let store = Store::new(config.store_config(), Clock::new(), notifier);
        let port = listener.local_addr()?.port();
        let mut backing = None;
        let mut cluster = None;
        if config.redis.is_some() {
            let host = match &config.cluster_announce_ip {
                Some(ip) => ip.clone(),
                None if config.bind == "0.0.0.0" || config.bind == "::" => {
                    let ip = outward_ip(&config).await;
                    if config.cluster_enabled && ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
                        tracing::warn!(announce = %ip, bind = %config.bind,
                            "announcing a loopback address: clients on other hosts cannot follow redirects to it (set --cluster-announce-ip)");
                    }
                    ip
                }
                None => config.bind.clone(),
            };
            let announced = config.cluster_announce_port.unwrap_or(port);
            let me = Identity {
                node_id: persist::new_node_id(),
                addr: format!("{host}:{announced}"),
                lease: config.cluster_node_timeout,
            };
            if config.cluster_enabled {
                let node = Node { id: me.node_id.clone(), host, port: announced };
                cluster = Some(Arc::new(Cluster::new(node)));
            }
            backing = Some(persist::attach(&config, me, &store).await.map_err(std::io::Error::other)?);
        }
        let settings = Settings {
            requirepass: config.requirepass.clone(),
            max_gen_count: config.max_gen_count,
            maxclients: config.maxclients,
            port,
            shards: config.shards as usize,
            durability: config.redis.as_ref().map(|_| config.durability.name()),
            params: config.parameters(),
            enable_flush: config.enable_flush,
            slowlog_log_slower_than: config.slowlog_log_slower_than,
            slowlog_max_len: config.slowlog_max_len,
            latency_monitor_threshold: config.latency_monitor_threshold,
            idle_poll_us: config.idle_poll_us,
            idle_hooks: config.idle_hooks.clone(),
            rt_priority: config.rt_priority,
            replica_output_limit: config.client_output_buffer_limit.replica,
        };
        let metrics = bind_optional(&config.metrics_addr, "--metrics-addr").await?;
        let http = bind_optional(&config.http_addr, "--http-addr").await?;
        let ctx = Arc::new(Ctx::new(store, pubsub, settings));
        ctx.loading.store(backing.is_some(), Ordering::Release);
        if let Some(c) = cluster {
            ctx.set_cluster(c);
        }
        let (ready, _) = watch::channel(false);
        Ok(Server { ctx, config, listener, tls: None, metrics, http, backing, ready })
    }

    /// Adds a TLS listener using `--tls-cert` and `--tls-key`.
    pub fn add_tls(&mut self, listener: TcpListener) -> std::io::Result<()> {
        let (Some(cert), Some(key)) = (&self.config.tls_cert, &self.config.tls_key) else {
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

    /// Where the HTTP API is served, if it is.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Turns true once the dataset is loaded and every command is served.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Serves until `shutdown` resolves, then stops gracefully. Fails (after
    /// stopping the same way) if the dataset cannot be loaded: serving an
    /// empty dataset would lose what the backing Redis holds.
    pub async fn run(self, shutdown: impl Future) -> Result<(), String> {
        let Server { ctx, config, listener, tls, metrics, http, backing, ready } = self;
        let running = Arc::new(Mutex::new(Running::default()));
        let addr = listener.local_addr().ok();
        // Cancelled if another tokend takes the backing Redis prefix over.
        let fenced = CancellationToken::new();
        let stop = CancellationToken::new();
        let mut loader = tokio::spawn(load(
            ctx.clone(),
            config.clone(),
            backing,
            running.clone(),
            ready,
            addr,
            Stops { fenced: fenced.clone(), stop: stop.clone() },
        ));
        let tracker = TaskTracker::new();
        let front = Front {
            ctx: ctx.clone(),
            opts: connection::Options {
                limits: Limits { max_bulk: config.proto_max_bulk_len, ..Limits::default() },
                idle_timeout: (config.timeout > 0).then(|| Duration::from_secs(config.timeout)),
            },
            permits: Arc::new(Semaphore::new(config.maxclients)),
            protected: config.protected_mode && config.requirepass.is_none(),
            stop: stop.clone(),
            tracker: tracker.clone(),
        };
        if let Some(l) = metrics {
            if let Ok(a) = l.local_addr() {
                tracing::info!(addr = %a, "serving Prometheus metrics at /metrics");
            }
            tracker.spawn(crate::metrics::serve(l, ctx.clone(), config.metrics_max_pools, stop.clone()));
        }
        if let Some(l) = http {
            if let Ok(a) = l.local_addr() {
                tracing::info!(addr = %a, pool = %config.http_pool, "serving the HTTP API (docs at /docs)");
            }
            let protected = config.protected_mode && config.requirepass.is_none();
            tracker.spawn(crate::http::serve(l, ctx.clone(), config.http_pool.clone(), protected, stop.clone()));
        }
        if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            ctx.idle_poll.starting();
            // tokend's own threads share the runtime's core only when the
            // process may use one CPU (pinned, or a one-CPU quota); with
            // more, the scheduler runs them elsewhere and polling takes
            // nothing from them.
            if std::thread::available_parallelism().is_ok_and(|n| n.get() == 1) {
                let store = ctx.store.clone();
                ctx.idle_poll.cede_while(move || store.threads_working());
            }
            let (ctx, stop) = (ctx.clone(), stop.clone());
            tracker.spawn(async move { ctx.idle_poll.run(&stop).await });
        } else if config.idle_poll_us > 0 {
            tracing::warn!("--idle-poll-us needs a single-threaded runtime (--threads 1): not polling");
        }
        tokio::pin!(shutdown);
        let mut loaded = false;
        let outcome = {
            let tls_loop = async {
                match &tls {
                    Some((l, acceptor)) => front.accept_loop(l, Some(acceptor)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(tls_loop);
            loop {
                tokio::select! {
                    _ = front.accept_loop(&listener, None) => break Ok(()),
                    _ = &mut tls_loop => break Ok(()),
                    r = &mut loader, if !loaded => match r {
                        Ok(Ok(())) => loaded = true,
                        Ok(Err(e)) => break Err(e),
                        Err(e) => break Err(format!("the loader failed: {e}")),
                    },
                    _ = &mut shutdown => {
                        tracing::info!("shutting down");
                        break Ok(());
                    }
                    _ = ctx.shutdown.cancelled() => {
                        tracing::info!("shutting down (SHUTDOWN)");
                        break Ok(());
                    }
                }
            }
        };
        // Cluster mode: hand every slot over while clients can still be
        // told where it went.
        let membership = running.lock().unwrap_or_else(|e| e.into_inner()).membership.clone();
        if let Some(m) = membership {
            m.leave().await;
        }
        drop(listener);
        drop(tls);
        loader.abort();
        stop.cancel();
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
            tracing::warn!("connections did not finish within 10 s");
        }
        let backing = running.lock().unwrap_or_else(|e| e.into_inner()).backing.clone();
        if let Some((b, con, me)) = backing {
            if b.flush(Duration::from_secs(10)).await {
                tracing::info!("backing Redis flushed");
            } else {
                tracing::error!(backlog = b.backlog(), "could not flush the backing Redis before exit");
            }
            b.release(con, &me).await;
        }
        drop(running);
        outcome
    }
}

/// Binds the listener of an optional front end (`flag`'s address), if set.
async fn bind_optional(addr: &Option<String>, flag: &str) -> std::io::Result<Option<TcpListener>> {
    let Some(a) = addr else { return Ok(None) };
    TcpListener::bind(a)
        .await
        .map(Some)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {flag} {a}: {e}")))
}

/// What the loader's tasks watch: `fenced` is cancelled if another tokend
/// takes the backing Redis prefix over; `stop` when the server stops.
struct Stops {
    fenced: CancellationToken,
    stop: CancellationToken,
}

/// Loads the dataset from the backing Redis (if any), attaches the backing
/// store, starts the expiry drivers — whose first run fires whatever fell
/// due while the server was down — and lets every command through.
async fn load(
    ctx: Arc<Ctx>,
    config: Config,
    backing: Option<Attached>,
    running: Arc<Mutex<Running>>,
    ready: watch::Sender<bool>,
    addr: Option<SocketAddr>,
    stops: Stops,
) -> Result<(), String> {
    let Stops { fenced, stop } = stops;
    let mut started = Running::default();
    let cluster = ctx.cluster_arc();
    if let Some(cluster) = cluster
        && let Some(attached) = backing
    {
        // Cluster mode: nothing is loaded up front; each node loads the
        // slots membership gives it.
        let (con, me, keys, owner) =
            (attached.con.clone(), attached.me.clone(), attached.keys.clone(), attached.owner.clone());
        let b = Backing::start(attached, &config, ctx.store.clone(), fenced, Some(cluster));
        ctx.store.set_journal(b.clone());
        ctx.store.notifier().set_sink(b.clone());
        ctx.set_durability(b.clone() as Arc<dyn Durability>);
        let url = config.redis.as_deref().unwrap_or_default();
        let tls = config.backing_tls().map_err(|e| e.to_string())?;
        let client = persist::client(url, &tls)?;
        persist::cluster::spawn_events(client, keys, me.node_id.clone(), ctx.pubsub.clone(), stop.clone());
        let m = Membership::new(b.clone(), con.clone(), ctx.store.clone(), owner, config.cluster_node_timeout)
            .ok_or("cluster mode without a slot map")?;
        started.membership = Some(persist::cluster::spawn(m, stop));
        started.backing = Some((b, con, me));
    } else if let Some(mut attached) = backing {
        let recovered = persist::recover(&mut attached.con, &attached.keys, attached.delta)
            .await
            .map_err(|e| format!("cannot load from the backing Redis: {e}"))?;
        let repack = ctx.store.restore(recovered.items);
        release_freed_memory();
        let (con, me) = (attached.con.clone(), attached.me.clone());
        let b = Backing::start(attached, &config, ctx.store.clone(), fenced, None);
        ctx.store.set_journal(b.clone());
        ctx.store.notifier().set_sink(b.clone());
        // Pools an earlier version listed only in its pool set, or whose
        // tokens are not all in slots yet: their state goes to the current
        // layout's keys, then they are listed there and the old keys go.
        b.move_pools(&ctx.store, recovered.legacy.into_iter().chain(repack));
        // Set before `loading` turns false: no write is admitted before.
        ctx.set_durability(b.clone() as Arc<dyn Durability>);
        started.backing = Some((b, con, me));
    }
    started.expiry =
        Some(expiry::spawn_threads(&ctx.store).map_err(|e| format!("cannot start the expiry threads: {e}"))?);
    *running.lock().unwrap_or_else(|e| e.into_inner()) = started;
    ctx.loading.store(false, Ordering::Release);
    let _ = ready.send(true);
    match addr {
        Some(a) => tracing::info!(addr = %a, version = env!("CARGO_PKG_VERSION"), "tokend ready to accept connections"),
        None => tracing::info!("tokend ready to accept connections"),
    }
    Ok(())
}

/// What the accept loops share.
struct Front {
    ctx: Arc<Ctx>,
    opts: connection::Options,
    /// One per connection allowed (`--maxclients`); a connection task owns
    /// its permit, so it is given back however the task ends.
    permits: Arc<Semaphore>,
    /// Protected mode is on and there is no password.
    protected: bool,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Front {
    async fn accept_loop(&self, listener: &TcpListener, tls: Option<&TlsAcceptor>) {
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
            let stats = &self.ctx.stats;
            stats.connections_received.fetch_add(1, Ordering::Relaxed);
            let _ = socket.set_nodelay(true);
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(reject(socket));
                continue;
            };
            if self.protected && !is_loopback(addr.ip()) {
                stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(deny_protected(socket));
                continue;
            }
            let (ctx, opts, stop, tls) = (self.ctx.clone(), self.opts, self.stop.clone(), tls.cloned());
            self.tracker.spawn(async move {
                let _permit = permit;
                let laddr = socket.local_addr().unwrap_or(addr);
                let fd = socket.as_raw_fd();
                let r = match tls {
                    None => Connection::new(socket, addr, laddr, ctx, opts).with_fd(fd).run(&stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                            Ok(Ok(stream)) => {
                                Connection::new(stream, addr, laddr, ctx, opts).with_fd(fd).run(&stop).await
                            }
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
                        }
                    }
                };
                if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "connection ended with an error");
                }
            });
        }
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

/// True for a loopback address (IPv4, IPv6, or IPv4-mapped IPv6).
fn is_loopback(peer: std::net::IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

/// Protected mode: with no password, only loopback clients are accepted.
pub fn protected_mode_denies(config: &Config, peer: std::net::IpAddr) -> bool {
    config.protected_mode && config.requirepass.is_none() && !is_loopback(peer)
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

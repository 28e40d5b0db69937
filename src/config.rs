//! Command-line configuration. Every flag can also be set through an
//! environment variable (`TOKEND_<FLAG>`), which is what containers use.

use crate::notify::EventClasses;
use crate::pubsub::QueueLimit;
use crate::store::StoreConfig;
use clap::{Parser, ValueEnum};
use std::time::Duration;

/// How changes reach the backing Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// A reply is sent only after the backing Redis acknowledged the change.
    Sync,
    /// Reply at once; changes are flushed within --flush-interval.
    Async,
}

impl Durability {
    /// The mode's name, as the flag takes it.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        }
    }
}

/// The log filter when none is given.
const LOG_LEVEL_DEFAULT: &str = "info";

/// Why polling (`--idle-poll-us`) is refused alongside `--rt-priority`.
pub const RT_POLL_REASON: &str = "a real-time thread that polls keeps tokend's other threads off its core";

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// tokend: a token server that speaks the Redis protocol.
///
/// Generates tokens into pools, hands out a random free one with a lease,
/// keeps it alive, takes it back, and expires what nobody keeps alive, to the
/// millisecond. Talk to it with redis-cli or any Redis client:
///
///   redis-cli -p 6380 TOKEN.GEN mypool
///   redis-cli -p 6380 TOKEN.ACQUIRE mypool PX 30000
///
/// Durations are seconds, or a number with a unit: 250ms, 30s, 5m, 1h.
///
/// To copy the old token service's tokens into a running tokend:
///
///   tokend import-seed --from redis://old-redis:6379 --pool default
///
/// (`tokend import-seed --help` for more).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "tokend",
    version,
    about,
    long_about,
    max_term_width = 100,
    args_override_self = true,
    verbatim_doc_comment
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "TOKEND_BIND", default_value = "127.0.0.1")]
    pub bind: String,

    /// TCP port to listen on (0 picks a free one; the log says which).
    #[arg(short, long, env = "TOKEND_PORT", default_value_t = 6380)]
    pub port: u16,

    /// Default token lifetime (TOKEN.GEN without EX/PX).
    #[arg(long, env = "TOKEND_TOKEN_TTL", default_value = "300s", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Default lease (TOKEN.ACQUIRE without EX/PX).
    #[arg(long, env = "TOKEND_LEASE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// How long expired tokens are remembered (so clients get -EXPIRED, not -NOTOKEN).
    #[arg(long, env = "TOKEND_EXPIRED_MEMORY", default_value = "1h", value_parser = parse_duration)]
    pub expired_memory: Duration,

    /// At most this many expired tokens are remembered (oldest forgotten first).
    #[arg(long, env = "TOKEND_MAX_EXPIRED_REMEMBERED", default_value_t = 1_000_000)]
    pub max_expired_remembered: usize,

    /// Due expiries fired per hold of a shard's lock (a batch also ends after 1 ms): a mass expiry goes in batches, and commands on other pools wait for one batch at most.
    #[arg(long, env = "TOKEND_EXPIRY_BATCH", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub expiry_batch: u32,

    /// Store shards: pools hash to shards; commands on different shards never contend.
    #[arg(long, env = "TOKEND_SHARDS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub shards: u16,

    /// Maximum simultaneous client connections.
    #[arg(long, env = "TOKEND_MAXCLIENTS", default_value_t = 10_000)]
    pub maxclients: usize,

    /// Maximum live tokens in the server (TOKEN.GEN beyond it answers -OOM).
    /// At most 2^31 − 1: slot numbers must fit in 31 bits.
    #[arg(long, env = "TOKEND_MAX_TOKENS", default_value_t = 50_000_000,
          value_parser = clap::value_parser!(u64).range(..=2_147_483_647))]
    pub max_tokens: u64,

    /// Largest COUNT accepted by TOKEN.GEN.
    #[arg(long, env = "TOKEND_MAX_GEN_COUNT", default_value_t = 100_000)]
    pub max_gen_count: u64,

    /// Largest argument (and request) in bytes.
    #[arg(long, env = "TOKEND_PROTO_MAX_BULK_LEN", default_value_t = 64 * 1024 * 1024)]
    pub proto_max_bulk_len: usize,

    /// Require clients to AUTH with this password (like Redis's requirepass).
    #[arg(long, env = "TOKEND_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,

    /// Protected mode (as Redis's): with no password set, refuse clients that do not
    /// connect from the loopback interface.
    #[arg(long, env = "TOKEND_PROTECTED_MODE", default_value = "yes", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub protected_mode: bool,

    /// Also listen for TLS connections on this port (needs --tls-cert and --tls-key).
    #[arg(long, env = "TOKEND_TLS_PORT", requires_all = ["tls_cert", "tls_key"])]
    pub tls_port: Option<u16>,

    /// TLS certificate chain (PEM).
    #[arg(long, env = "TOKEND_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "TOKEND_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Allow FLUSHDB and FLUSHALL (they delete every pool).
    #[arg(long, env = "TOKEND_ENABLE_FLUSH", default_value = "no", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub enable_flush: bool,

    /// Close connections idle for this many seconds (0 = never; subscribers and
    /// blocked clients are never closed for idleness, as in Redis).
    #[arg(long, env = "TOKEND_TIMEOUT", default_value_t = 0)]
    pub timeout: u64,

    /// Notification classes, like Redis's notify-keyspace-events: K keyspace, E keyevent,
    /// x expired, l leaseexpired, g token commands, A = xlg. Empty disables.
    #[arg(long, env = "TOKEND_NOTIFY_KEYSPACE_EVENTS", default_value = EventClasses::DEFAULT, value_parser = parse_classes)]
    pub notify_keyspace_events: EventClasses,

    /// Backing Redis for durability and notifications, e.g. redis://127.0.0.1:6379/0.
    #[arg(long, env = "TOKEND_REDIS")]
    pub redis: Option<String>,

    /// With a `rediss://` backing Redis: the CA certificate (PEM) that signed
    /// its certificate, when it is not in the system's trust store.
    #[arg(long, env = "TOKEND_REDIS_TLS_CA_CERT")]
    pub redis_tls_ca_cert: Option<std::path::PathBuf>,

    /// With a `rediss://` backing Redis that wants client certificates: ours (PEM).
    #[arg(long, env = "TOKEND_REDIS_TLS_CERT", requires = "redis_tls_key")]
    pub redis_tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --redis-tls-cert.
    #[arg(long, env = "TOKEND_REDIS_TLS_KEY", requires = "redis_tls_cert")]
    pub redis_tls_key: Option<std::path::PathBuf>,

    /// Prefix of every key tokend writes in the backing Redis.
    #[arg(long, env = "TOKEND_REDIS_PREFIX", default_value = "tokend:")]
    pub redis_prefix: String,

    /// With --redis: reply after the change is in Redis (sync) or at once (async).
    #[arg(long, env = "TOKEND_DURABILITY", value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,

    /// How long a tokend that stopped renewing its lease on the backing Redis keeps
    /// it: another tokend on the same prefix takes over only after that (in cluster
    /// mode: another node takes its hash slots over).
    #[arg(long, env = "TOKEND_CLUSTER_NODE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub cluster_node_timeout: Duration,

    /// Run as one node of a cluster that shares the backing Redis (needs --redis):
    /// hash slots are spread over the live nodes, clients are redirected with -MOVED.
    #[arg(long, env = "TOKEND_CLUSTER_ENABLED", default_value = "no", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub cluster_enabled: bool,

    /// Cluster mode: the address other nodes' redirects send clients to (default:
    /// --bind; when bound to every interface, the address this host reaches the
    /// backing Redis from). With a backing Redis it is also the address the
    /// node's lease there names, standalone too.
    #[arg(long, env = "TOKEND_CLUSTER_ANNOUNCE_IP")]
    pub cluster_announce_ip: Option<String>,

    /// Cluster mode: the port redirects send clients to (default: the port listened on).
    #[arg(long, env = "TOKEND_CLUSTER_ANNOUNCE_PORT")]
    pub cluster_announce_port: Option<u16>,

    /// With --durability async: the longest a change waits before it is flushed.
    #[arg(long, env = "TOKEND_FLUSH_INTERVAL", default_value = "5ms", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// With --durability sync: how long a write waits for an unreachable backing Redis
    /// before the client gets -TRYAGAIN.
    #[arg(long, env = "TOKEND_PERSIST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub persist_timeout: Duration,

    /// Commands that take at least this many microseconds go to the slow log
    /// (SLOWLOG GET); 0 logs every command, a negative value none.
    #[arg(long, env = "TOKEND_SLOWLOG_LOG_SLOWER_THAN", default_value_t = 10_000, allow_negative_numbers = true)]
    pub slowlog_log_slower_than: i64,

    /// Entries the slow log keeps (the oldest go first).
    #[arg(long, env = "TOKEND_SLOWLOG_MAX_LEN", default_value_t = 128)]
    pub slowlog_max_len: usize,

    /// Commands that take, and expiries that fire, at least this many milliseconds
    /// late are recorded for LATENCY LATEST/HISTORY; 0 records nothing.
    #[arg(long, env = "TOKEND_LATENCY_MONITOR_THRESHOLD", default_value_t = 5)]
    pub latency_monitor_threshold: u64,

    /// Serve the old token service's HTTP API on this address (e.g. 127.0.0.1:8000):
    /// POST /token/generateToken, GET /token/acquireToken, PUT /token/keepAlive… with
    /// /docs and /openapi.json. Off unless given.
    #[arg(long, env = "TOKEND_HTTP_ADDR")]
    pub http_addr: Option<String>,

    /// The pool the HTTP API works on when a request names none (`?pool=`).
    #[arg(long, env = "TOKEND_HTTP_POOL", default_value = "default")]
    pub http_pool: String,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9187). Off
    /// unless given.
    #[arg(long, env = "TOKEND_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// Per-pool series in /metrics for at most this many pools (the largest); the
    /// rest are summed under pool="_other".
    #[arg(long, env = "TOKEND_METRICS_MAX_POOLS", default_value_t = 100)]
    pub metrics_max_pools: usize,

    /// Microseconds the single-threaded runtime keeps polling its sockets after a
    /// request before it sleeps (the most: the window adapts to how requests come;
    /// 0 = off, sleep at once). Saves the wake-up of a sleeping core, tens of µs on
    /// a virtual machine, at the price of a busy core while requests keep coming.
    #[arg(long, env = "TOKEND_IDLE_POLL_US", default_value_t = crate::idle_poll::DEFAULT_LIMIT_US,
          value_parser = clap::value_parser!(u64).range(0..=crate::idle_poll::MAX_LIMIT_US))]
    pub idle_poll_us: u64,

    /// The longest nap, µs, of the single-threaded runtime, off its sockets,
    /// when requests come fast (8+ connections' batches since it last slept),
    /// so that the next ones gather and their senders wake nobody; 0 = never.
    /// Naps shrink when their clients run out of work during them. A request
    /// that comes during a nap waits for its end.
    #[arg(long, env = "TOKEND_IDLE_NAP_US", default_value_t = crate::idle_poll::DEFAULT_NAP_US,
          value_parser = clap::value_parser!(u64).range(0..=crate::idle_poll::MAX_NAP_US))]
    pub idle_nap_us: u64,

    /// Disconnect a subscriber whose queued messages pass a limit, as Redis
    /// does: `pubsub <hard> <soft> <seconds>` (bytes, or 64kb, 32mb, 1gb; 0 =
    /// no limit): over the hard limit at once, over the soft limit after that
    /// many seconds. Normal clients have no limit (`normal 0 0 0`); the
    /// replica class is kept for CONFIG GET (tokend has no replicas).
    #[arg(long, env = "TOKEND_CLIENT_OUTPUT_BUFFER_LIMIT", default_value = OutputBufferLimit::DEFAULT,
          value_parser = parse_output_buffer_limit)]
    pub client_output_buffer_limit: OutputBufferLimit,

    /// The poller state the runtime's park hooks use (set by the binary
    /// when it builds a single-threaded runtime; not a flag).
    #[arg(skip)]
    pub idle_hooks: Option<std::sync::Arc<crate::idle_poll::IdlePoll>>,

    /// Worker threads (0 = one per available core; 1 = a single-threaded runtime).
    #[arg(long, env = "TOKEND_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Serve requests at this real-time priority (SCHED_FIFO, 1-99; 0 = off):
    /// the threads that serve requests preempt other programs' threads at once.
    /// The threads they start (expiry, freeing, background work) stay at the
    /// normal policy. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least N; not
    /// with --idle-poll-us.
    #[arg(long, env = "TOKEND_RT_PRIORITY", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=crate::sched::MAX_PRIORITY as i64))]
    pub rt_priority: u8,

    /// Read settings from this file first (Redis style: one `name value` per line, `#`
    /// comments; names are the long flags without `--`). Flags and environment win.
    #[arg(long, env = "TOKEND_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Check that the tokend configured here (--bind, --port, --requirepass) answers
    /// PING, and exit: 0 if it does, 1 if not. For container health checks.
    #[arg(long)]
    pub ping: bool,

    /// Log format: text for people, json (one object per line) for log pipelines.
    #[arg(long, env = "TOKEND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    /// `TOKEND_LOG` is accepted too, as tracing's usual variable.
    #[arg(long, env = "TOKEND_LOG_LEVEL", default_value = LOG_LEVEL_DEFAULT)]
    pub log_level: String,
}

impl Config {
    /// Reads the settings: flags first, then `TOKEND_*` environment
    /// variables, then the file of `--config FILE` (or `TOKEND_CONFIG`), then
    /// the defaults. clap prints help, version and flag errors itself and
    /// exits; a mistake in the file is an `Err` naming the file and line.
    pub fn load() -> Result<Config, String> {
        Config::load_from(std::env::args_os().collect())
    }

    /// [`Config::load`] for an explicit command line (the environment is the
    /// process's).
    pub fn load_from(args: Vec<std::ffi::OsString>) -> Result<Config, String> {
        let cmd = <Config as clap::CommandFactory>::command();
        let matches = cmd.clone().try_get_matches_from(&args).unwrap_or_else(|e| e.exit());
        let mut config = <Config as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Some(path) = config.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let entries = config_file_entries(&text, &path.display().to_string(), &cmd)?;
            // A setting the command line or the environment gave wins over
            // the file's; the rest are inserted before the real flags and
            // the whole is parsed again.
            let mut merged: Vec<std::ffi::OsString> = args.iter().take(1).cloned().collect();
            for (id, long, value) in entries {
                let given = matches!(
                    matches.value_source(&id),
                    Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
                );
                if !given {
                    merged.push(format!("--{long}").into());
                    merged.push(value.into());
                }
            }
            merged.extend(args.into_iter().skip(1));
            let matches = cmd.try_get_matches_from(merged).map_err(|e| e.to_string())?;
            config = <Config as clap::FromArgMatches>::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        }
        // `TOKEND_LOG` is the tracing-style alias of `TOKEND_LOG_LEVEL`.
        if config.log_level == LOG_LEVEL_DEFAULT
            && std::env::var_os("TOKEND_LOG_LEVEL").is_none()
            && let Ok(filter) = std::env::var("TOKEND_LOG")
        {
            config.log_level = filter;
        }
        if config.rt_priority > 0 && config.idle_poll_us > 0 {
            return Err(format!("--idle-poll-us cannot be used with --rt-priority ({RT_POLL_REASON})"));
        }
        if config.cluster_enabled && config.redis.is_none() {
            return Err("--cluster-enabled yes needs --redis: the backing Redis is where the nodes agree".into());
        }
        Ok(config)
    }

    /// Defaults, as if run with no flags (tests start from this).
    pub fn default_for_tests() -> Config {
        Config::parse_from(["tokend"])
    }

    /// The certificates for a TLS backing Redis (None: the system's trust
    /// store, or no TLS).
    pub fn backing_tls(&self) -> std::io::Result<Option<redis::TlsCertificates>> {
        if self.redis_tls_ca_cert.is_none() && self.redis_tls_cert.is_none() {
            return Ok(None);
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| std::io::Error::other(format!("cannot read {}: {e}", p.display())))
        };
        let root_cert = self.redis_tls_ca_cert.as_deref().map(read).transpose()?;
        let client_tls = match (&self.redis_tls_cert, &self.redis_tls_key) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig { client_cert: read(c)?, client_key: read(k)? }),
            _ => None,
        };
        Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
    }

    /// Every setting by its name (the long flag without `--`), as `CONFIG
    /// GET` shows it, plus the few Redis settings clients read at connect.
    /// Secrets in the backing Redis URL are masked.
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map_or(String::new(), |p| p.display().to_string());
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        vec![
            ("bind", self.bind.clone()),
            ("port", self.port.to_string()),
            ("token-ttl", ms(self.token_ttl)),
            ("lease-ttl", ms(self.lease_ttl)),
            ("expired-memory", ms(self.expired_memory)),
            ("max-expired-remembered", self.max_expired_remembered.to_string()),
            ("expiry-batch", self.expiry_batch.to_string()),
            ("shards", self.shards.to_string()),
            ("maxclients", self.maxclients.to_string()),
            ("max-tokens", self.max_tokens.to_string()),
            ("max-gen-count", self.max_gen_count.to_string()),
            ("proto-max-bulk-len", self.proto_max_bulk_len.to_string()),
            ("requirepass", self.requirepass.clone().unwrap_or_default()),
            ("protected-mode", yes_no(self.protected_mode)),
            ("tls-port", self.tls_port.map_or("0".into(), |p| p.to_string())),
            ("tls-cert", path(&self.tls_cert)),
            ("tls-key", path(&self.tls_key)),
            ("timeout", self.timeout.to_string()),
            ("enable-flush", yes_no(self.enable_flush)),
            ("notify-keyspace-events", self.notify_keyspace_events.to_flags()),
            ("redis", self.redis.as_deref().map_or(String::new(), mask_url_password)),
            ("redis-tls-ca-cert", path(&self.redis_tls_ca_cert)),
            ("redis-tls-cert", path(&self.redis_tls_cert)),
            ("redis-tls-key", path(&self.redis_tls_key)),
            ("redis-prefix", self.redis_prefix.clone()),
            ("durability", self.durability.name().into()),
            ("flush-interval", ms(self.flush_interval)),
            ("persist-timeout", ms(self.persist_timeout)),
            ("cluster-node-timeout", ms(self.cluster_node_timeout)),
            ("cluster-enabled", yes_no(self.cluster_enabled)),
            ("cluster-announce-ip", self.cluster_announce_ip.clone().unwrap_or_default()),
            ("cluster-announce-port", self.cluster_announce_port.map_or("0".into(), |p| p.to_string())),
            ("slowlog-log-slower-than", self.slowlog_log_slower_than.to_string()),
            ("slowlog-max-len", self.slowlog_max_len.to_string()),
            ("latency-monitor-threshold", self.latency_monitor_threshold.to_string()),
            ("http-addr", self.http_addr.clone().unwrap_or_default()),
            ("http-pool", self.http_pool.clone()),
            ("metrics-addr", self.metrics_addr.clone().unwrap_or_default()),
            ("metrics-max-pools", self.metrics_max_pools.to_string()),
            ("idle-poll-us", self.idle_poll_us.to_string()),
            ("idle-nap-us", self.idle_nap_us.to_string()),
            ("client-output-buffer-limit", self.client_output_buffer_limit.to_redis()),
            ("threads", self.threads.to_string()),
            ("rt-priority", self.rt_priority.to_string()),
            ("config", path(&self.config)),
            ("log-format", format!("{:?}", self.log_format).to_ascii_lowercase()),
            ("log-level", self.log_level.clone()),
            ("databases", "1".into()),
            ("save", String::new()),
            ("appendonly", "no".into()),
        ]
    }

    /// The store's part of the configuration.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            shards: self.shards as usize,
            default_lifetime_ms: self.token_ttl.as_millis() as u64,
            default_lease_ms: self.lease_ttl.as_millis() as u64,
            expired_memory_ms: self.expired_memory.as_millis() as u64,
            max_expired_remembered: self.max_expired_remembered,
            max_tokens: self.max_tokens,
            expiry_batch: self.expiry_batch as usize,
        }
    }
}

/// A URL with its password (if any) replaced by `***`.
fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Reads a config file (Redis style: one `name value` per line, the names
/// of the long flags without `--`; a value may be quoted; blank lines and
/// `#` comments are skipped) into (argument id, name, value), each value
/// checked by the flag's own parser. Errors name the file and line:
/// `tokend.conf:3: unknown setting "prot" (did you mean "port"?)`.
pub fn config_file_entries(
    text: &str,
    file: &str,
    cmd: &clap::Command,
) -> Result<Vec<(String, String, String)>, String> {
    let settings: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| !["config", "help", "version", "ping"].contains(&l)))
        .collect();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        let Some(arg) = settings.iter().find(|a| a.get_long() == Some(name)) else {
            let best = settings
                .iter()
                .filter_map(|a| a.get_long())
                .map(|l| (strsim::jaro_winkler(name, l), l))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            return Err(match best {
                Some((_, l)) => format!("{at}: unknown setting \"{name}\" (did you mean \"{l}\"?)"),
                None => format!("{at}: unknown setting \"{name}\""),
            });
        };
        if value.is_empty() {
            return Err(format!("{at}: missing value for {name}"));
        }
        // The flag's own parser judges the value (a parse of this one flag;
        // only a bad value counts here, what it requires is checked with
        // the whole command line).
        if let Err(e) = cmd.clone().try_get_matches_from(["tokend", &format!("--{name}"), value])
            && matches!(e.kind(), clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation)
        {
            // clap says "invalid value 'x' for '--flag <FLAG>': why"; the
            // file's reader wants only the why.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("");
            let why = first.rsplit_once("': ").map_or(first, |(_, why)| why);
            return Err(format!("{at}: invalid value \"{value}\" for {name} ({why})"));
        }
        out.push((arg.get_id().to_string(), name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Parses `30` (seconds) or a number with a unit (`250ms`, `5m`, `1h`, `1h30m`).
/// Zero is refused: a zero lifetime or lease would expire everything at once.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(s.parse::<u64>().map_err(|e| e.to_string())?)
    } else {
        humantime::parse_duration(s).map_err(|e| format!("{e} (use seconds, or e.g. 250ms, 5m, 1h)"))?
    };
    if d.is_zero() {
        return Err("a duration must be positive".into());
    }
    Ok(d)
}

/// `client-output-buffer-limit`: Redis's three classes of client, each
/// `hard soft seconds`. Only the pub/sub class limits anything here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputBufferLimit {
    /// `replica` (or `slave`): kept and shown, not used.
    pub replica: QueueLimit,
    pub pubsub: QueueLimit,
}

impl OutputBufferLimit {
    pub const DEFAULT: &'static str = "normal 0 0 0 replica 256mb 64mb 60 pubsub 32mb 0 0";

    /// Parses `class hard soft seconds [class hard soft seconds ...]`; the
    /// classes not named keep their values in `base` (as CONFIG SET does
    /// in Redis).
    pub fn parse(s: &str, base: OutputBufferLimit) -> Result<OutputBufferLimit, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.is_empty() || !words.len().is_multiple_of(4) {
            return Err("wrong number of arguments (expected: <class> <hard> <soft> <seconds> ...)".into());
        }
        let mut out = base;
        for w in words.chunks(4) {
            let hard = parse_memory(w[1])?;
            let soft = parse_memory(w[2])?;
            let soft_secs = w[3].parse::<u64>().map_err(|_| format!("invalid soft limit seconds {:?}", w[3]))?;
            let limit = QueueLimit { hard, soft, soft_secs };
            match w[0].to_ascii_lowercase().as_str() {
                "normal" if hard == 0 && soft == 0 => {}
                "normal" => return Err("normal clients have no limit here: only \"normal 0 0 0\" is accepted".into()),
                "replica" | "slave" => out.replica = limit,
                "pubsub" => out.pubsub = limit,
                other => return Err(format!("invalid client class {other:?} (normal, replica or pubsub)")),
            }
        }
        Ok(out)
    }

    /// As Redis's CONFIG GET shows it.
    pub fn to_redis(&self) -> String {
        let (r, p) = (self.replica, self.pubsub);
        format!("normal 0 0 0 slave {} {} {} pubsub {} {} {}", r.hard, r.soft, r.soft_secs, p.hard, p.soft, p.soft_secs)
    }
}

impl Default for OutputBufferLimit {
    fn default() -> Self {
        OutputBufferLimit { replica: QueueLimit::REPLICA, pubsub: QueueLimit::default() }
    }
}

fn parse_output_buffer_limit(s: &str) -> Result<OutputBufferLimit, String> {
    OutputBufferLimit::parse(s, OutputBufferLimit::default())
}

/// A size as Redis writes it: `1024`, `1k` (1000), `1kb` (1024), `m`, `mb`,
/// `g`, `gb`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &lower[digits.len()..] {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return Err(format!("invalid memory size {s:?} (e.g. 65536, 64kb, 32mb, 1gb)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("invalid memory size {s:?} (e.g. 65536, 64kb, 32mb, 1gb)"))
}

/// Redis-style booleans: yes/no (also true/false, on/off, 1/0).
fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("expected yes or no, got {s:?}")),
    }
}

fn parse_classes(s: &str) -> Result<EventClasses, String> {
    EventClasses::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-5").is_err());
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::default_for_tests();
        assert_eq!(c.port, 6380);
        assert_eq!(c.bind, "127.0.0.1");
        let s = c.store_config();
        assert_eq!(s.default_lifetime_ms, 300_000);
        assert_eq!(s.default_lease_ms, 60_000);
        assert_eq!(s.expired_memory_ms, 3_600_000);
        assert!(c.redis.is_none());
    }

    #[test]
    fn config_file_lines_are_checked_against_the_flags() {
        use clap::CommandFactory;
        let cmd = Config::command();
        let e = config_file_entries("# comment\nport 6390\n\nrequirepass \"s3 cret\"\ntoken-ttl 5m\n", "t.conf", &cmd)
            .unwrap();
        let pairs: Vec<(&str, &str)> = e.iter().map(|(_, n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("port", "6390"), ("requirepass", "s3 cret"), ("token-ttl", "5m")]);
        let err = |text: &str| config_file_entries(text, "tokend.conf", &cmd).unwrap_err();
        assert_eq!(err("port 1\n\nprot 7000"), "tokend.conf:3: unknown setting \"prot\" (did you mean \"port\"?)");
        assert!(err("port abc").starts_with("tokend.conf:1: invalid value \"abc\" for port"), "{}", err("port abc"));
        assert!(err("token-ttl 0").starts_with("tokend.conf:1: invalid value \"0\" for token-ttl"));
        assert_eq!(err("port"), "tokend.conf:1: missing value for port");
        assert_eq!(err("zzzzzz 1"), "tokend.conf:1: unknown setting \"zzzzzz\"");
        assert!(err("--port 1").starts_with("tokend.conf:1: unknown setting"));
        assert!(err("config other.conf").starts_with("tokend.conf:1: unknown setting"));
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    #[test]
    fn output_buffer_limits_parse_as_redis_writes_them() {
        let d = OutputBufferLimit::default();
        assert_eq!(parse_output_buffer_limit(OutputBufferLimit::DEFAULT).unwrap(), d);
        assert_eq!(d.to_redis(), "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 0 0");
        let l = OutputBufferLimit::parse("PUBSUB 64kb 1mb 30", d).unwrap();
        assert_eq!(l.pubsub, QueueLimit { hard: 65536, soft: 1 << 20, soft_secs: 30 });
        assert_eq!(l.replica, d.replica, "a class not named keeps its value");
        let l = OutputBufferLimit::parse("slave 1k 2g 0 pubsub 0 0 0", l).unwrap();
        assert_eq!(l.replica, QueueLimit { hard: 1000, soft: 2_000_000_000, soft_secs: 0 });
        assert_eq!(l.pubsub, QueueLimit { hard: 0, soft: 0, soft_secs: 0 });
        for bad in
            ["", "pubsub 1 0", "pubsub 1x 0 0", "pubsub -1 0 0", "pubsub 1 0 -1", "other 0 0 0", "normal 1mb 0 0"]
        {
            assert!(OutputBufferLimit::parse(bad, d).is_err(), "{bad:?}");
        }
        assert!(parse_memory("99999999999999gb").is_err(), "overflow");
        let huge = OutputBufferLimit::parse("pubsub 0 1 18446744073709551615", d).unwrap();
        assert_eq!(huge.pubsub.soft_secs, u64::MAX, "taken; the broker's clock saturates");
    }
}

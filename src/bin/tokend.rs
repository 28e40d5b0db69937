//! The `tokend` binary: parse flags, set up logging, bind, serve until
//! SIGINT/SIGTERM.

use tokend::config::{Config, LogFormat};
use tokend::server::Server;
use tokio::net::TcpListener;

fn main() -> std::process::ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "import-seed") {
        return import_seed();
    }
    let mut config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tokend: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if config.ping {
        let addr = tokend::ping::target(&config.bind, config.port);
        return match tokend::ping::check(&addr, config.requirepass.as_deref(), std::time::Duration::from_secs(3)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tokend --ping: {e}");
                std::process::ExitCode::from(1)
            }
        };
    }
    return_big_frees_to_the_os();
    // One worker thread per available core (as tokio's default), or a
    // current-thread runtime when there is one: no work-stealing queues and
    // no cross-thread wake-ups on the request path.
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The main thread serves requests itself in a single-threaded runtime,
    // and accepts connections in a multi-threaded one: it goes first, and
    // is where a refusal is reported. What it starts after (the runtime's
    // threads, the store's) gets the normal policy; workers raise
    // themselves at their first park.
    if config.rt_priority > 0
        && let Err(e) = tokend::sched::serve_at(config.rt_priority)
    {
        eprintln!(
            "tokend: --rt-priority {}: cannot use SCHED_FIFO: {e} (it needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least {0}: ulimit -r, systemd's LimitRTPRIO=, docker run --ulimit rtprio=)",
            config.rt_priority
        );
        return std::process::ExitCode::from(1);
    }
    let rt_priority = config.rt_priority;
    let runtime = if threads == 1 {
        // Naps (`--idle-nap-us`) happen right before the thread parks.
        let idle = std::sync::Arc::new(tokend::idle_poll::IdlePoll::new(config.idle_poll_us, config.idle_nap_us));
        idle.hook();
        let park = idle.clone();
        config.idle_hooks = Some(idle);
        tokio::runtime::Builder::new_current_thread().enable_all().on_thread_park(move || park.before_park()).build()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if rt_priority > 0 {
            builder.on_thread_park(move || tokend::sched::serve_at_once(rt_priority));
        }
        builder.worker_threads(threads).enable_all().build()
    };
    match runtime {
        Ok(rt) => rt.block_on(serve(config)),
        Err(e) => {
            eprintln!("tokend: cannot start the runtime: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Allocations of 1 MiB and more get their own mappings, which go back to
/// the OS when freed. glibc's default threshold rises to the size of the
/// biggest mapping freed so far (up to 32 MiB), after which such buffers
/// come from the heap and stay in the RSS once freed: a GEN COUNT 100000
/// reply (4.5 MB), the ids behind it, a timer list outgrowing its buffer.
/// 1M tokens made by GEN COUNT 100000: 89.0 B of RSS per token with the
/// default, 81.5 B with this. A buffer that is dropped and grown again at
/// every turn would now be mapped and unmapped each time: a subscriber's
/// bursts of events are written from where they are for that reason
/// (see `connection::DIRECT_WRITE`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_big_frees_to_the_os() {
    // SAFETY: mallopt only changes glibc's allocation policy, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_big_frees_to_the_os() {}

/// `tokend import-seed …`: the old service's tokens into a running tokend.
fn import_seed() -> std::process::ExitCode {
    use clap::Parser;
    let args = tokend::import::ImportArgs::parse_from(std::env::args_os().skip(1));
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend import-seed: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(tokend::import::run(&args)) {
        Ok(report) => {
            print!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokend import-seed: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().init(),
    }

    let addr = format!("{}:{}", config.bind, config.port);
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return std::process::ExitCode::from(1);
        }
    };
    let tls_listener = match config.tls_port {
        Some(port) => match TcpListener::bind((config.bind.as_str(), port)).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(port, error = %e, "cannot listen for TLS");
                return std::process::ExitCode::from(1);
            }
        },
        None => None,
    };
    let mut server = match Server::new(listener, config).await {
        Ok(s) => s,
        Err(e) => {
            // Exit code 2: the backing Redis could not be reached or read.
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(l) = tls_listener {
        if let Err(e) = server.add_tls(l) {
            tracing::error!(error = %e, "cannot set up TLS");
            return std::process::ExitCode::from(1);
        }
        if let Some(a) = server.tls_addr() {
            tracing::info!(addr = %a, "TLS listener ready");
        }
    }
    match server.local_addr() {
        Ok(a) => tracing::info!(addr = %a, "listening"),
        Err(e) => tracing::warn!(error = %e, "listening, address unknown"),
    }
    // "ready to accept connections" is logged once the dataset is loaded.
    match server.run(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("bye");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            std::process::ExitCode::from(2)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

//! Where settings come from, against the real binary: flags beat
//! environment variables, which beat the config file, which beats the
//! defaults; every pair is checked, and a mistake in the file names the
//! file and the line.

mod procs;

use procs::{Tokend, free_port};
use std::io::Write;
use std::time::Duration;

/// A config file in a fresh temporary directory.
struct ConfFile {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl ConfFile {
    fn new(name: &str, text: &str) -> ConfFile {
        let dir = std::env::temp_dir().join(format!("tokend-conf-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        ConfFile { dir, path }
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ConfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `CONFIG GET name` on a running tokend.
fn config_get(t: &Tokend, name: &str) -> String {
    let mut con = redis::Client::open(t.url()).unwrap().get_connection().unwrap();
    let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(&mut con).unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    v[1].clone()
}

/// The token-ttl a tokend ends up with, given a flag, an environment
/// variable and a config file line (each optional).
fn token_ttl(flag: Option<&str>, env: Option<&str>, file: Option<&str>) -> String {
    let conf = ConfFile::new("tokend.conf", &file.map_or(String::new(), |v| format!("token-ttl {v}\n")));
    let mut args = vec!["--port", "0", "--config", conf.arg()];
    if let Some(f) = flag {
        args.extend(["--token-ttl", f]);
    }
    let envs: Vec<(&str, &str)> = env.map(|e| ("TOKEND_TOKEN_TTL", e)).into_iter().collect();
    let t = Tokend::start_with_env(&args, &envs);
    config_get(&t, "token-ttl")
}

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    assert_eq!(token_ttl(None, None, None), "300000ms", "the default");
    assert_eq!(token_ttl(None, None, Some("5s")), "5000ms", "file over default");
    assert_eq!(token_ttl(None, Some("7s"), None), "7000ms", "environment over default");
    assert_eq!(token_ttl(Some("9s"), None, None), "9000ms", "flag over default");
    assert_eq!(token_ttl(None, Some("7s"), Some("5s")), "7000ms", "environment over file");
    assert_eq!(token_ttl(Some("9s"), None, Some("5s")), "9000ms", "flag over file");
    assert_eq!(token_ttl(Some("9s"), Some("7s"), None), "9000ms", "flag over environment");
    assert_eq!(token_ttl(Some("9s"), Some("7s"), Some("5s")), "9000ms", "flag over both");
}

#[test]
fn the_environment_port_beats_the_files_port() {
    let (env_port, file_port) = (free_port(), free_port());
    let conf = ConfFile::new("f.conf", &format!("port {file_port}\nlease-ttl 3s\n"));
    let port = env_port.to_string();
    let t = Tokend::start_with_env(&["--config", conf.arg()], &[("TOKEND_PORT", &port)]);
    assert_eq!(t.addr.port(), env_port, "TOKEND_PORT=<p> tokend --config f.conf (file: port <q>) listens on p");
    assert_eq!(config_get(&t, "lease-ttl"), "3000ms", "the rest of the file still applies");
}

#[test]
fn log_level_comes_from_tokend_log_level_or_its_alias() {
    let t = Tokend::start_with_env(&["--port", "0"], &[("TOKEND_LOG_LEVEL", "debug")]);
    assert_eq!(config_get(&t, "log-level"), "debug");
    let t = Tokend::start_with_env(&["--port", "0"], &[("TOKEND_LOG", "warn,tokend=info")]);
    assert_eq!(config_get(&t, "log-level"), "warn,tokend=info");
    let t =
        Tokend::start_with_env(&["--port", "0"], &[("TOKEND_LOG", "warn"), ("TOKEND_LOG_LEVEL", "error,tokend=info")]);
    assert_eq!(config_get(&t, "log-level"), "error,tokend=info", "the real name wins over the alias");
}

/// Runs tokend with a config file that has a mistake: it must exit 2 and
/// say where the mistake is.
fn bad_file(text: &str) -> String {
    let conf = ConfFile::new("tokend.conf", text);
    let child = Tokend::spawn(&["--port", "0", "--config", conf.arg()], &[]);
    let out = wait_exit(child);
    assert_eq!(out.0, Some(2), "exit code; stderr: {}", out.1);
    out.1
}

fn wait_exit(mut child: std::process::Child) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (st.code(), err);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tokend did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_mistake_in_the_file_names_the_file_and_line() {
    let err = bad_file("# settings\nport 7000\nprot 7001\n");
    assert!(err.contains("tokend.conf:3: unknown setting \"prot\" (did you mean \"port\"?)"), "{err}");
    let err = bad_file("port abc\n");
    assert!(err.contains("tokend.conf:1: invalid value \"abc\" for port"), "{err}");
    let err = bad_file("\n\ntoken-ttl 0\n");
    assert!(err.contains("tokend.conf:3: invalid value \"0\" for token-ttl"), "{err}");
    assert!(!err.contains("--token-ttl"), "the file's mistake is not reported as a flag's: {err}");
}

/// `tokend --ping` (the container health check) with the same settings as
/// the server: exit 0 when it answers PONG, 1 otherwise.
#[test]
fn ping_checks_the_configured_server() {
    let t = Tokend::start_with_env(&["--port", "0", "--requirepass", "pw"], &[]);
    let port = t.addr.port().to_string();
    let ping = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--ping", "--port", port.as_str()];
        all.extend_from_slice(args);
        wait_exit(Tokend::spawn(&all, env))
    };
    assert_eq!(ping(&["--requirepass", "pw"], &[]).0, Some(0));
    assert_eq!(ping(&[], &[("TOKEND_REQUIREPASS", "pw")]).0, Some(0), "the password from the environment");
    let (code, err) = ping(&["--requirepass", "nope"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("WRONGPASS"), "{err}");
    let (code, err) = ping(&[], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("NOAUTH"), "{err}");
    drop(t);
    let (code, err) = ping(&["--requirepass", "pw"], &[]);
    assert_eq!(code, Some(1), "nobody listens any more");
    assert!(err.contains("cannot connect"), "{err}");
}

/// Each thread of process `pid`: its name, scheduling policy (0 normal, 1
/// `SCHED_FIFO`) and real-time priority, from `/proc/<pid>/task/*/stat`.
fn threads_of(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else { continue };
        // `tid (name) state …`: the name may hold spaces; the fields after
        // it start at the third, so field n is at n - 3.
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        out.push((name, f[41 - 3].parse().unwrap(), f[40 - 3].parse().unwrap()));
    }
    out
}

fn real_time(threads: &[(String, u32, u32)]) -> Vec<&(String, u32, u32)> {
    // SCHED_FIFO and SCHED_RR; the free thread is at SCHED_IDLE (5).
    threads.iter().filter(|t| t.1 == 1 || t.1 == 2).collect()
}

/// Work that starts threads: a GEN's stock (a blocking thread, which starts
/// the stock maker) and the lazy free of a big pool.
fn start_background_threads(t: &Tokend) {
    let mut con = redis::Client::open(t.url()).unwrap().get_connection().unwrap();
    let made: Vec<String> = redis::cmd("TOKEN.GEN").arg("big").arg("COUNT").arg(100_000).query(&mut con).unwrap();
    assert_eq!(made.len(), 100_000);
    let gone: i64 = redis::cmd("UNLINK").arg("big").query(&mut con).unwrap();
    assert_eq!(gone, 1);
}

/// Whether this process may use real-time scheduling (and so the tokend it
/// starts): asked by a thread that tries it and ends.
fn may_use_real_time() -> bool {
    std::thread::spawn(|| tokend::sched::serve_at(1).is_ok()).join().unwrap()
}

/// `(name, policy, priority)` of the threads named `name`.
fn named<'a>(threads: &'a [(String, u32, u32)], name: &str) -> Vec<&'a (String, u32, u32)> {
    threads.iter().filter(|t| t.0 == name).collect()
}

/// `--rt-priority N`: the threads that serve requests run at SCHED_FIFO N
/// (the main thread, and a multi-threaded runtime's workers); every thread
/// they start (expiry drivers, blocking work, a GEN's stock maker, the
/// free thread) keeps the normal policy, so that none of them can hold the
/// core against a request.
#[test]
fn rt_priority_raises_only_the_threads_that_serve_requests() {
    if !may_use_real_time() {
        let out = wait_exit(Tokend::spawn(&["--port", "0", "--rt-priority", "1"], &[]));
        assert_eq!(out.0, Some(1), "without the right it refuses to start; stderr: {}", out.1);
        assert!(out.1.contains("cannot use SCHED_FIFO"), "{}", out.1);
        return;
    }
    let t = Tokend::start_with_env(&["--port", "0", "--threads", "1", "--rt-priority", "2"], &[]);
    assert_eq!(config_get(&t, "rt-priority"), "2");
    start_background_threads(&t);
    let threads = threads_of(t.pid());
    assert!(threads.iter().any(|t| t.0.starts_with("tokend-expiry")), "{threads:?}");
    // The GEN's blocking thread lingers in tokio's pool for 10 s.
    assert!(named(&threads, "tokio-rt-worker").iter().any(|t| t.1 == 0), "a blocking thread: {threads:?}");
    assert_eq!(real_time(&threads), [&("tokend".to_string(), 1, 2)], "only the runtime's thread: {threads:?}");

    let t = Tokend::start_with_env(&["--port", "0", "--threads", "2", "--rt-priority", "1"], &[]);
    // Workers raise themselves when they first go idle, right after the
    // runtime starts: wait for both.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while real_time(&threads_of(t.pid())).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "workers not raised: {:?}", threads_of(t.pid()));
        std::thread::sleep(Duration::from_millis(10));
    }
    start_background_threads(&t);
    let threads = threads_of(t.pid());
    let raised = real_time(&threads);
    assert!(raised.iter().all(|t| t.1 == 1 && t.2 == 1), "{raised:?}");
    assert_eq!(raised.iter().filter(|t| t.0 == "tokend").count(), 1, "the main thread: {threads:?}");
    let pool = named(&threads, "tokio-rt-worker");
    assert_eq!(pool.iter().filter(|t| t.1 == 1).count(), 2, "both workers: {threads:?}");
    assert!(pool.iter().any(|t| t.1 == 0), "the GEN's blocking thread, at the normal policy: {threads:?}");
    assert_eq!(raised.len(), 3, "no expiry or free thread: {threads:?}");

    let t = Tokend::start_with_env(&["--port", "0"], &[]);
    assert_eq!(config_get(&t, "rt-priority"), "0");
    assert_eq!(real_time(&threads_of(t.pid())), Vec::<&(String, u32, u32)>::new(), "off by default");
}

/// A real-time thread that polled would keep every other thread off its
/// core: `--idle-poll-us` is refused with `--rt-priority`, at startup and
/// by CONFIG SET; napping (a sleep) is not.
#[test]
fn rt_priority_refuses_polling() {
    let conf = ConfFile::new("tokend.conf", "idle-poll-us 100\n");
    type Start<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let refused: [Start; 4] = [
        (&["--port", "0", "--rt-priority", "1", "--idle-poll-us", "100"], &[]),
        (&["--port", "0", "--rt-priority", "1"], &[("TOKEND_IDLE_POLL_US", "100")]),
        (&["--port", "0", "--idle-poll-us", "100"], &[("TOKEND_RT_PRIORITY", "1")]),
        (&["--port", "0", "--rt-priority", "1", "--config", conf.arg()], &[]),
    ];
    // One at a time: a failed check leaves no other tokend running.
    for (args, env) in refused {
        let out = wait_exit(Tokend::spawn(args, env));
        assert_eq!(out.0, Some(2), "stderr: {}", out.1);
        assert!(out.1.contains("--idle-poll-us cannot be used with --rt-priority"), "{}", out.1);
    }
    if !may_use_real_time() {
        return;
    }
    let t = Tokend::start_with_env(&["--port", "0", "--threads", "1", "--rt-priority", "1"], &[]);
    let mut con = redis::Client::open(t.url()).unwrap().get_connection().unwrap();
    for us in ["100", "+5"] {
        let err = redis::cmd("CONFIG").arg("SET").arg("idle-poll-us").arg(us).query::<()>(&mut con).unwrap_err();
        assert!(err.to_string().contains("polling cannot be used with rt-priority"), "{us}: {err}");
    }
    assert_eq!(config_get(&t, "idle-poll-us"), "0", "unchanged");
    let () = redis::cmd("CONFIG").arg("SET").arg("idle-poll-us").arg("0").query(&mut con).unwrap();
    let () = redis::cmd("CONFIG").arg("SET").arg("idle-nap-us").arg("100").query(&mut con).unwrap();
    assert_eq!(config_get(&t, "idle-nap-us"), "100");
}

/// Without the right to real-time scheduling (an `RLIMIT_RTPRIO` of 0, no
/// capability to pass on, and as root, `nobody`'s lack of capabilities),
/// tokend says what it needs and exits 1 rather than serving at another
/// priority than the one asked for.
#[test]
fn rt_priority_without_the_right_refuses_to_start() {
    procs::require("prlimit");
    procs::require("setpriv");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--rtprio=0", "setpriv"]);
    // Root gets every capability at exec: run as nobody instead.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
    }
    // A runner that is not root may still hold CAP_SYS_NICE (ambient, or
    // on the binary as a file capability). The first setpriv drops what
    // exec would pass on, so the second starts with no capabilities; its
    // no-new-privs then keeps exec from granting tokend any (a file
    // capability included: exec grants no more than the caller holds).
    cmd.args(["--inh-caps=-all", "--ambient-caps=-all", "setpriv", "--no-new-privs"]);
    cmd.arg(env!("CARGO_BIN_EXE_tokend"));
    let out = wait_exit(Tokend::spawn_cmd(cmd, &["--port", "0", "--rt-priority", "1"], &[]));
    assert_eq!(out.0, Some(1), "stderr: {}", out.1);
    assert!(out.1.contains("--rt-priority 1: cannot use SCHED_FIFO") && out.1.contains("CAP_SYS_NICE"), "{}", out.1);
}

/// A real-time server sharing one core with its expiry thread (the case
/// where a serving thread that waited on a normal thread by spinning or
/// yielding would stall): 300,000 tokens due together all expire, a
/// subscriber gets every event, and requests on another pool are answered
/// while the server is part-way through them.
#[test]
fn a_real_time_server_on_one_core_expires_everything_and_keeps_answering() {
    if !may_use_real_time() {
        let out = wait_exit(Tokend::spawn(&["--port", "0", "--rt-priority", "1"], &[]));
        assert_eq!(out.0, Some(1), "without the right it refuses to start; stderr: {}", out.1);
        return;
    }
    let t = Tokend::start_on_one_core(&["--threads", "1", "--rt-priority", "1", "--notify-keyspace-events", "Ex"]);
    let client = redis::Client::open(t.url()).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut sub = client.get_connection().unwrap();
    let events = std::thread::spawn(move || {
        let mut ps = sub.as_pubsub();
        ps.subscribe("__keyevent@0__:expired").unwrap();
        ps.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        ready_tx.send(()).unwrap();
        let mut n = 0;
        while n < 300_000 {
            let Ok(msg) = ps.get_message() else { break };
            let payload: String = msg.get_payload().unwrap();
            assert!(payload.starts_with("due:"), "{payload}");
            n += 1;
        }
        n
    });
    ready_rx.recv().unwrap();
    let mut con = client.get_connection().unwrap();
    let _: Vec<String> = redis::cmd("TOKEN.GEN").arg("probe").arg("COUNT").arg(10).query(&mut con).unwrap();
    // Cycles on the probe pool from before the GEN to the last event, each
    // followed by INFO's count of expired tokens: how far the drain was
    // when the server answered. (TOKEN.STATS of the expiring pool would
    // not tell: a command on a pool fires the pool's due tokens first.)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut probe_con = client.get_connection().unwrap();
    let probing = stop.clone();
    let probe = std::thread::spawn(move || {
        let mut expired = Vec::new();
        while !probing.load(std::sync::atomic::Ordering::Relaxed) {
            let id: String = redis::cmd("TOKEN.ACQUIRE").arg("probe").query(&mut probe_con).unwrap();
            let n: i64 = redis::cmd("TOKEN.UNBLOCK").arg("probe").arg(&id).query(&mut probe_con).unwrap();
            assert_eq!(n, 1);
            let info: redis::InfoDict = redis::cmd("INFO").arg("stats").query(&mut probe_con).unwrap();
            expired.push(info.get::<u64>("expired_tokens").unwrap());
        }
        expired
    });
    // 300,000 tokens due within a few milliseconds of each other (three
    // GENs in one pipeline, each due 300 ms after it ran): a drain long
    // enough that a probe on a busy test machine gets requests in.
    let mut pipe = redis::pipe();
    for _ in 0..3 {
        pipe.cmd("TOKEN.GEN").arg("due").arg("COUNT").arg(100_000).arg("PX").arg(300);
    }
    let made: Vec<Vec<String>> = pipe.query(&mut con).unwrap();
    assert_eq!(made.iter().map(Vec::len).sum::<usize>(), 300_000);
    let n = events.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let expired = probe.join().unwrap();
    assert_eq!(n, 300_000, "every expiry's event");
    let info: redis::InfoDict = redis::cmd("INFO").arg("stats").query(&mut con).unwrap();
    assert_eq!(info.get::<u64>("expired_tokens"), Some(300_000));
    // Answered in the middle of the drain: the server interleaved them.
    let during = expired.iter().filter(|&&n| n > 0 && n < 300_000).count();
    assert!(during > 0, "no probe cycle answered while the drain was under way ({} in all)", expired.len());
}

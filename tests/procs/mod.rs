//! Real processes for tests: a `redis-server` on a free port and the `tokend`
//! binary. Neither start-up is waited for with a sleep: redis-server is
//! polled with PING, tokend is read until it logs the address it listens on.
#![allow(dead_code)]

pub mod workload;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound then released; redis-server has no
/// "port 0 and tell me" mode).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The Python of the virtualenv scripts/setup.sh makes (.venv), with the
/// tests' packages pinned: redis-py, FastAPI and pydantic.
pub const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");

pub fn require(bin: &str) {
    let ok = Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(ok, "`{bin}` is not installed: run scripts/setup.sh (it installs what the tests need)");
}

/// A redis-server started for one test, in its own directory.
pub struct RedisProc {
    pub port: u16,
    child: Option<Child>,
    pub dir: PathBuf,
    aof: bool,
    /// More redis-server arguments (TLS, cluster mode…).
    extra: Vec<String>,
}

impl RedisProc {
    /// Starts redis-server with no persistence of its own.
    pub fn start() -> RedisProc {
        Self::start_inner(free_port(), false, None)
    }

    /// Starts redis-server with `appendfsync always`, so it survives kill -9.
    pub fn start_durable() -> RedisProc {
        Self::start_inner(free_port(), true, None)
    }

    /// Starts redis-server with more arguments (no persistence of its own).
    pub fn start_args(extra: &[&str]) -> RedisProc {
        require("redis-server");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tokend-test-redis-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut r = RedisProc { port, child: None, dir, aof: false, extra };
        r.spawn();
        r
    }

    fn start_inner(port: u16, aof: bool, dir: Option<PathBuf>) -> RedisProc {
        require("redis-server");
        let dir = dir.unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!("tokend-test-redis-{port}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("temp dir");
            d
        });
        let mut r = RedisProc { port, child: None, dir, aof, extra: Vec::new() };
        r.spawn();
        r
    }

    /// Starts redis-server with a TLS port too (`tls_port`), serving the
    /// certificate and key in `cert`/`key` (PEM); the plain port stays open
    /// for the test's own checks.
    pub fn start_tls(tls_port: u16, cert: &std::path::Path, key: &std::path::Path) -> RedisProc {
        let (port, cert, key) = (tls_port.to_string(), cert.to_str().unwrap(), key.to_str().unwrap());
        Self::start_args(&[
            "--tls-port",
            &port,
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            cert,
            "--tls-auth-clients",
            "no",
        ])
    }

    /// Starts the process (on this port, in this directory) and waits for PING.
    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port").arg(self.port.to_string()).arg("--bind").arg("127.0.0.1").arg("--save").arg("");
        cmd.arg("--dir").arg(&self.dir).arg("--logfile").arg(self.dir.join("redis.log"));
        cmd.args(&self.extra);
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        self.child = Some(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn redis-server"));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = redis::Client::open(self.url())
                && let Ok(mut con) = c.get_connection()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(15).collect();
                panic!("redis-server on {} did not start; its log ends:\n{}", self.port, tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A blocking connection (for checks).
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// Sends a signal (SIGSTOP: it hangs, keeping its connections open, as
    /// under a long fork or a network black hole; SIGCONT: it resumes).
    pub fn signal(&self, sig: libc::c_int) {
        signal_pid(self.pid(), sig);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it hard.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory with no data at all
    /// (a Redis restarted without persistence).
    pub fn restart_empty(&mut self) {
        self.kill();
        for f in ["appendonlydir", "dump.rdb"] {
            let p = self.dir.join(f);
            let _ = std::fs::remove_dir_all(&p);
            let _ = std::fs::remove_file(&p);
        }
        self.spawn();
    }

    /// Starts it again on the same port and directory (with AOF, its data is back).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A Redis Cluster of `redis-server --cluster-enabled yes` processes made
/// with `redis-cli --cluster create`, masters only.
pub struct RedisCluster {
    pub nodes: Vec<RedisProc>,
}

impl RedisCluster {
    /// Starts `masters` nodes, creates the cluster and waits until every
    /// node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        require("redis-cli");
        let nodes: Vec<RedisProc> = (0..masters)
            .map(|_| RedisProc::start_args(&["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .arg("--cluster-yes")
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut n.conn()).unwrap_or_default();
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the Redis Cluster did not come up: {info}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        RedisCluster { nodes }
    }

    /// The URL of its first node (tokend finds the others).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// A cluster client's blocking connection (for checks).
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(vec![self.url()]).unwrap().get_connection().unwrap()
    }
}

/// The tokend binary, started for one test.
pub struct Tokend {
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Lines tokend logged (collected by a thread).
    log: std::sync::Mutex<mpsc::Receiver<String>>,
    /// Lines logged before it was ready.
    early: std::sync::Mutex<Vec<String>>,
}

impl Tokend {
    /// Starts `tokend --port 0 <args>` and waits for its "ready" log line.
    pub fn start(args: &[&str]) -> Tokend {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        Tokend::start_with_env(&all, &[])
    }

    /// Starts `tokend <args>` (no `--port` added) with only `env` in its
    /// environment, and waits for its "ready" log line.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Tokend {
        Tokend::wait_ready(Tokend::spawn(args, env))
    }

    /// Starts `tokend --port 0 <args>` allowed to run on one CPU only
    /// (`taskset -c 0`), as a server pinned to a core is.
    pub fn start_on_one_core(args: &[&str]) -> Tokend {
        let mut cmd = Command::new("/usr/bin/taskset");
        cmd.args(["-c", "0", env!("CARGO_BIN_EXE_tokend"), "--port", "0"]);
        Tokend::wait_ready(Tokend::spawn_cmd(cmd, args, &[]))
    }

    /// Starts `tokend <args>` with only `env` in its environment (stderr piped).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
        Tokend::spawn_cmd(Command::new(env!("CARGO_BIN_EXE_tokend")), args, env)
    }

    /// Starts `cmd <args>` (a command that runs tokend) with only `env` in
    /// its environment (stderr piped).
    pub fn spawn_cmd(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Child {
        cmd.args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokend")
    }

    /// Waits for a spawned tokend's "ready" log line.
    pub fn wait_ready(child: Child) -> Tokend {
        Tokend::wait_for(child, "ready to accept connections addr=")
    }

    /// Starts `tokend --port 0 <args>` and returns as soon as it listens
    /// (with a backing Redis, before the dataset is loaded).
    pub fn start_listening(args: &[&str]) -> Tokend {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        Tokend::wait_for(Tokend::spawn(&all, &[]), "listening addr=")
    }

    /// Waits for a log line with `marker` followed by the address.
    fn wait_for(mut child: Child, marker: &str) -> Tokend {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("tokend did not become ready; it logged:\n{}", seen.join("\n"))
                }
            };
            if let Some(rest) = line.split(marker).nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                return Tokend {
                    addr,
                    child: Some(child),
                    log: std::sync::Mutex::new(rx),
                    early: std::sync::Mutex::new(seen),
                };
            }
            seen.push(line);
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Resident memory in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str, within: Duration) -> Option<String> {
        {
            let mut early = self.early.lock().unwrap();
            if let Some(i) = early.iter().position(|l| l.contains(needle)) {
                return Some(early.remove(i));
            }
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.lock().unwrap().recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// An async multiplexed connection with a 10 s response timeout: the
    /// crate's default of 500 ms cuts short a big reply (a GEN COUNT
    /// 100000 is 3.7 MB) on a loaded machine.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection_with_config(&config).await.unwrap()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (SIGSTOP, SIGCONT…); returns once a SIGSTOP has stopped
    /// every thread.
    pub fn signal(&self, sig: libc::c_int) {
        signal_pid(self.pid(), sig);
    }

    /// Waits (bounded) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("tokend did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM; returns the exit status once it exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill(2) with a pid we spawned and still own (not reaped).
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            assert!(Instant::now() < deadline, "tokend did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::mem::take(&mut *self.early.lock().unwrap());
        v.extend(self.log.lock().unwrap().try_iter());
        v
    }
}

impl Drop for Tokend {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends `sig` to a child we spawned and have not reaped. kill(2) returns
/// before a SIGSTOP takes effect: a thread already running keeps running
/// until the kernel next looks at its signals, so for SIGSTOP this waits
/// until /proc shows every thread stopped; what is sent to the process after
/// this returns is not read before SIGCONT.
pub fn signal_pid(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and still own (not reaped).
    unsafe { libc::kill(pid as libc::pid_t, sig) };
    if sig != libc::SIGSTOP {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
            tasks.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // The state follows the parenthesised command name.
                stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not stop within 5 s of SIGSTOP");
        std::thread::sleep(Duration::from_millis(1));
    }
}

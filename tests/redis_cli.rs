//! The real `tokend` binary driven by the real `redis-cli` binary.
//!
//! The binary is started with `--port 0`; the test reads the port from its
//! `tokend ready to accept connections addr=…` log line (no sleeping, no
//! port race). Requires `redis-cli` on PATH (`scripts/setup.sh` installs it).

mod common;

use common::assert_uuid_v4;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Fails with a helpful message when redis-cli is missing.
fn require_redis_cli() {
    match Command::new("redis-cli").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("`redis-cli --version` failed: {o:?}"),
        Err(e) => panic!("redis-cli is not on PATH ({e}): run scripts/setup.sh to install redis-tools"),
    }
}

/// Removes ANSI escape sequences (in case the log is colored).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running `tokend` process.
struct Tokend {
    child: Child,
    port: u16,
    /// Everything it logged so far (stderr).
    log: Arc<Mutex<String>>,
}

impl Tokend {
    fn start(extra: &[&str]) -> Tokend {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("TOKEND_PORT")
            .env_remove("TOKEND_REQUIREPASS")
            .env_remove("TOKEND_REDIS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the tokend binary");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<u16>();
        let log2 = log.clone();
        // Keeps draining stderr for the life of the process.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
                if line.contains("tokend ready to accept connections")
                    && let Some(port) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("tokend did not log its address within 20 s; its log:\n{}", log.lock().unwrap());
            }
        };
        assert_ne!(port, 0);
        Tokend { child, port, log }
    }

    fn cli_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("redis-cli");
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args).stdin(Stdio::null());
        c
    }

    /// Runs redis-cli with `args`; returns its output.
    fn cli(&self, args: &[&str]) -> Output {
        let out = self.cli_cmd(args).output().expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?} failed: {out:?}");
        out
    }

    /// redis-cli's stdout as text.
    fn cli_out(&self, args: &[&str]) -> String {
        String::from_utf8(self.cli(args).stdout).expect("utf-8 output")
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    fn sigterm(&mut self, within: Duration) -> (ExitStatus, Duration) {
        // SAFETY: kill(2) with a pid we spawned and still own (not reaped).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for tokend") {
                return (status, start.elapsed());
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("tokend did not exit within {within:?} of SIGTERM; its log:\n{}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Tokend {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn redis_cli_acceptance_flow() {
    require_redis_cli();
    let mut d = Tokend::start(&[]);

    let out = d.cli_out(&["TOKEN.GEN", "p"]);
    let t = assert_uuid_v4(out.trim_end_matches('\n'));
    assert_eq!(out, format!("{t}\n"), "one line: the token");

    assert_eq!(d.cli_out(&["TOKEN.ACQUIRE", "p", "PX", "200"]), format!("{t}\n"));
    assert_eq!(d.cli_out(&["TOKEN.ACQUIRE", "p", "PX", "200"]), "\n", "nil prints an empty line");
    assert_eq!(d.cli_out(&["--no-raw", "TOKEN.ACQUIRE", "p"]), "(nil)\n");
    assert_eq!(d.cli_out(&["TOKEN.UNBLOCK", "p", &t]), "1\n");
    let again = d.cli_out(&["TOKEN.UNBLOCK", "p", &t]);
    assert!(again.starts_with("NOTASSIGNED"), "{again:?}");
    let nope = d.cli_out(&["TOKEN.KEEPALIVE", "p", "nope"]);
    assert!(nope.starts_with("NOTOKEN"), "{nope:?}");
    let unknown = d.cli_out(&["NOSUCH", "x"]);
    assert_eq!(unknown.trim_end(), "ERR unknown command 'NOSUCH', with args beginning with: 'x'");

    // RESP2 raw: the flat field/value list, one per line.
    let s = d.cli_out(&["TOKEN.STATS", "p"]);
    assert_eq!(s, "total\n1\nfree\n1\nassigned\n0\nexpired-remembered\n0\nblocked-waiters\n0\n");
    // RESP3 (redis-cli 7.0 spells it -3; there is no --resp3): a map, printed
    // as "field value" lines.
    let s = d.cli_out(&["-3", "TOKEN.STATS", "p"]);
    assert_eq!(s, "total 1\nfree 1\nassigned 0\nexpired-remembered 0\nblocked-waiters 0\n");
    let s = d.cli_out(&["-3", "--no-raw", "TOKEN.STATS", "p"]);
    assert!(s.contains("1# \"total\" => (integer) 1"), "RESP3 map with integer values:\n{s}");
    let s = d.cli_out(&["--json", "TOKEN.STATS", "p"]);
    assert_eq!(
        s.trim_end(),
        r#"{"total":1,"free":1,"assigned":0,"expired-remembered":0,"blocked-waiters":0}"#,
        "--json (RESP3)"
    );
    let info = d.cli_out(&["-3", "TOKEN.INFO", "p", &t]);
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines[0], "state free", "{info}");
    assert!(lines[1].starts_with("lifetime-left-ms "), "{info}");
    assert_eq!(lines[2], "lease-left-ms -1", "{info}");
    assert_eq!(lines[3], "times-acquired 1", "{info}");

    let (status, took) = d.sigterm(Duration::from_secs(5));
    eprintln!("tokend exited {took:?} after SIGTERM with {status}");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; log:\n{}", d.log());
}

#[test]
fn command_docs_describe_the_token_commands() {
    require_redis_cli();
    let mut d = Tokend::start(&[]);
    let docs = d.cli_out(&["COMMAND", "DOCS", "TOKEN.ACQUIRE"]);
    assert!(
        docs.contains("pool") && docs.contains("BLOCK"),
        "COMMAND DOCS TOKEN.ACQUIRE should describe its arguments (pool, EX|PX, BLOCK); got:\n{docs:?}"
    );
    let n = d.cli_out(&["COMMAND", "COUNT"]);
    let n: i64 = n.trim().parse().unwrap_or_else(|_| panic!("COMMAND COUNT: {n:?}"));
    assert!(n >= 8, "COMMAND COUNT counts at least the 8 TOKEN commands: {n}");
    // COMMAND INFO: name, arity -2, then first key 1, last key 1, step 1
    // (the pool is the key), and a key spec, as Redis lays it out.
    let info = d.cli_out(&["--json", "COMMAND", "INFO", "TOKEN.ACQUIRE"]);
    assert!(info.starts_with(r#"[["token.acquire",-2,["#), "COMMAND INFO TOKEN.ACQUIRE:\n{info}");
    assert!(info.contains("],1,1,1,["), "the pool is key 1 (first 1, last 1, step 1):\n{info}");
    assert!(info.contains(r#""begin_search":{"type":"index","spec":{"index":1}}"#), "key spec:\n{info}");
    let (status, _) = d.sigterm(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

/// redis-cli in interactive mode (it needs a terminal: `script` provides one)
/// fetches `COMMAND DOCS` at start-up to build its hints, and redis-cli 7.0
/// aborts if the reply's types are not exactly Redis's.
#[test]
fn interactive_redis_cli_starts_and_runs_commands() {
    require_redis_cli();
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed to give redis-cli a terminal");
    }
    let mut d = Tokend::start(&[]);
    let cli = format!("redis-cli -h 127.0.0.1 -p {}", d.port);
    let mut child = Command::new("script")
        .args(["-qec", &cli, "/dev/null"])
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"TOKEN.GEN p\nTOKEN.STATS p\nquit\n").unwrap();
    }
    drop(child.stdin.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("interactive redis-cli did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "interactive redis-cli exited with {status}:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("Assertion") && !stderr.contains("Assertion"), "redis-cli aborted:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"total\""), "TOKEN.STATS output missing:\n{stdout}");
    // The prompt precedes each reply: `127.0.0.1:PORT> "<token>"`.
    let token = stdout
        .split(|c: char| c.is_whitespace() || c == '"')
        .find(|w| w.len() == 36 && w.as_bytes()[8] == b'-' && w.as_bytes()[14] == b'4');
    assert!(token.is_some(), "TOKEN.GEN output missing:\n{stdout}");
    assert!(stdout.contains("(integer) 1"), "TOKEN.STATS output missing:\n{stdout}");
    let (status, _) = d.sigterm(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

/// A client blocked forever in TOKEN.ACQUIRE must not hold up a graceful
/// shutdown: the server closes it and exits promptly.
#[test]
fn sigterm_with_a_blocked_client_exits_promptly() {
    require_redis_cli();
    let mut d = Tokend::start(&[]);
    let mut blocked = d
        .cli_cmd(&["TOKEN.ACQUIRE", "p", "BLOCK", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    // Wait until the server has the waiter (a condition, not a sleep).
    let start = Instant::now();
    loop {
        let s = d.cli_out(&["TOKEN.STATS", "p"]);
        if s.ends_with("blocked-waiters\n1\n") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the client never blocked: {s}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, took) = d.sigterm(Duration::from_secs(15));
    let _ = blocked.kill();
    let _ = blocked.wait();
    eprintln!("tokend exited {took:?} after SIGTERM with a blocked client");
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    assert!(
        took < Duration::from_secs(3),
        "graceful shutdown waited {took:?} for a client blocked in TOKEN.ACQUIRE … BLOCK 0"
    );
}

#[test]
fn requirepass_through_redis_cli() {
    require_redis_cli();
    let mut d = Tokend::start(&["--requirepass", "pw"]);
    let out = d.cli_out(&["TOKEN.GEN", "p"]);
    assert!(out.starts_with("NOAUTH"), "{out:?}");
    let out = d.cli_out(&["--no-auth-warning", "-a", "pw", "TOKEN.GEN", "p"]);
    assert_uuid_v4(out.trim_end());
    let out = d.cli_out(&["--no-auth-warning", "-a", "pw", "-3", "TOKEN.STATS", "p"]);
    assert!(out.starts_with("total 1\n"), "{out:?}");
    let (status, _) = d.sigterm(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

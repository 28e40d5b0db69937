//! The examples in examples/ run against a live tokend: Python (redis-py),
//! Node (ioredis), Rust (the redis crate) and curl over the HTTP API. Each
//! exits 0 only if every answer and every notification it waits for came.

mod procs;

use procs::Tokend;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` (at most a minute); panics with its output unless it exits 0.
fn run(mut cmd: Command, what: &str) -> String {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start it ({e}): run scripts/setup.sh"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within 60 s:\n{}{}", out.join().unwrap(), err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{what} failed:\n{text}");
    text
}

fn server() -> (Tokend, SocketAddr) {
    let t = Tokend::start(&["--http-addr", "127.0.0.1:0"]);
    let line = t.wait_log("serving the HTTP API", Duration::from_secs(5)).expect("HTTP log line");
    let http = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    (t, http)
}

#[test]
fn python_example() {
    let (t, _) = server();
    let mut cmd = Command::new(procs::PYTHON);
    cmd.arg(root().join("examples/python/lifecycle.py")).args(["127.0.0.1", &t.addr.port().to_string()]);
    let out = run(cmd, "examples/python/lifecycle.py");
    assert!(out.contains("leaseexpired event for") && out.contains("received"), "{out}");
}

#[test]
fn node_example() {
    let dir = root().join("examples/node");
    assert!(dir.join("node_modules/ioredis").is_dir(), "examples/node has no node_modules: run scripts/setup.sh");
    let (t, _) = server();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("lifecycle.js")).args(["127.0.0.1", &t.addr.port().to_string()]);
    let out = run(cmd, "examples/node/lifecycle.js");
    assert!(out.contains("received"), "{out}");
}

/// The Rust example, built by cargo as an example of this package.
#[test]
fn rust_example() {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/lifecycle
    let bin: PathBuf = exe.parent().and_then(Path::parent).unwrap().join("examples").join("lifecycle");
    if !bin.exists() {
        // `cargo test` builds examples with the tests; a test run that
        // selected only some targets may not have.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(root()).args(["build", "--example", "lifecycle"]);
        run(build, "cargo build --example lifecycle");
    }
    assert!(bin.exists(), "{} is not built", bin.display());
    let (t, _) = server();
    let mut cmd = Command::new(bin);
    cmd.arg(t.url());
    let out = run(cmd, "examples/lifecycle.rs");
    assert!(out.contains("event leaseexpired"), "{out}");
}

#[test]
fn curl_example() {
    let (_t, http) = server();
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("examples/curl/lifecycle.sh")).arg(format!("http://{http}"));
    let out = run(cmd, "examples/curl/lifecycle.sh");
    assert!(out.contains("ok ("), "{out}");
}

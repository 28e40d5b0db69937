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
        assert!(std::time::Instant::now() < deadline, "tokend did not exit");
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

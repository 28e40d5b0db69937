//! The old service's HTTP API over real HTTP against the real binary: every
//! endpoint and error with its body byte for byte, FastAPI's 422s replayed
//! from a recording of FastAPI itself, durability of HTTP writes, 200
//! concurrent clients, the OpenAPI document, /docs rendered by headless
//! Chromium with no network, and `tokend import-seed` from a Redis filled
//! the way the old service filled it.

mod common;
mod procs;

use base64::Engine;
use procs::{RedisProc, Tokend};
use redis::aio::MultiplexedConnection;
use reqwest::{Method, StatusCode};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A tokend with the HTTP API on a free port; its HTTP address.
fn start(extra: &[&str]) -> (Tokend, SocketAddr) {
    let mut args = vec!["--http-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let t = Tokend::start(&args);
    let line = t.wait_log("serving the HTTP API", Duration::from_secs(5)).expect("HTTP log line");
    let addr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    (t, addr)
}

/// One request; (status, body).
async fn call(addr: SocketAddr, method: Method, path: &str, body: Option<&str>) -> (StatusCode, String) {
    let c = reqwest::Client::new();
    let mut req = c.request(method, format!("http://{addr}{path}"));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status();
    if status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED {
        assert_eq!(resp.headers().get("content-type").map(|v| v.to_str().unwrap()), Some("application/json"), "{path}");
    }
    (status, resp.text().await.unwrap())
}

fn body(token: &str) -> String {
    format!("{{\"token\": \"{token}\"}}")
}

#[tokio::test]
async fn every_endpoint_answers_as_the_old_service_did() {
    let (t, http) = start(&[]);
    let mut c = t.conn().await;
    use Method as M;
    let ok = |s: &str| (StatusCode::OK, s.to_string());
    let bad = |s: &str| (StatusCode::BAD_REQUEST, format!("{{\"detail\":\"{s}\"}}"));

    assert_eq!(call(http, M::GET, "/token/acquireToken", None).await, bad("No available tokens"));
    assert_eq!(call(http, M::POST, "/token/generateToken", None).await, ok("\"token successfully generated\""));
    let stats: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("default").query_async(&mut c).await.unwrap();
    assert_eq!(stats["free"], 1, "the pool is --http-pool's default, `default`");

    let (status, text) = call(http, M::GET, "/token/acquireToken", None).await;
    assert_eq!(status, StatusCode::OK);
    let token = text.strip_prefix("{\"token\":\"").and_then(|r| r.strip_suffix("\"}")).expect(&text).to_string();
    assert!(uuid::Uuid::parse_str(&token).is_ok(), "{text}");
    let info: HashMap<String, redis::Value> =
        redis::cmd("TOKEN.INFO").arg("default").arg(&token).query_async(&mut c).await.unwrap();
    assert_eq!(info["state"], redis::Value::BulkString(b"assigned".to_vec()));

    let keep = format!("\"Token token=UUID('{token}') has received keep alive signal\"");
    assert_eq!(call(http, M::PUT, "/token/keepAlive", Some(&body(&token))).await, ok(&keep));
    // Any form of the UUID that Python accepts names the same token.
    let upper = body(&token.to_uppercase().replace('-', ""));
    assert_eq!(call(http, M::PUT, "/token/keepAlive", Some(&upper)).await, ok(&keep));

    let unblocked = format!("\"{token} has been unblocked\"");
    assert_eq!(call(http, M::PUT, "/token/unblockToken", Some(&body(&token))).await, ok(&unblocked));
    let not_assigned = bad("This token is not assigned and hence cannot be unblocked");
    assert_eq!(call(http, M::PUT, "/token/unblockToken", Some(&body(&token))).await, not_assigned);
    assert_eq!(call(http, M::PUT, "/token/unblock", Some(&body(&token))).await, not_assigned);
    let (_, again) = call(http, M::GET, "/token/acquireToken", None).await;
    assert_eq!(again, format!("{{\"token\":\"{token}\"}}"), "the only token");
    assert_eq!(call(http, M::PUT, "/token/unblock", Some(&body(&token))).await, ok(&unblocked));

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(call(http, M::PUT, "/token/keepAlive", Some(&body(&unknown))).await, bad("No such token found"));
    assert_eq!(call(http, M::PUT, "/token/unblockToken", Some(&body(&unknown))).await, bad("No such token present"));
    assert_eq!(
        call(http, M::DELETE, "/token/deleteToken", Some(&body(&unknown))).await,
        bad("No such token in system")
    );

    let deleted = format!("\"{token} has been deleted\"");
    assert_eq!(call(http, M::DELETE, "/token/deleteToken", Some(&body(&token))).await, ok(&deleted));
    assert_eq!(call(http, M::DELETE, "/token/deleteToken", Some(&body(&token))).await, bad("No such token in system"));

    // Expired tokens, remembered, then forgotten by deleteExpiredToken.
    let _: Vec<String> =
        redis::cmd("TOKEN.GEN").arg("default").arg("PX").arg(10).arg("COUNT").arg(2).query_async(&mut c).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("default").query_async(&mut c).await.unwrap();
        if s["expired-remembered"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(call(http, M::DELETE, "/token/deleteExpiredToken", None).await, ok("\"2 expired tokens deleted\""));
    assert_eq!(call(http, M::DELETE, "/token/deleteExpiredToken", None).await, ok("\"0 expired tokens deleted\""));

    // ?pool= picks another pool.
    assert_eq!(
        call(http, M::POST, "/token/generateToken?pool=other", None).await,
        ok("\"token successfully generated\"")
    );
    let other: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("other").query_async(&mut c).await.unwrap();
    assert_eq!(other["total"], 1);
    assert_eq!(call(http, M::GET, "/token/acquireToken", None).await, bad("No available tokens"));
    let (status, _) = call(http, M::GET, "/token/acquireToken?pool=other", None).await;
    assert_eq!(status, StatusCode::OK);
    // A repeated parameter: the last one, as Starlette reads it.
    let (status, _) = call(http, M::POST, "/token/generateToken?pool=first&pool=other", None).await;
    assert_eq!(status, StatusCode::OK);
    let other: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("other").query_async(&mut c).await.unwrap();
    assert_eq!(other["total"], 2);
    let first: i64 = redis::cmd("EXISTS").arg("first").query_async(&mut c).await.unwrap();
    assert_eq!(first, 0);

    // FastAPI's 404 and 405.
    assert_eq!(call(http, M::GET, "/nope", None).await, (StatusCode::NOT_FOUND, "{\"detail\":\"Not Found\"}".into()));
    assert_eq!(
        call(http, M::GET, "/token/keepAlive", None).await,
        (StatusCode::METHOD_NOT_ALLOWED, "{\"detail\":\"Method Not Allowed\"}".into())
    );
}

/// The bodies FastAPI itself answered for malformed requests (recorded by
/// tests/fixtures/fastapi/record.py), replayed: same status, same bytes.
#[tokio::test]
async fn malformed_bodies_get_fastapis_exact_answers() {
    let (_t, http) = start(&[]);
    let client = reqwest::Client::new();
    let fixture = include_str!("fixtures/fastapi/fastapi_422.jsonl");
    let mut checked = 0;
    for line in fixture.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let status = case["status"].as_u64().unwrap() as u16;
        if status == 200 {
            // Valid bodies: FastAPI's app answered "valid"; tokend looks the
            // token up (unknown here), which is not a validation error.
            continue;
        }
        let method = Method::from_bytes(case["method"].as_str().unwrap().as_bytes()).unwrap();
        let body = base64::engine::general_purpose::STANDARD.decode(case["body_b64"].as_str().unwrap()).unwrap();
        let mut req =
            client.request(method, format!("http://{http}{}", case["path"].as_str().unwrap())).body(body.clone());
        if let Some(ct) = case["content_type"].as_str() {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let got = (resp.status().as_u16(), resp.text().await.unwrap());
        assert_eq!(
            got,
            (status, case["response"].as_str().unwrap().to_string()),
            "body {:?}",
            String::from_utf8_lossy(&body)
        );
        checked += 1;
    }
    assert!(checked >= 90, "{checked}");
    // Every valid form still reaches the command (an unknown token here).
    for line in fixture.lines().filter(|l| l.contains("\"status\": 200")) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let body = base64::engine::general_purpose::STANDARD.decode(case["body_b64"].as_str().unwrap()).unwrap();
        let method = Method::from_bytes(case["method"].as_str().unwrap().as_bytes()).unwrap();
        let mut req = client.request(method, format!("http://{http}{}", case["path"].as_str().unwrap())).body(body);
        if let Some(ct) = case["content_type"].as_str() {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{line}");
    }
}

/// In sync mode an HTTP answer means the change is in the backing Redis:
/// what was answered survives kill -9.
#[tokio::test]
async fn http_writes_are_durable_before_they_are_answered() {
    let redis = RedisProc::start();
    let port = procs::free_port().to_string();
    let args = ["--port", &port, "--http-addr", "127.0.0.1:0", "--redis", &redis.url(), "--durability", "sync"];
    let mut t = Tokend::start_with_env(&args, &[]);
    let line = t.wait_log("serving the HTTP API", Duration::from_secs(5)).unwrap();
    let http: SocketAddr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    for _ in 0..20 {
        assert_eq!(call(http, Method::POST, "/token/generateToken", None).await.0, StatusCode::OK);
    }
    let (_, acquired) = call(http, Method::GET, "/token/acquireToken", None).await;
    let token = acquired.strip_prefix("{\"token\":\"").and_then(|r| r.strip_suffix("\"}")).unwrap().to_string();
    t.kill9();
    let t = Tokend::start_with_env(&["--port", &port, "--redis", &redis.url()], &[]);
    let mut c = t.conn().await;
    let stats: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("default").query_async(&mut c).await.unwrap();
    assert_eq!((stats["total"], stats["assigned"]), (20, 1));
    let info: HashMap<String, redis::Value> =
        redis::cmd("TOKEN.INFO").arg("default").arg(&token).query_async(&mut c).await.unwrap();
    assert_eq!(info["state"], redis::Value::BulkString(b"assigned".to_vec()));
}

/// 200 clients acquiring and unblocking over HTTP: no token is ever held by
/// two of them, and every token is free at the end.
#[tokio::test]
async fn two_hundred_http_clients_never_share_a_token() {
    let (t, http) = start(&[]);
    let mut c = t.conn().await;
    let _: Vec<String> = redis::cmd("TOKEN.GEN").arg("default").arg("COUNT").arg(50).query_async(&mut c).await.unwrap();
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let acquired = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = reqwest::Client::builder().pool_max_idle_per_host(200).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (held, acquired, client) = (held.clone(), acquired.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                let resp = client.get(format!("http://{http}/token/acquireToken")).send().await.unwrap();
                let status = resp.status();
                let text = resp.text().await.unwrap();
                if status == StatusCode::BAD_REQUEST {
                    assert_eq!(text, "{\"detail\":\"No available tokens\"}");
                    continue;
                }
                assert_eq!(status, StatusCode::OK, "{text}");
                let token = text.strip_prefix("{\"token\":\"").and_then(|r| r.strip_suffix("\"}")).unwrap().to_string();
                assert!(held.lock().unwrap().insert(token.clone()), "{token} handed to two clients at once");
                acquired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
                // Released from the set before the server frees it.
                held.lock().unwrap().remove(&token);
                let resp = client
                    .put(format!("http://{http}/token/unblockToken"))
                    .header("content-type", "application/json")
                    .body(body(&token))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(acquired.load(std::sync::atomic::Ordering::Relaxed) >= 50, "tokens went round");
    let stats: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("default").query_async(&mut c).await.unwrap();
    assert_eq!((stats["total"], stats["free"], stats["assigned"]), (50, 50, 0));
}

#[tokio::test]
async fn openapi_json_describes_every_endpoint() {
    let (_t, http) = start(&[]);
    let resp = reqwest::get(format!("http://{http}/openapi.json")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut ops: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    ops.sort();
    assert_eq!(
        ops,
        [
            "DELETE /token/deleteExpiredToken",
            "DELETE /token/deleteToken",
            "GET /token/acquireToken",
            "POST /token/generateToken",
            "PUT /token/keepAlive",
            "PUT /token/unblock",
            "PUT /token/unblockToken",
        ]
    );
    let keep = &doc["paths"]["/token/keepAlive"]["put"];
    assert!(keep["requestBody"].is_object(), "{keep}");
    for code in ["200", "400", "422"] {
        assert!(keep["responses"][code].is_object(), "keepAlive {code}");
    }
}

/// /docs in headless Chromium whose resolver fails every name but loopback:
/// the page renders and lists the endpoints from assets in the binary.
#[tokio::test]
async fn docs_render_in_a_browser_with_no_network() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("chromium is not installed: run scripts/setup.sh");
    let (_t, http) = start(&[]);
    let profile = tempdir();
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Nothing but loopback resolves: an asset fetched from the
            // internet would fail, and the page would not render.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{http}/docs/"))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out).await.expect("chromium finished").unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dom.contains("swagger-ui"), "not Swagger UI: {dom}");
    for path in [
        "/token/generateToken",
        "/token/acquireToken",
        "/token/keepAlive",
        "/token/unblockToken",
        "/token/deleteToken",
        "/token/deleteExpiredToken",
    ] {
        assert!(dom.contains(&format!("data-path=\"{path}\"")), "{path} is not rendered:\n{dom}");
    }
    assert!(dom.contains("tokend HTTP API"), "the title from /openapi.json");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tokend-chromium-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn a_password_protects_the_http_api_too() {
    let (_t, http) = start(&["--requirepass", "s3cret"]);
    let url = format!("http://{http}/token/generateToken");
    let c = reqwest::Client::new();
    let r = c.post(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.text().await.unwrap(), "{\"detail\":\"Not authenticated\"}");
    let r = c.post(&url).header("authorization", "Bearer wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.post(&url).header("authorization", "Bearer s3cret").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret");
    let r = c.post(&url).header("authorization", format!("Basic {basic}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Endpoints with a body check the password before they read it.
    for path in ["unblockToken", "keepAlive", "unblock"] {
        let r = c.put(format!("http://{http}/token/{path}")).body("not json").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = c.delete(format!("http://{http}/token/deleteExpiredToken")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// A body nested far beyond what Python's decoder reads is a 400, as
/// FastAPI answers it, and the server goes on serving (such a body once
/// overflowed the stack of the thread that read it, and the process died).
#[tokio::test]
async fn a_body_nested_a_million_deep_is_refused_and_the_server_lives() {
    let (_t, http) = start(&[]);
    let c = reqwest::Client::new();
    for body in ["[".repeat(1 << 20), format!("{{\"token\": {}", "{\"a\": ".repeat(300_000))] {
        let r = c
            .put(format!("http://{http}/token/keepAlive"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.text().await.unwrap(), "{\"detail\":\"There was an error parsing the body\"}");
    }
    assert_eq!(call(http, Method::POST, "/token/generateToken", None).await.0, StatusCode::OK);
}

/// Protected mode (no password) on a dual-stack listener: an IPv4 loopback
/// client arrives as an IPv4-mapped IPv6 address and is let in, as on the
/// RESP port.
#[tokio::test]
async fn protected_mode_lets_loopback_in_on_a_dual_stack_listener() {
    let t = Tokend::start(&["--http-addr", "[::]:0"]);
    let line = t.wait_log("serving the HTTP API", Duration::from_secs(5)).expect("HTTP log line");
    let addr: SocketAddr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    for host in ["127.0.0.1", "[::1]"] {
        let r = reqwest::Client::new()
            .post(format!("http://{host}:{}/token/generateToken", addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }
}

/// A Redis filled by the old service's own commands (10k tokens, some
/// assigned, some whose lifetime key vanished), imported, checked token by
/// token, imported again with nothing changed.
#[tokio::test]
async fn import_seed_brings_the_old_tokens_over_once() {
    let old = RedisProc::start();
    let seeded = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/old_service/seed.py"))
        .args([old.port.to_string(), "10000".into(), "3000".into(), "100".into()])
        .output()
        .expect("python3 (scripts/setup.sh installs redis-py)");
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let states: Vec<(String, String)> = String::from_utf8(seeded.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (t, s) = l.split_once(' ').unwrap();
            (t.to_string(), s.to_string())
        })
        .collect();
    assert_eq!(states.len(), 10_000);

    let t = Tokend::start(&[]);
    let import = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tokend"));
        cmd.args(["import-seed", "--from", &old.url(), "--to", &t.url(), "--pool", "legacy"]).args(extra);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (report, progress) = import(&[]);
    assert!(report.contains("imported: 6900 free, 3000 assigned"), "{report}");
    assert!(report.contains("already in the pool (left as they are): 0"), "{report}");
    assert!(report.contains("not imported: 100"), "{report}");
    assert!(report.contains("100: its lifetime key token:<uuid>:tokens is gone (the token is dead)"), "{report}");
    assert!(progress.contains("import-seed: 10000/10000 tokens"), "plain progress lines off a terminal: {progress}");

    // Token by token: same state, same time left (within 1 s).
    let mut c = t.conn().await;
    let mut o = redis::Client::open(old.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    for (token, state) in &states {
        let info: redis::RedisResult<HashMap<String, redis::Value>> =
            redis::cmd("TOKEN.INFO").arg("legacy").arg(token).query_async(&mut c).await;
        if state == "orphan" {
            assert_eq!(info.unwrap_err().code(), Some("NOTOKEN"), "{token}");
            continue;
        }
        let info = info.unwrap();
        let int = |k: &str| match &info[k] {
            redis::Value::Int(i) => *i,
            v => panic!("{k}: {v:?}"),
        };
        let s = match &info["state"] {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            v => panic!("{v:?}"),
        };
        assert_eq!(&s, state, "{token}");
        let life: i64 = pttl(&mut o, &format!("token:{token}:tokens")).await;
        assert!((int("lifetime-left-ms") - life).abs() <= 1000, "{token}: {} vs {life}", int("lifetime-left-ms"));
        if state == "assigned" {
            let lease = pttl(&mut o, &format!("token:{token}:assigned")).await;
            assert!((int("lease-left-ms") - lease).abs() <= 1000, "{token}: {} vs {lease}", int("lease-left-ms"));
            assert_eq!(int("times-acquired"), 1);
        }
    }

    // Again: nothing changes.
    let before: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("legacy").query_async(&mut c).await.unwrap();
    let (report, _) = import(&["--batch", "777"]);
    assert!(report.contains("imported: 0 free, 0 assigned"), "{report}");
    assert!(report.contains("already in the pool (left as they are): 9900"), "{report}");
    let after: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg("legacy").query_async(&mut c).await.unwrap();
    assert_eq!(before, after);
    assert_eq!((after["total"], after["assigned"]), (9900, 3000));
}

async fn pttl(c: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(c).await.unwrap()
}

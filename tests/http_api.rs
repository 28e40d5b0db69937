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

/// Runs a script of tests/fixtures/fastapi with a Python on lines of its
/// standard input; its JSON line for each.
fn python_verdicts(python: &str, script: &str, lines: &[String]) -> Vec<serde_json::Value> {
    python_verdicts_with(python, script, &[], lines)
}

fn python_verdicts_with(python: &str, script: &str, args: &[&str], lines: &[String]) -> Vec<serde_json::Value> {
    use std::io::{BufRead, Write};
    procs::require(python);
    let mut py = std::process::Command::new(python)
        .arg(format!("{}/tests/fixtures/fastapi/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the tests' Python (scripts/setup.sh makes .venv)");
    let mut stdin = py.stdin.take().unwrap();
    let input: String = lines.iter().map(|l| l.clone() + "\n").collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let verdicts: Vec<serde_json::Value> = std::io::BufReader::new(py.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    // The script's failure first: a script that died also broke the pipe.
    let written = writer.join().unwrap();
    assert!(py.wait().unwrap().success(), "{script} failed (scripts/setup.sh installs what it needs)");
    written.unwrap();
    assert_eq!(verdicts.len(), lines.len());
    verdicts
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The body reader against CPython 3.11's own `json.loads`
/// (tests/fixtures/fastapi/loads.py): 30,000 generated bodies, valid and
/// broken, in every encoding Python detects, get the same value, the same
/// error at the same character, or are unreadable to both.
#[test]
fn bodies_are_read_as_cpython_reads_them() {
    use tokend::http::pyjson::{self, Bad};
    let all = bodies::many(20261204, 30_000);
    let lines: Vec<String> = all.iter().map(|b| b64(b)).collect();
    let verdicts = python_verdicts(procs::PYTHON, "loads.py", &lines);
    let mut differ = Vec::new();
    let mut kinds = [0usize; 3];
    for (body, py) in all.iter().zip(&verdicts) {
        let ours = pyjson::loads(body);
        let agree = match (&ours, py) {
            (Ok(v), py) if py.get("ok").is_some() => {
                kinds[0] += 1;
                same(v, &py["ok"])
            }
            (Err(Bad::Decode(pos, msg)), py) if py.get("err").is_some() => {
                kinds[1] += 1;
                py["err"] == serde_json::json!([pos, msg])
            }
            (Err(Bad::Unreadable), py) => {
                kinds[2] += 1;
                py.get("un").is_some()
            }
            _ => false,
        };
        if !agree {
            differ.push(format!("{:?}: tokend {ours:?}, Python {py}", String::from_utf8_lossy(body)));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} bodies read differently, first ones:\n{}",
        differ.len(),
        all.len(),
        differ[..differ.len().min(20)].join("\n")
    );
    // The generator reaches all three verdicts, each often.
    assert!(kinds.iter().all(|&k| k > 500), "values, errors, unreadable: {kinds:?}");
}

/// The real server against FastAPI itself, live (the old service's model
/// in tests/fixtures/fastapi/answers.py): 4,000 generated bodies, half of
/// them `{"token": …}` with the token in the forms a client sends or
/// breaks, one in five with another content type or none, get FastAPI's
/// status and body byte for byte. Four answers differ, as documented: where
/// FastAPI accepts the body tokend runs the command (400 here: the token is
/// unknown); where FastAPI fails with a 500 (echoing NaN or a lone
/// surrogate, or a body it does not read as JSON that is not UTF-8) tokend
/// answers its 422 or 400; an integer beyond 64 bits echoes as a float; a
/// token with a character such as U+E041 is refused with another message
/// (see [`low_byte_token`]).
#[tokio::test]
async fn bodies_get_the_answers_fastapi_gives_them() {
    // One body in five has another content type than JSON's, or none:
    // FastAPI reads a body as JSON by how Python's email package parses
    // the header.
    const OTHER_TYPES: &[Option<&str>] = &[
        None,
        Some(""),
        Some("application/json; charset=utf-8"),
        Some("APPLICATION/JSON"),
        Some("application/vnd.api+json"),
        Some("application/merge-patch+json; x=1"),
        Some("application/json;"),
        Some(" application/json "),
        Some("application/ json"),
        Some("application/json/x"),
        Some("application/x/+json"),
        Some("application/+json"),
        Some("application"),
        Some("text/plain"),
        Some("text/json"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        // Bytes beyond ASCII, which Starlette reads as Latin-1.
        Some("application/jsoné"),
        Some("application/json; charset=é"),
    ];
    let all: Vec<(Vec<u8>, Option<&str>)> = bodies::many(4122026, 4_000)
        .into_iter()
        .enumerate()
        .map(|(i, b)| (b, if i % 5 == 0 { OTHER_TYPES[i / 5 % OTHER_TYPES.len()] } else { Some("application/json") }))
        .collect();
    let lines: Vec<String> = all
        .iter()
        .map(|(b, ct)| format!("{} {}", b64(b), ct.map_or("-".to_string(), |ct| b64(ct.as_bytes()))))
        .collect();
    let answers = python_verdicts(procs::PYTHON, "answers.py", &lines);
    let (_t, http) = start(&[]);
    let client = reqwest::Client::new();
    let mut differ = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for ((body, ct), fastapi) in all.iter().zip(&answers) {
        let mut req = client.put(format!("http://{http}/token/keepAlive")).body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", reqwest::header::HeaderValue::from_bytes(ct.as_bytes()).unwrap());
        }
        let resp = req.send().await.unwrap();
        let got = (resp.status().as_u16(), resp.text().await.unwrap());
        let status = fastapi["status"].as_u64().unwrap() as u16;
        let wanted = fastapi["body"].as_str().unwrap();
        *statuses.entry(status).or_insert(0usize) += 1;
        // The same answer, or one of the differences above.
        let agree = got == (status, wanted.to_string())
            || match status {
                200 => got.0 == 400 && got.1.starts_with("{\"detail\":\"") && !got.1.contains("parsing the body"),
                500 => got.0 == 422 || got == (400, "{\"detail\":\"There was an error parsing the body\"}".to_string()),
                422 if fastapi["big"] == true => got.0 == 422,
                422 if low_byte_token(body) => {
                    got.1.contains("\"uuid_parsing\"") && wanted.contains("\"uuid_parsing\"")
                }
                _ => false,
            };
        if !agree {
            differ
                .push(format!("{ct:?} {:?}: tokend {got:?}, FastAPI {status} {wanted}", String::from_utf8_lossy(body)));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} bodies answered differently, first ones:\n{}",
        differ.len(),
        all.len(),
        differ[..differ.len().min(20)].join("\n")
    );
    // Accepted, refused by the model, unreadable: each reached often.
    for s in [200, 400, 422] {
        assert!(statuses.get(&s).copied().unwrap_or(0) > 50, "FastAPI's statuses: {statuses:?}");
    }
}

/// Routing against FastAPI itself, live (tests/fixtures/fastapi/routes.py):
/// every method on each of the old service's paths and on their variants
/// (a trailing slash or two, a query or an empty one, a letter
/// percent-encoded, another case, a segment more), and on /openapi.json,
/// gets FastAPI's 404, 405 (with its `allow`) or 307
/// (with its `location`: Starlette sends a path that differs from a route
/// only by its trailing slashes there), byte for byte; where FastAPI
/// reaches a handler, so does tokend, and where its model refuses the
/// missing body (422), tokend's answer is the same.
#[tokio::test]
async fn methods_and_paths_are_routed_as_fastapi_routes_them() {
    const ROUTES: &[&str] = &[
        "/token/generateToken",
        "/token/acquireToken",
        "/token/keepAlive",
        "/token/unblockToken",
        "/token/unblock",
        "/token/deleteToken",
        "/token/deleteExpiredToken",
    ];
    let mut paths: Vec<String> = vec![
        "/".into(),
        "/token".into(),
        "/token/".into(),
        "/nope".into(),
        "/openapi.json".into(),
        "/openapi.json/".into(),
        "/token/acquireToken/?".into(),
    ];
    for r in ROUTES {
        paths.extend([
            r.to_string(),
            format!("{r}/"),
            format!("{r}//"),
            format!("{r}/?pool=x"),
            format!("{r}?pool=x"),
            r.replacen("token/", "t%6Fken/", 1),
            format!("{}/", r.replacen("token/", "t%6Fken/", 1)),
            r.replacen("/token/", "/TOKEN/", 1),
            r.replacen("/token/", "/token//", 1),
            format!("{r}/x"),
        ]);
    }
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    let cases: Vec<(&str, &String)> = paths.iter().flat_map(|p| methods.iter().map(move |m| (*m, p))).collect();
    let (_t, http) = start(&[]);
    let lines: Vec<String> = cases.iter().map(|(m, p)| format!("{m} {p}")).collect();
    let answers = python_verdicts_with(procs::PYTHON, "routes.py", &[&format!("http://{http}")], &lines);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut differ = Vec::new();
    for ((method, path), fastapi) in cases.iter().zip(&answers) {
        let resp = client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), format!("http://{http}{path}"))
            .send()
            .await
            .unwrap();
        let header = |h: &str| resp.headers().get(h).map(|v| v.to_str().unwrap().to_string());
        let got = serde_json::json!({
            "status": resp.status().as_u16(),
            "allow": header("allow"),
            "location": header("location"),
            "content-type": header("content-type"),
        });
        let got_body = resp.text().await.unwrap();
        let status = fastapi["status"].as_u64().unwrap();
        // FastAPI's 422 here is its model's (no body was sent): tokend's
        // must be the same.
        // An allow of more than one method (/openapi.json's) is a set to
        // Starlette, written in no fixed order.
        let methods = |v: &serde_json::Value| -> Option<std::collections::BTreeSet<String>> {
            v.as_str().map(|a| a.split(',').map(|m| m.trim().to_string()).collect())
        };
        let agree = if [307, 404, 405, 422].contains(&status) {
            got["status"] == fastapi["status"]
                && methods(&got["allow"]) == methods(&fastapi["allow"])
                && got["location"] == fastapi["location"]
                && got["content-type"] == fastapi["content-type"]
                && got_body == fastapi["body"].as_str().unwrap()
        } else {
            ![307, 404, 405].contains(&got["status"].as_u64().unwrap())
        };
        if !agree {
            differ.push(format!("{method} {path}: tokend {got} {got_body:?}, FastAPI {fastapi}"));
        }
    }
    assert!(differ.is_empty(), "{} of {} answered differently:\n{}", differ.len(), cases.len(), differ.join("\n"));
    // A HEAD acquires nothing: the one token of a new pool is still free
    // after it.
    assert_eq!(call(http, Method::POST, "/token/generateToken?pool=head", None).await.0, StatusCode::OK);
    let head = client.head(format!("http://{http}/token/acquireToken?pool=head")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(call(http, Method::GET, "/token/acquireToken?pool=head", None).await.0, StatusCode::OK);
}

/// Whether the body's token holds a character beyond ASCII whose low byte
/// is a hex digit or `-` (U+E041, U+012D). pydantic's UUID parser (the uuid
/// crate 1.24) takes such a character for that byte and names another
/// fault than tokend's, which names the character (as uuid 1.25 and later
/// do): the one documented difference in a refused token's message.
fn low_byte_token(body: &[u8]) -> bool {
    let Ok(v) = tokend::http::pyjson::loads(body) else { return false };
    v.get("token").and_then(|t| t.as_str()).is_some_and(|t| {
        t.chars().any(|c| !c.is_ascii() && matches!(c as u32 as u8, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' | b'-'))
    })
}

/// Whether tokend's value is the one loads.py's tagged value describes,
/// order of members included.
fn same(ours: &serde_json::Value, py: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (py[0].as_str().unwrap(), ours) {
        ("n", V::Null) => true,
        ("b", V::Bool(b)) => py[1].as_bool() == Some(*b),
        ("i", V::Number(n)) => !n.is_f64() && n.to_string() == py[1].as_str().unwrap(),
        // The same float, written as Python writes it (a 422 echoes it).
        ("f", V::Number(n)) => {
            n.as_f64().filter(|_| n.is_f64()).map(tokend::http::pyjson::repr).as_deref() == py[1].as_str()
        }
        ("s", V::String(s)) => py[1].as_str() == Some(s),
        ("a", V::Array(items)) => {
            let p = py[1].as_array().unwrap();
            p.len() == items.len() && items.iter().zip(p).all(|(o, p)| same(o, p))
        }
        ("o", V::Object(map)) => {
            let p = py[1].as_array().unwrap();
            p.len() == map.len() && map.iter().zip(p).all(|((k, o), kv)| kv[0].as_str() == Some(k) && same(o, &kv[1]))
        }
        _ => false,
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

/// A body over the 2 MiB limit gets a 413 in FastAPI's JSON shape, on every
/// body route, and the server goes on serving.
#[tokio::test]
async fn a_body_over_the_limit_gets_a_json_413() {
    let (_t, http) = start(&[]);
    let c = reqwest::Client::new();
    let body = format!("{{\"token\": \"8b0e9f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b\", \"pad\": \"{}\"}}", "x".repeat(2 << 20));
    for (method, path) in [
        (Method::PUT, "/token/keepAlive"),
        (Method::PUT, "/token/unblockToken"),
        (Method::PUT, "/token/unblock"),
        (Method::DELETE, "/token/deleteToken"),
    ] {
        let r = c
            .request(method, format!("http://{http}{path}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            "{\"detail\":\"Failed to buffer the request body: length limit exceeded\"}",
            "{path}"
        );
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
    let seeded = std::process::Command::new(procs::PYTHON)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/old_service/seed.py"))
        .args([old.port.to_string(), "10000".into(), "3000".into(), "100".into()])
        .output()
        .expect("the tests' Python (scripts/setup.sh makes .venv)");
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

/// Bodies for the differential test: JSON-like text, from valid to broken in
/// the ways a client or a fuzzer breaks it, in every encoding Python
/// detects. Deterministic (seeded), so a failure names its body again.
mod bodies {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
        from[rng.random_range(0..from.len())]
    }

    fn ws(rng: &mut StdRng, out: &mut String) {
        // Mostly nothing or JSON's own whitespace; now and then what
        // Python's scanner does not skip.
        let w = match rng.random_range(0..100) {
            0..50 => "",
            50..70 => " ",
            70..80 => "\n  ",
            80..86 => "\t",
            86..92 => "\r\n",
            92..94 => "\u{b}",
            94..96 => "\u{a0}",
            96..98 => "\u{feff}",
            _ => "\u{2028}",
        };
        out.push_str(w);
    }

    fn digits(rng: &mut StdRng, n: usize, out: &mut String) {
        for _ in 0..n {
            out.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
    }

    fn number(rng: &mut StdRng, out: &mut String) {
        if rng.random_bool(0.1) {
            // Around the edges of i64, u64 and f64.
            out.push_str(pick(
                rng,
                &[
                    "9223372036854775807",
                    "9223372036854775808",
                    "-9223372036854775808",
                    "-9223372036854775809",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-18446744073709551616",
                    "1e308",
                    "1.7976931348623157e308",
                    "1.7976931348623159e308",
                    "2e308",
                    "-1e400",
                    "5e-324",
                    "2.4703282292062327e-324",
                    "1e-400",
                    "0.1",
                    "9007199254740993",
                    "123456789012345678901234567890",
                    "-0",
                    "-0.0",
                    "0e0",
                ],
            ));
            return;
        }
        if rng.random_bool(0.2) {
            out.push('-');
        }
        match rng.random_range(0..10) {
            0..3 => out.push('0'),
            3..9 => {
                out.push(char::from(b'1' + rng.random_range(0..9u8)));
                let n = rng.random_range(0..6);
                digits(rng, n, out);
            }
            _ => {
                // A leading zero too many, or no digit at all.
                out.push_str(pick(rng, &["00", "01", ".5", "", "+1"]));
            }
        }
        match rng.random_range(0..10) {
            0..3 => {
                out.push('.');
                let n = rng.random_range(1..8);
                digits(rng, n, out);
            }
            3 => out.push('.'),
            _ => {}
        }
        match rng.random_range(0..10) {
            0..2 => {
                out.push_str(pick(rng, &["e", "E", "e+", "e-", "E-"]));
                let n = rng.random_range(1..4);
                digits(rng, n, out);
            }
            2 => out.push_str(pick(rng, &["e", "E+", "e-"])),
            _ => {}
        }
    }

    fn hex4(rng: &mut StdRng, out: &mut String) {
        let u: u32 = match rng.random_range(0..10) {
            0..3 => rng.random_range(0xd800..0xdc00),
            3..5 => rng.random_range(0xdc00..0xe000),
            5..7 => rng.random_range(0..0x80),
            _ => rng.random_range(0..0x1_0000),
        };
        let s = format!("{u:04x}");
        out.push_str(&if rng.random_bool(0.3) { s.to_uppercase() } else { s });
    }

    fn string(rng: &mut StdRng, out: &mut String) {
        out.push('"');
        for _ in 0..rng.random_range(0..6) {
            match rng.random_range(0..20) {
                0..6 => out.push_str(pick(rng, &["a", "token", "x y", "é", "😀", "\u{ffff}", "\u{7f}", "'"])),
                6..9 => out.push_str(pick(rng, &["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"])),
                9..14 => {
                    out.push_str("\\u");
                    hex4(rng, out);
                }
                14..16 => {
                    // A surrogate pair, whole or not.
                    out.push_str("\\u");
                    out.push_str(&format!("{:04x}", rng.random_range(0xd800..0xdc00u32)));
                    out.push_str(pick(rng, &["\\u", "\\", "\\x", ""]));
                    hex4(rng, out);
                }
                16 => {
                    out.push_str("\\u");
                    let n = rng.random_range(0..4);
                    for _ in 0..n {
                        out.push(char::from(pick(rng, &["0", "a", "F", "9"]).as_bytes()[0]));
                    }
                    out.push_str(pick(rng, &["g", "\"", " ", "", "-"]));
                }
                17 => out.push_str(pick(rng, &["\\x41", "\\'", "\\U0041", "\\ ", "\\0"])),
                18 => out.push_str(pick(rng, &["\u{0}", "\u{1}", "\u{1f}", "\t", "\n"])),
                _ => {}
            }
        }
        if rng.random_bool(0.97) {
            out.push('"');
        }
    }

    fn value(rng: &mut StdRng, depth: usize, out: &mut String) {
        let kind = if depth >= 6 { rng.random_range(0..6) } else { rng.random_range(0..10) };
        match kind {
            0 | 1 => number(rng, out),
            2 | 3 => string(rng, out),
            4 => out.push_str(pick(rng, &["null", "true", "false", "NaN", "Infinity", "-Infinity"])),
            5 => out.push_str(pick(rng, &["nul", "True", "nan", "-NaN", "Infinit", "-Inf", "undefined", "'a'", ""])),
            6 | 7 => container(rng, out, ['[', ']'], &[",", ",", ",", ", ", " ,", "", ";"], |rng, out| {
                value(rng, depth + 1, out)
            }),
            _ => container(rng, out, ['{', '}'], &[",", ",", ",", ", ", ""], |rng, out| {
                match rng.random_range(0..10) {
                    0..7 => out.push_str(pick(rng, &["\"token\"", "\"a\"", "\"b\"", "\"\"", "\"\\u00e9\""])),
                    7 => string(rng, out),
                    8 => out.push_str(pick(rng, &["token", "'a'", "1", "null"])),
                    _ => out.push_str("\"\\ud800\""),
                }
                ws(rng, out);
                out.push_str(pick(rng, &[":", ":", ":", ": ", "", "="]));
                ws(rng, out);
                value(rng, depth + 1, out);
            }),
        }
    }

    /// An array or object: up to three members, separated as `seps` has
    /// it, now and then a trailing comma or no closing bracket.
    fn container(
        rng: &mut StdRng,
        out: &mut String,
        [open, close]: [char; 2],
        seps: &[&str],
        mut member: impl FnMut(&mut StdRng, &mut String),
    ) {
        out.push(open);
        ws(rng, out);
        for k in 0..rng.random_range(0..4) {
            if k > 0 {
                out.push_str(pick(rng, seps));
                ws(rng, out);
            }
            member(rng, out);
            ws(rng, out);
        }
        if rng.random_bool(0.05) {
            out.push(',');
        }
        if rng.random_bool(0.95) {
            out.push(close);
        }
    }

    /// One character that breaks text in an interesting way.
    fn noise(rng: &mut StdRng) -> &'static str {
        pick(rng, &["\"", "\\", "[", "]", "{", "}", ",", ":", " ", "0", "-", "e", ".", "u", "\u{0}", "é", "😀", "N"])
    }

    /// A token as a client sends it, in every form pydantic's UUID
    /// accepts, or broken.
    fn token(rng: &mut StdRng, out: &mut String) {
        const U: &str = "8b0e9f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        let t = match rng.random_range(0..14) {
            0..3 => U.to_string(),
            3 => U.to_uppercase(),
            4 => U.replace('-', ""),
            5 => format!("{{{U}}}"),
            6 => format!("urn:uuid:{U}"),
            7 => U[..rng.random_range(0..36)].to_string(),
            8 => {
                let at = rng.random_range(0..36);
                format!("{}{}{}", &U[..at], pick(rng, &["g", "-", "x", "Z", " ", "é", "\\u0041", ""]), &U[at + 1..])
            }
            9 => format!(" {U}"),
            10 => format!("{U}0"),
            11 => U.replacen('-', "", 1),
            _ => {
                value(rng, 3, out);
                return;
            }
        };
        out.push('"');
        out.push_str(&t);
        out.push('"');
    }

    fn text(rng: &mut StdRng) -> String {
        let mut s = String::new();
        ws(rng, &mut s);
        if rng.random_bool(0.5) {
            s.push('{');
            ws(rng, &mut s);
            s.push_str("\"token\"");
            ws(rng, &mut s);
            s.push(':');
            ws(rng, &mut s);
            token(rng, &mut s);
            if rng.random_bool(0.2) {
                s.push_str(pick(rng, &[", \"extra\": ", ", \"token\": ", ","]));
                value(rng, 3, &mut s);
            }
            ws(rng, &mut s);
            s.push('}');
        } else {
            value(rng, 0, &mut s);
        }
        ws(rng, &mut s);
        if rng.random_bool(0.05) {
            s.push_str(pick(rng, &["x", "1", "{}", "\u{0}", "]"]));
        }
        if rng.random_bool(0.3) {
            let chars: Vec<char> = s.chars().collect();
            let at = rng.random_range(0..=chars.len());
            let (head, tail) = chars.split_at(at);
            let (head, tail): (String, String) = (head.iter().collect(), tail.iter().collect());
            s = match rng.random_range(0..4) {
                0 => head,
                1 => format!("{head}{}{tail}", noise(rng)),
                2 => format!("{head}{}", tail.chars().skip(1).collect::<String>()),
                _ => format!("{head}{}{}", noise(rng), tail.chars().skip(1).collect::<String>()),
            };
        }
        s
    }

    /// The bytes of a body: its text in one of the encodings Python
    /// detects, now and then with a byte broken.
    pub fn body(rng: &mut StdRng) -> Vec<u8> {
        if rng.random_bool(0.02) {
            let n = rng.random_range(0..6);
            return (0..n)
                .map(|_| *[0u8, 0xff, 0xfe, 0xef, b'1', b'"', b'['].get(rng.random_range(0..7)).unwrap())
                .collect();
        }
        let s = text(rng);
        let utf16 = |be: bool| -> Vec<u8> {
            s.encode_utf16().flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() }).collect()
        };
        let utf32 = |be: bool| -> Vec<u8> {
            s.chars().flat_map(|c| if be { (c as u32).to_be_bytes() } else { (c as u32).to_le_bytes() }).collect()
        };
        let mut b = match rng.random_range(0..40) {
            0 => [&b"\xef\xbb\xbf"[..], s.as_bytes()].concat(),
            1 => utf16(true),
            2 => utf16(false),
            3 => [&[0xfe, 0xff][..], &utf16(true)].concat(),
            4 => [&[0xff, 0xfe][..], &utf16(false)].concat(),
            5 => utf32(true),
            6 => utf32(false),
            7 => [&[0, 0, 0xfe, 0xff][..], &utf32(true)].concat(),
            8 => [&[0xff, 0xfe, 0, 0][..], &utf32(false)].concat(),
            _ => s.into_bytes(),
        };
        if rng.random_bool(0.04) && !b.is_empty() {
            let at = rng.random_range(0..b.len());
            let bad: &[u8] = match rng.random_range(0..5) {
                0 => b"\xff",
                1 => b"\xc3",
                2 => b"\xed\xa0\x80",
                3 => b"\xed\xb2\x80\xed\xa0\xbd",
                _ => b"\x00",
            };
            b.splice(at..at, bad.iter().copied());
        }
        b
    }

    pub fn many(seed: u64, n: usize) -> Vec<Vec<u8>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| body(&mut rng)).collect()
    }
}

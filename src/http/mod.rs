//! The old service's HTTP API (`--http-addr`), so that its clients switch
//! to tokend without a change.
//!
//! Each endpoint is one TOKEN command run through [`cmd::execute`], the
//! same path as RESP: the same atomicity, the same durability (in sync
//! mode the answer waits until the backing Redis has the change), the same
//! notifications. What differs is only the wire: JSON bodies and status
//! codes exactly as the old FastAPI service produced them, including
//! FastAPI's 422 for a body that is not `{"token": "<uuid>"}` (pydantic's
//! messages, Python's JSON decoder errors: see [`pyjson`]), its 404 and
//! 405, and its compact JSON (`{"token":"…"}`).
//!
//! The pool is `--http-pool` or the `pool` query parameter; leases and
//! lifetimes are the server's defaults. Like the old service it has no
//! authentication of its own, except that with `--requirepass` a request
//! must carry the password (`Authorization: Bearer <password>`, or Basic
//! with any user name), and protected mode refuses non-loopback clients
//! when there is no password, as on the RESP port.
//!
//! `/openapi.json` is generated from the handlers (utoipa) and `/docs`
//! serves Swagger UI from assets compiled into the binary.

// An `Err` here is the HTTP answer itself, made once per failed request:
// boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod pyjson;

use crate::cmd::{self, Ctx, Outcome, Session};
use crate::durable::Fate;
use crate::reply::Reply;
use crate::store::Store;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use utoipa::OpenApi;

/// What the handlers share.
#[derive(Clone)]
struct Api {
    ctx: Arc<Ctx>,
    /// `--http-pool`.
    pool: Arc<str>,
    /// Protected mode is on and there is no password.
    protected: bool,
}

/// The `pool` query parameter.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PoolParam {
    /// The pool (default: the server's `--http-pool`).
    #[expect(
        dead_code,
        reason = "documents the parameter; `Caller` reads the query itself, the last of repeated ones"
    )]
    pool: Option<String>,
}

/// The request body of the endpoints that name a token.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct TokenBody {
    /// The token, a UUID (any of the forms Python's `uuid.UUID` accepts).
    #[schema(format = "uuid")]
    token: String,
}

/// An error: `{"detail": "<why>"}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    detail: String,
}

/// FastAPI's validation error.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ValidationError {
    detail: Vec<ValidationItem>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ValidationItem {
    r#type: String,
    loc: Vec<serde_json::Value>,
    msg: String,
    input: serde_json::Value,
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokend HTTP API",
        description = "The token service's HTTP endpoints (compatible with the FastAPI service tokend replaces). \
                       Every endpoint is one TOKEN command; the RESP port has them all and more."
    ),
    paths(generate_token, acquire_token, keep_alive, unblock_token, unblock, delete_token, delete_expired),
    components(schemas(TokenBody, ErrorDetail, ValidationError, ValidationItem)),
    tags((name = "tokens", description = "Generate, acquire, keep alive, unblock and delete tokens"))
)]
pub struct ApiDoc;

/// A JSON answer, as Starlette's `JSONResponse` writes it.
fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = pyjson::dumps(v);
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

fn detail(status: StatusCode, msg: &str) -> Response {
    json_response(status, &json!({ "detail": msg }))
}

/// The answer to a command error that is not the endpoint's own (the
/// backing Redis down, the server loading or stopping, a limit): 503 with
/// `Retry-After` when trying again later can work, 400 otherwise, as the
/// old service answered every failure.
fn command_error(msg: &str) -> Response {
    let temporary = ["TRYAGAIN", "LOADING", "SHUTDOWN", "BUSY", "CLUSTERDOWN"].iter().any(|c| msg.starts_with(c));
    if temporary {
        let mut r = detail(StatusCode::SERVICE_UNAVAILABLE, msg);
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else {
        detail(StatusCode::BAD_REQUEST, msg)
    }
}

/// Runs one command as a client at `addr` would over RESP, and waits, in
/// sync durability mode, until its changes are in the backing Redis.
/// `Err` is the answer to give instead (the change could not be made
/// durable: what RESP answers with an error).
async fn run(api: &Api, addr: SocketAddr, args: Vec<&[u8]>) -> Result<Reply, Response> {
    let ctx = &api.ctx;
    let laddr = SocketAddr::from(([0, 0, 0, 0], 0));
    let args: Vec<_> = args.into_iter().map(axum::body::Bytes::copy_from_slice).collect();
    cmd::ready(ctx, None, &args, ctx.store.maybe_due()).await;
    // Listed among the clients only now: a request dropped while it
    // waited above (its client gone) is never listed, and never left
    // listed.
    let mut session = Session::new(ctx, addr, laddr);
    session.authenticated = true;
    // The command runs here, on this thread, without awaiting: the unit
    // its changes went to is read right after it.
    Store::take_appended();
    let out = cmd::execute(ctx, &mut session, args);
    let seq = Store::take_appended();
    let wrote = std::mem::take(&mut session.wrote);
    session.close(ctx);
    let reply = match out {
        Outcome::Reply(r) | Outcome::Close(r) => r,
        Outcome::Replies(mut rs) => rs.pop().unwrap_or(Reply::Null),
        // Never asked for (no BLOCK option is sent).
        Outcome::Block { .. } | Outcome::Hangup => Reply::Null,
    };
    if wrote
        && let (Some(d), Some(seq)) = (ctx.durability(), seq)
        && d.waits()
    {
        d.wait(seq).await;
        if let Fate::Pending(msg) | Fate::Refused(msg) = d.fate(seq) {
            return Err(command_error(&msg));
        }
    }
    Ok(reply)
}

/// The checks every request passes first: protected mode, the password.
fn admit(api: &Api, addr: &SocketAddr, headers: &HeaderMap) -> Result<(), Response> {
    // `to_canonical`: on a dual-stack listener an IPv4 client is an
    // IPv4-mapped IPv6 address.
    if api.protected && !addr.ip().to_canonical().is_loopback() {
        return Err(detail(
            StatusCode::FORBIDDEN,
            "DENIED tokend is running in protected mode (no password, and this client is not on loopback): \
             set --requirepass, or --protected-mode no",
        ));
    }
    let Some(password) = &api.ctx.settings.requirepass else { return Ok(()) };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            Some(rest.trim().as_bytes().to_vec())
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, rest.trim()).ok()?;
            let colon = decoded.iter().position(|&b| b == b':')?;
            Some(decoded[colon + 1..].to_vec())
        } else {
            None
        }
    });
    let good = given.is_some_and(|g| subtle::ConstantTimeEq::ct_eq(g.as_slice(), password.as_bytes()).into());
    if good {
        Ok(())
    } else {
        let mut r = detail(StatusCode::UNAUTHORIZED, "Not authenticated");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(r)
    }
}

/// The token of a request body, as FastAPI's `Token` model validates it:
/// the canonical form, or the 422 (or 400) it answers.
/// FastAPI decodes a body as JSON when there is no content type, an empty
/// one, or one whose type is `application/json` or `application/*+json` as
/// Python's `email.message` reads the header (Latin-1, as Starlette
/// decodes it): the text before the first `;`, stripped and lower-cased,
/// and `text/plain` unless it has exactly one `/`. Any other body is a
/// string to it, which is not an object.
fn json_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
    let ct = value.as_bytes();
    if ct.iter().all(|b| matches!(b, b' ' | b'\t')) {
        return true;
    }
    // Python's str.strip() over Latin-1 (its whitespace: \t-\r, U+001C-1F,
    // space, U+0085, U+00A0). Its lower() turns no byte beyond ASCII into
    // ASCII, so comparing ASCII without case is the same as lower() first.
    let space = |b: &u8| matches!(b, b'\t'..=b'\r' | 0x1c..=0x20 | 0x85 | 0xa0);
    let mime = ct.split(|b| *b == b';').next().unwrap_or_default();
    let start = mime.iter().position(|b| !space(b)).unwrap_or(mime.len());
    let end = mime.iter().rposition(|b| !space(b)).map_or(start, |i| i + 1);
    let mut parts = mime[start..end].split(|b| *b == b'/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(main), Some(sub), None) if main.eq_ignore_ascii_case(b"application") => {
            sub.eq_ignore_ascii_case(b"json") || sub.len() >= 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json")
        }
        _ => false,
    }
}

fn token_of(json_type: bool, body: &[u8]) -> Result<String, Response> {
    let invalid = |items: Value| json_response(StatusCode::UNPROCESSABLE_ENTITY, &json!({ "detail": items }));
    if body.is_empty() {
        return Err(invalid(json!([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}])));
    }
    let unreadable = || detail(StatusCode::BAD_REQUEST, "There was an error parsing the body");
    let not_object = |input: Value| {
        invalid(json!([{
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": input,
        }]))
    };
    if !json_type {
        let Ok(text) = std::str::from_utf8(body) else { return Err(unreadable()) };
        return Err(not_object(Value::String(text.to_string())));
    }
    let v = match pyjson::loads(body) {
        Ok(v) => v,
        Err(pyjson::Bad::Decode(pos, why)) => {
            return Err(invalid(json!([{
                "type": "json_invalid",
                "loc": ["body", pos],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": why},
            }])));
        }
        Err(pyjson::Bad::Unreadable) => return Err(unreadable()),
    };
    // A JSON null is no body at all to FastAPI (a NaN, also null here, is
    // a float to it).
    if v.is_null() && pyjson::decode(body).is_some_and(|t| t.trim_matches([' ', '\t', '\n', '\r']) == "null") {
        return Err(invalid(json!([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}])));
    }
    let Value::Object(map) = &v else { return Err(not_object(v)) };
    let Some(t) = map.get("token") else {
        return Err(invalid(
            json!([{"type": "missing", "loc": ["body", "token"], "msg": "Field required", "input": v}]),
        ));
    };
    let Value::String(s) = t else {
        return Err(invalid(json!([{
            "type": "uuid_type",
            "loc": ["body", "token"],
            "msg": "UUID input should be a string, bytes or UUID object",
            "input": t,
        }])));
    };
    match uuid::Uuid::parse_str(s) {
        Ok(u) => Ok(u.hyphenated().to_string()),
        Err(e) => Err(invalid(json!([{
            "type": "uuid_parsing",
            "loc": ["body", "token"],
            "msg": format!("Input should be a valid UUID, {e}"),
            "input": s,
            "ctx": {"error": e.to_string()},
        }]))),
    }
}

/// A request that passed [`admit`], with what every endpoint needs. As an
/// extractor it runs before the body is read.
struct Caller {
    api: Api,
    addr: SocketAddr,
    /// Its body is to be read as JSON (see [`json_type`]).
    json_type: bool,
    /// The `pool` query parameter.
    pool: Option<String>,
}

impl FromRequestParts<Api> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Caller, Response> {
        let ConnectInfo(addr) =
            ConnectInfo::<SocketAddr>::from_request_parts(parts, api).await.map_err(IntoResponse::into_response)?;
        admit(api, &addr, &parts.headers)?;
        let Query(q) = Query::<Vec<(String, String)>>::from_request_parts(parts, api)
            .await
            .map_err(IntoResponse::into_response)?;
        // A repeated parameter: the last one, as Starlette reads it.
        let pool = q.into_iter().rev().find(|(k, _)| k == "pool").map(|(_, v)| v);
        Ok(Caller { api: api.clone(), addr, json_type: json_type(&parts.headers), pool })
    }
}

impl Caller {
    /// Runs `command <pool> [token]` (see [`run`]).
    async fn run(&self, command: &[u8], token: Option<&str>) -> Result<Reply, Response> {
        let pool = self.pool.as_deref().unwrap_or(&self.api.pool).as_bytes();
        let mut args = vec![command, pool];
        args.extend(token.map(str::as_bytes));
        run(&self.api, self.addr, args).await
    }
}

/// The error code of an error reply (`NOTOKEN`, `EXPIRED`…).
fn code(msg: &str) -> &str {
    msg.split(' ').next().unwrap_or("")
}

/// Generate a token.
#[utoipa::path(post, path = "/token/generateToken", tag = "tokens", params(PoolParam),
    description = "Makes one new free token with the server's default lifetime (`TOKEN.GEN pool`).",
    responses((status = 200, description = "Generated", body = String, example = json!("token successfully generated"))))]
async fn generate_token(c: Caller) -> Response {
    match c.run(b"TOKEN.GEN", None).await {
        Ok(Reply::Error(e)) => command_error(&e),
        Ok(_) => ok(json!("token successfully generated")),
        Err(r) => r,
    }
}

/// Acquire a token.
#[utoipa::path(get, path = "/token/acquireToken", tag = "tokens", params(PoolParam),
    description = "Assigns a uniformly random free token with the server's default lease (`TOKEN.ACQUIRE pool`).",
    responses(
        (status = 200, description = "The token", body = TokenBody),
        (status = 400, description = "No free token", body = ErrorDetail, example = json!({"detail": "No available tokens"}))))]
async fn acquire_token(c: Caller) -> Response {
    match c.run(b"TOKEN.ACQUIRE", None).await {
        Ok(Reply::Bulk(t)) => ok(json!({ "token": String::from_utf8_lossy(&t) })),
        Ok(Reply::Error(e)) => command_error(&e),
        Ok(_) => detail(StatusCode::BAD_REQUEST, "No available tokens"),
        Err(r) => r,
    }
}

/// A request body. One over axum's limit (2 MiB; FastAPI has none) is
/// answered 413 with its reason in FastAPI's `detail` JSON, as every other
/// answer is, not in axum's plain text.
struct Body(Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) => Err(detail(e.status(), &e.body_text())),
        }
    }
}

/// Runs a command on the token of the body; `answer` turns its reply into
/// the response.
async fn on_token(
    c: Caller,
    Body(body): Body,
    command: &'static [u8],
    answer: impl FnOnce(&str, Reply) -> Response,
) -> Response {
    let token = match token_of(c.json_type, &body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match c.run(command, Some(&token)).await {
        Ok(reply) => answer(&token, reply),
        Err(r) => r,
    }
}

/// Keep a token alive.
#[utoipa::path(put, path = "/token/keepAlive", tag = "tokens", params(PoolParam), request_body = TokenBody,
    description = "Restarts the token's lifetime and, if it is assigned, its lease (`TOKEN.KEEPALIVE pool token`).",
    responses(
        (status = 200, description = "Kept alive", body = String,
         example = json!("Token token=UUID('8b0e9f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b') has received keep alive signal")),
        (status = 400, description = "Unknown or expired token", body = ErrorDetail, example = json!({"detail": "No such token found"})),
        (status = 422, description = "The body is not {\"token\": \"<uuid>\"}", body = ValidationError)))]
async fn keep_alive(c: Caller, body: Body) -> Response {
    on_token(c, body, b"TOKEN.KEEPALIVE", |t, r| match r {
        Reply::Integer(_) => ok(json!(format!("Token token=UUID('{t}') has received keep alive signal"))),
        Reply::Error(e) if matches!(code(&e), "NOTOKEN" | "EXPIRED") => {
            detail(StatusCode::BAD_REQUEST, "No such token found")
        }
        Reply::Error(e) => command_error(&e),
        _ => detail(StatusCode::BAD_REQUEST, "No such token found"),
    })
    .await
}

fn unblock_answer(t: &str, r: Reply) -> Response {
    match r {
        Reply::Integer(_) => ok(json!(format!("{t} has been unblocked"))),
        Reply::Error(e) if code(&e) == "NOTASSIGNED" => {
            detail(StatusCode::BAD_REQUEST, "This token is not assigned and hence cannot be unblocked")
        }
        Reply::Error(e) if matches!(code(&e), "NOTOKEN" | "EXPIRED") => {
            detail(StatusCode::BAD_REQUEST, "No such token present")
        }
        Reply::Error(e) => command_error(&e),
        _ => detail(StatusCode::BAD_REQUEST, "No such token present"),
    }
}

/// Give an assigned token back.
#[utoipa::path(put, path = "/token/unblockToken", tag = "tokens", params(PoolParam), request_body = TokenBody,
    description = "Assigned → free (`TOKEN.UNBLOCK pool token`).",
    responses(
        (status = 200, description = "Unblocked", body = String, example = json!("8b0e9f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b has been unblocked")),
        (status = 400, description = "Unknown token, or not assigned", body = ErrorDetail,
         example = json!({"detail": "This token is not assigned and hence cannot be unblocked"})),
        (status = 422, description = "The body is not {\"token\": \"<uuid>\"}", body = ValidationError)))]
async fn unblock_token(c: Caller, body: Body) -> Response {
    on_token(c, body, b"TOKEN.UNBLOCK", unblock_answer).await
}

/// The same as `/token/unblockToken`.
#[utoipa::path(put, path = "/token/unblock", tag = "tokens", params(PoolParam), request_body = TokenBody,
    description = "The same as `PUT /token/unblockToken`.",
    responses(
        (status = 200, description = "Unblocked", body = String),
        (status = 400, description = "Unknown token, or not assigned", body = ErrorDetail),
        (status = 422, description = "The body is not {\"token\": \"<uuid>\"}", body = ValidationError)))]
async fn unblock(c: Caller, body: Body) -> Response {
    unblock_token(c, body).await
}

/// Delete a token.
#[utoipa::path(delete, path = "/token/deleteToken", tag = "tokens", params(PoolParam), request_body = TokenBody,
    description = "Deletes the token in any state (`TOKEN.DEL pool token`).",
    responses(
        (status = 200, description = "Deleted", body = String, example = json!("8b0e9f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b has been deleted")),
        (status = 400, description = "Unknown token", body = ErrorDetail, example = json!({"detail": "No such token in system"})),
        (status = 422, description = "The body is not {\"token\": \"<uuid>\"}", body = ValidationError)))]
async fn delete_token(c: Caller, body: Body) -> Response {
    on_token(c, body, b"TOKEN.DEL", |t, r| match r {
        Reply::Integer(1) => ok(json!(format!("{t} has been deleted"))),
        Reply::Error(e) => command_error(&e),
        _ => detail(StatusCode::BAD_REQUEST, "No such token in system"),
    })
    .await
}

/// Forget the pool's expired tokens.
#[utoipa::path(delete, path = "/token/deleteExpiredToken", tag = "tokens", params(PoolParam),
    description = "Forgets the pool's remembered expired tokens (`TOKEN.DELEXPIRED pool`).",
    responses((status = 200, description = "How many", body = String, example = json!("3 expired tokens deleted"))))]
async fn delete_expired(c: Caller) -> Response {
    match c.run(b"TOKEN.DELEXPIRED", None).await {
        Ok(Reply::Integer(n)) => ok(json!(format!("{n} expired tokens deleted"))),
        Ok(Reply::Error(e)) => command_error(&e),
        Ok(_) => ok(json!("0 expired tokens deleted")),
        Err(r) => r,
    }
}

/// FastAPI's 404 body.
async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

/// The old service's routes (the router below has each with its handler).
const ROUTES: &[&str] = &[
    "/token/generateToken",
    "/token/acquireToken",
    "/token/keepAlive",
    "/token/unblockToken",
    "/token/unblock",
    "/token/deleteToken",
    "/token/deleteExpiredToken",
];

const OPENAPI_JSON: &str = "/openapi.json";

/// What Python's `urllib.parse.quote` leaves as it is with Starlette's
/// `safe` for a redirect's location.
const LOCATION_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b':')
    .remove(b'/')
    .remove(b'%')
    .remove(b'#')
    .remove(b'?')
    .remove(b'=')
    .remove(b'@')
    .remove(b'[')
    .remove(b']')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';');

/// FastAPI's 405: the route's one method in `allow`.
fn method_not_allowed(method: &'static str) -> Response {
    let mut r = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(method));
    r
}

/// A route's handler, and FastAPI's 405 for any other method: HEAD too,
/// which FastAPI's routes do not answer (axum runs a GET handler for HEAD:
/// a HEAD would acquire a token).
fn only<H, T>(method: MethodFilter, name: &'static str, handler: H) -> MethodRouter<Api>
where
    H: axum::handler::Handler<T, Api>,
    T: 'static,
{
    let refuse = move || async move { method_not_allowed(name) };
    axum::routing::on(method, handler).head(refuse).fallback(refuse)
}

/// What axum's routes did not match, as FastAPI's (Starlette's) router
/// answers it: `routes` again for a path that is a route's once
/// percent-decoded (`/t%6Fken/acquireToken`: Starlette matches decoded
/// paths); a 307 to the route for a path that is a route's but for its
/// trailing slashes (`/token/acquireToken/`, with the query, whatever the
/// method: Starlette's `redirect_slashes`); else 404. Requests for the
/// routes themselves never come here, so they pay nothing for it.
async fn fastapi_fallback(routes: Router, mut req: axum::extract::Request) -> Response {
    let path = percent_decode_str(req.uri().path()).decode_utf8_lossy().into_owned();
    // Starlette adds the query only when there is one (`/x/?` has none).
    let query = req.uri().query().filter(|q| !q.is_empty()).map(|q| format!("?{q}")).unwrap_or_default();
    let route = |p: &str| p == OPENAPI_JSON || ROUTES.contains(&p);
    if path != req.uri().path() && route(&path) {
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = format!("{path}{query}").parse().ok();
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
            return match routes.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
    }
    // No route ends in `/`, so only a path that does can be one Starlette
    // redirects (it also tries adding a slash, which never matches here).
    if path.ends_with('/') {
        let other = path.trim_end_matches('/');
        if route(other) {
            // Starlette's URL(scope=…): the Host header as Latin-1, the
            // query as sent, quoted.
            let host: Option<String> =
                req.headers().get(header::HOST).map(|h| h.as_bytes().iter().map(|&b| char::from(b)).collect());
            let url = match host {
                Some(host) => format!("http://{host}{other}{query}"),
                None => format!("{other}{query}"),
            };
            let location = utf8_percent_encode(&url, LOCATION_SAFE).to_string();
            if let Ok(v) = HeaderValue::from_str(&location) {
                return (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, v)]).into_response();
            }
        }
    }
    not_found().await
}

/// The router (tests serve it on their own listener).
pub fn router(ctx: Arc<Ctx>, pool: &str, protected: bool) -> Router {
    let api = Api { ctx, pool: pool.into(), protected };
    let openapi = ApiDoc::openapi();
    let routes = Router::new()
        .route("/token/generateToken", only(MethodFilter::POST, "POST", generate_token))
        .route("/token/acquireToken", only(MethodFilter::GET, "GET", acquire_token))
        .route("/token/keepAlive", only(MethodFilter::PUT, "PUT", keep_alive))
        .route("/token/unblockToken", only(MethodFilter::PUT, "PUT", unblock_token))
        .route("/token/unblock", only(MethodFilter::PUT, "PUT", unblock))
        .route("/token/deleteToken", only(MethodFilter::DELETE, "DELETE", delete_token))
        .route("/token/deleteExpiredToken", only(MethodFilter::DELETE, "DELETE", delete_expired))
        .with_state(api)
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .url(OPENAPI_JSON, openapi)
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
        // /docs and /openapi.json: axum's allow, FastAPI's body.
        .method_not_allowed_fallback(|| async { detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed") });
    let again = routes.clone();
    routes.fallback(move |req: axum::extract::Request| fastapi_fallback(again.clone(), req))
}

/// Serves the API on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, pool: String, protected: bool, stop: CancellationToken) {
    let app = router(ctx, &pool, protected).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!(error = %e, "the HTTP API failed");
    }
}

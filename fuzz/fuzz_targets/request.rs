//! Fuzz target: arbitrary bytes → request framing → command parsing →
//! execution against a live in-memory store → reply encoding in RESP2 and
//! RESP3. Nothing may panic, and the store's invariants must hold after
//! every input.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run request` (see the README).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokend::cmd::{self, Outcome};
use tokend::codec::decode_request;
use tokend::config::Config;
use tokend::connection::Session;
use tokend::reply::Protocol;
use tokend::server::{Server, Shared};

struct Harness {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    _server: Server,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut c = Config::default_for_tests();
            // Keep the store small: tokens live 50 ms, at most 100k of them.
            c.token_ttl = std::time::Duration::from_millis(50);
            c.lease_ttl = std::time::Duration::from_millis(20);
            c.max_tokens = 100_000;
            c.max_gen_count = 1_000;
            Server::new(l, c).await.unwrap()
        });
        Harness { shared: server.shared.clone(), rt, _server: server }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let _guard = h.rt.enter();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut session = Session::new(&h.shared, addr, addr);
    let mut buf = BytesMut::from(data);
    for _ in 0..64 {
        let args = match decode_request(&mut buf, &h.shared.limits) {
            Ok(Some(a)) if a.is_empty() => continue,
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => break,
        };
        let mut out = BytesMut::new();
        match cmd::execute(&mut session, &h.shared, args) {
            Outcome::Reply(r) => {
                r.clone().encode(Protocol::Resp2, &mut out);
                r.encode(Protocol::Resp3, &mut out);
            }
            Outcome::Replies(rs) => {
                for r in rs {
                    r.encode(session.proto, &mut out);
                }
            }
            Outcome::Block { waiting, .. } => waiting.release(),
            Outcome::Close(_) => break,
        }
    }
    session.close(&h.shared);
    h.shared.store.check_invariants().expect("store invariants");
});

//! Fuzz target: arbitrary bytes → request framing → command parsing →
//! execution against a live in-memory store → reply encoding in RESP2 and
//! RESP3. Nothing may panic, and the store's invariants must hold after
//! every input. The command core runs with no socket: the same
//! `cmd::execute` every front end calls.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run request` (see the README).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokend::clock::Clock;
use tokend::cmd::{self, Ctx, Outcome, Session, Settings};
use tokend::codec::{Limits, decode_request};
use tokend::notify::{EventClasses, Notifier};
use tokend::pubsub::PubSub;
use tokend::reply::Protocol;
use tokend::store::{Store, StoreConfig, expiry};

struct Harness {
    rt: tokio::runtime::Runtime,
    ctx: Ctx,
    _expiry: expiry::ExpiryDrivers,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let pubsub = Arc::new(PubSub::default());
        let notifier = Arc::new(Notifier::new(EventClasses::parse("KExl").unwrap(), pubsub.clone()));
        // Keep the store small: tokens live 50 ms, at most 100k of them.
        let config = StoreConfig {
            default_lifetime_ms: 50,
            default_lease_ms: 20,
            max_tokens: 100_000,
            ..StoreConfig::default()
        };
        let store = Store::new(config, Clock::new(), notifier);
        let expiry = expiry::spawn_threads(&store).unwrap();
        let settings = Settings { max_gen_count: 1_000, maxclients: 10, shards: 16, ..Settings::default() };
        Harness { ctx: Ctx::new(store, pubsub, settings), rt, _expiry: expiry }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let _guard = h.rt.enter();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut session = Session::new(&h.ctx, addr, addr);
    let mut buf = BytesMut::from(data);
    let limits = Limits::default();
    for _ in 0..64 {
        let args = match decode_request(&mut buf, &limits) {
            Ok(Some(a)) if a.is_empty() => continue,
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => break,
        };
        let mut out = BytesMut::new();
        match cmd::execute(&h.ctx, &mut session, args) {
            Outcome::Reply(r) => {
                r.clone().encode(Protocol::Resp2, &mut out);
                r.encode(Protocol::Resp3, &mut out);
            }
            Outcome::Replies(rs) => {
                for r in rs {
                    r.encode(session.proto, &mut out);
                }
            }
            // Dropping the place in the queue gives it up.
            Outcome::Block { waiting, .. } => drop(waiting),
            Outcome::Close(_) | Outcome::Hangup => break,
        }
    }
    session.close(&h.ctx);
    h.ctx.store.check_invariants().expect("store invariants");
});

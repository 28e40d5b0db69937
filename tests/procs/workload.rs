//! A write load whose every acknowledged effect is recorded, and the check
//! that a recovered server still has all of them.
//!
//! Clients loop GEN → ACQUIRE → (every other time) UNBLOCK on one pool. An
//! operation counts only once its reply arrived; one whose reply never came
//! (the server died) or was `-TRYAGAIN` is *uncertain*: it may or may not
//! have happened, and the check allows both outcomes for what it touched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The last acknowledged state of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    Free,
    Assigned,
}

/// What the load saw acknowledged.
#[derive(Debug, Default)]
pub struct Ledger {
    pub known: HashMap<String, Known>,
    /// Tokens an unacknowledged UNBLOCK may have freed, with how many such
    /// UNBLOCKs are in flight: two clients may have one each (one freed the
    /// token, the other acquired it and is freeing it again), and the first
    /// reply must not make the second one certain.
    pub uncertain: HashMap<String, usize>,
    /// ACQUIREs without a reply: each may own one token we think free.
    pub loose_acquires: usize,
    pub acked: u64,
    /// Why clients stopped before `stop` was set: any error but
    /// `-TRYAGAIN` ends a client. A test that does not kill the server
    /// expects none.
    pub failures: Vec<String>,
}

/// Runs `clients` load loops on `pool` until `stop` is set or the server
/// fails them; returns the ledger.
pub async fn run(url: String, pool: String, clients: usize, stop: Arc<AtomicBool>) -> Ledger {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = |ledger: &Mutex<Ledger>, what: &str, e: &dyn std::fmt::Display| {
        ledger.lock().unwrap().failures.push(format!("{what}: {e}"));
    };
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, pool, stop, ledger, acked) = (url.clone(), pool.clone(), stop.clone(), ledger.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let client = match redis::Client::open(url) {
                Ok(c) => c,
                Err(e) => return failed(&ledger, "open", &e),
            };
            let mut c = match client.get_multiplexed_async_connection().await {
                Ok(c) => c,
                Err(e) => return failed(&ledger, "connect", &e),
            };
            // tokend answers every write within --persist-timeout (5 s),
            // whatever its backing Redis does; a sync write waits meanwhile
            // (for a write-back of the whole state, say). The crate's
            // default of 500 ms would end the client there.
            c.set_response_timeout(std::time::Duration::from_secs(30));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match redis::cmd("TOKEN.GEN").arg(&pool).query_async::<String>(&mut c).await {
                    Ok(t) => {
                        // Another client may already have acquired it (and
                        // recorded that) before this reply arrived.
                        ledger.lock().unwrap().known.entry(t).or_insert(Known::Free);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.code() == Some("TRYAGAIN") => continue,
                    Err(e) => return failed(&ledger, "GEN", &e),
                }
                let got = match redis::cmd("TOKEN.ACQUIRE")
                    .arg(&pool)
                    .arg("PX")
                    .arg(600_000)
                    .query_async::<String>(&mut c)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        ledger.lock().unwrap().loose_acquires += 1;
                        if e.code() == Some("TRYAGAIN") {
                            continue;
                        }
                        return failed(&ledger, "ACQUIRE", &e);
                    }
                };
                ledger.lock().unwrap().known.insert(got.clone(), Known::Assigned);
                acked.fetch_add(1, Ordering::Relaxed);
                if i.is_multiple_of(2) {
                    // Recorded before sending: once the server frees it,
                    // another client may acquire (and record) it before our
                    // reply arrives. Uncertain until acknowledged.
                    {
                        let mut l = ledger.lock().unwrap();
                        l.known.insert(got.clone(), Known::Free);
                        *l.uncertain.entry(got.clone()).or_default() += 1;
                    }
                    match redis::cmd("TOKEN.UNBLOCK").arg(&pool).arg(&got).query_async::<i64>(&mut c).await {
                        Ok(_) => {
                            let mut l = ledger.lock().unwrap();
                            if let Some(n) = l.uncertain.get_mut(&got) {
                                *n -= 1;
                                if *n == 0 {
                                    l.uncertain.remove(&got);
                                }
                            }
                            drop(l);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.code() == Some("TRYAGAIN") => {}
                        Err(e) => return failed(&ledger, "UNBLOCK", &e),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a load client panicked");
    }
    let mut l = std::mem::take(&mut *ledger.lock().unwrap());
    l.acked = acked.load(Ordering::Relaxed);
    l
}

/// Checks a recovered server against the ledger; returns how many tokens
/// were checked. Panics on any acknowledged change that was lost.
pub async fn verify(c: &mut redis::aio::MultiplexedConnection, pool: &str, l: &Ledger) -> usize {
    let s: HashMap<String, i64> = redis::cmd("TOKEN.STATS").arg(pool).query_async(c).await.unwrap();
    assert_eq!(s["total"], s["free"] + s["assigned"], "{s:?}");
    assert!(s["total"] as usize >= l.known.len(), "acknowledged GENs missing: {s:?} < {}", l.known.len());
    let mut unexpected = 0;
    for (tok, want) in &l.known {
        let info: HashMap<String, redis::Value> = redis::cmd("TOKEN.INFO")
            .arg(pool)
            .arg(tok)
            .query_async(c)
            .await
            .unwrap_or_else(|e| panic!("acknowledged token {tok} lost: {e}"));
        let state = match info.get("state") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        };
        match (want, state.as_str()) {
            (Known::Assigned, "assigned") | (Known::Free, "free") => {}
            // Its UNBLOCK was sent but never acknowledged: either is right.
            (Known::Free, "assigned") if l.uncertain.contains_key(tok) => {}
            (Known::Free, "assigned") => unexpected += 1,
            (w, g) => panic!("token {tok}: acknowledged {w:?}, recovered {g}"),
        }
    }
    assert!(
        unexpected <= l.loose_acquires,
        "{unexpected} free tokens assigned, only {} loose ACQUIREs",
        l.loose_acquires
    );
    l.known.len()
}

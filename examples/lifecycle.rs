//! The whole token lifecycle against tokend with the `redis` crate.
//!
//!     cargo run --example lifecycle -- [redis://127.0.0.1:6380]
//!
//! Generates tokens, acquires one with a lease and keeps it alive in a loop,
//! gives it back, lets a lease and the lifetimes run out, and prints the
//! expiry notifications tokend publishes. Exits 0 once it saw every event.

use std::time::Duration;

#[tokio::main]
async fn main() -> redis::RedisResult<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6380".into());
    let pool = "example-rs";
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;

    // Expiry notifications, as Redis's keyevent channels.
    let mut sub = client.get_async_pubsub().await?;
    sub.subscribe(&["__keyevent@0__:expired", "__keyevent@0__:leaseexpired"]).await?;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut messages = sub.on_message();
        while let Some(m) = messages.next().await {
            let event = m.get_channel_name().rsplit(':').next().unwrap_or_default().to_string();
            let payload: String = m.get_payload().unwrap_or_default();
            if tx.send((event, payload)).is_err() {
                break;
            }
        }
    });

    let tokens: Vec<String> =
        redis::cmd("TOKEN.GEN").arg(pool).arg("PX").arg(1500).arg("COUNT").arg(3).query_async(&mut con).await?;
    println!("generated {tokens:?}");
    let token: String = redis::cmd("TOKEN.ACQUIRE").arg(pool).arg("PX").arg(400).query_async(&mut con).await?;
    println!("acquired {token}");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left: i64 = redis::cmd("TOKEN.KEEPALIVE").arg(pool).arg(&token).query_async(&mut con).await?;
        println!("kept alive; lifetime left (ms): {left}");
    }
    let info: redis::Value = redis::cmd("TOKEN.INFO").arg(pool).arg(&token).query_async(&mut con).await?;
    println!("info {info:?}");
    let _: i64 = redis::cmd("TOKEN.UNBLOCK").arg(pool).arg(&token).query_async(&mut con).await?;
    println!("unblocked {token}");
    let other: String = redis::cmd("TOKEN.ACQUIRE").arg(pool).arg("PX").arg(100).query_async(&mut con).await?;
    println!("acquired {other} and let its lease end");

    let (mut lease_ended, mut expired) = (false, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(lease_ended && expired >= 3) {
        let Ok(Some((event, payload))) = tokio::time::timeout_at(deadline, events.recv()).await else { break };
        println!("event {event}: {payload}");
        if event == "leaseexpired" && payload == format!("{pool}:{other}") {
            lease_ended = true;
        }
        if event == "expired" && payload.starts_with(&format!("{pool}:")) {
            expired += 1;
        }
    }
    let stats: redis::Value = redis::cmd("TOKEN.STATS").arg(pool).query_async(&mut con).await?;
    println!("stats {stats:?}");
    if lease_ended && expired >= 3 {
        Ok(())
    } else {
        eprintln!("missing events: leaseexpired seen: {lease_ended}, expired seen: {expired} of 3");
        std::process::exit(1)
    }
}

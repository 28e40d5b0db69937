//! A Redis Cluster as the backing store: `--redis` names one node of a
//! three-master Redis Cluster (made with `redis-cli --cluster create`), and
//! tokend spreads its keys over the masters by hash slot, one atomic write
//! per slot. (Cluster mode of tokend itself over a Redis Cluster is in
//! tests/cluster.rs.)

mod common;
mod procs;

use common::RawConn;
use procs::{RedisCluster, Tokend, free_port, workload};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn tokend(backing: &RedisCluster, port: &str, extra: &[&str]) -> Tokend {
    let url = backing.url();
    let mut args = vec!["--port", port, "--redis", &url];
    args.extend_from_slice(extra);
    Tokend::start_with_env(&args, &[])
}

/// Pools whose hash slots are spread over the three masters.
fn pools() -> Vec<String> {
    (0..6).map(|i| format!("pool-{i}")).collect()
}

/// Runs the ledger-keeping load on every pool until `stop`.
fn load(url: &str, pools: &[String], stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<workload::Ledger>> {
    pools.iter().map(|p| tokio::spawn(workload::run(url.to_string(), p.clone(), 2, stop.clone()))).collect()
}

/// The masters each pool's keys live on.
fn masters_of(backing: &RedisCluster, pools: &[String]) -> Vec<usize> {
    let mut on = Vec::new();
    for (i, n) in backing.nodes.iter().enumerate() {
        let keys: Vec<String> = redis::cmd("KEYS").arg("tokend:{pool-*}:*").query(&mut n.conn()).unwrap();
        if pools.iter().any(|p| keys.iter().any(|k| k.starts_with(&format!("tokend:{{{p}}}:")))) {
            on.push(i);
        }
    }
    on
}

#[tokio::test]
async fn every_acknowledged_change_survives_kill_dash_nine_on_a_redis_cluster() {
    let backing = RedisCluster::start(3);
    let port = free_port().to_string();
    let mut t = tokend(&backing, &port, &["--durability", "sync"]);
    assert!(t.wait_log("the backing store is a Redis Cluster", Duration::from_secs(5)).is_some());
    let pools = pools();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&t.url(), &pools, &stop);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    tokio::time::sleep(Duration::from_millis(500 + (nanos % 400) as u64)).await;
    t.kill9();
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.unwrap());
    }
    assert_eq!(masters_of(&backing, &pools), vec![0, 1, 2], "the pools are on every master");
    // The same port: the restarted tokend takes the lease over at once.
    let t = tokend(&backing, &port, &[]);
    let mut c = t.conn().await;
    let (mut acked, mut checked) = (0, 0);
    for (pool, ledger) in pools.iter().zip(&ledgers) {
        assert!(ledger.known.len() > 10, "the load ran on {pool} ({} tokens)", ledger.known.len());
        checked += workload::verify(&mut c, pool, ledger).await;
        acked += ledger.acked;
    }
    eprintln!("kill -9 over a Redis Cluster: {acked} acknowledged operations, {checked} tokens checked, lost: 0");
}

#[tokio::test]
async fn events_of_every_slot_reach_a_subscriber_of_any_master() {
    let backing = RedisCluster::start(3);
    let t = tokend(&backing, &free_port().to_string(), &[]);
    // Subscribed on the last master: events of slots the other two hold
    // reach it too (PUBLISH goes to the whole Redis Cluster).
    let mut ps = redis::Client::open(backing.nodes[2].url()).unwrap().get_async_pubsub().await.unwrap();
    ps.psubscribe("__keyevent@0__:*").await.unwrap();
    let mut c = t.conn().await;
    // And a pool of hash slot 0, whose fence the events check too.
    let mut pools = pools();
    pools.push(tokend::persist::layout::slot_tag(0).to_string());
    let mut want: HashMap<String, usize> = HashMap::new();
    for p in &pools {
        let tok: String = redis::cmd("TOKEN.GEN").arg(p).arg("PX").arg(50).query_async(&mut c).await.unwrap();
        want.insert(format!("{p}:{tok}"), 0);
    }
    use futures_util::StreamExt;
    let mut stream = ps.on_message();
    let deadline = Instant::now() + Duration::from_secs(5);
    while want.values().any(|&n| n == 0) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(msg)) = tokio::time::timeout(left, stream.next()).await else {
            panic!("events missing: {want:?}");
        };
        assert_eq!(msg.get_channel_name(), "__keyevent@0__:expired");
        let payload: String = msg.get_payload().unwrap();
        *want.get_mut(&payload).unwrap_or_else(|| panic!("unexpected event {payload}")) += 1;
    }
    // None twice.
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("an extra event: {:?}", msg.get_payload::<String>());
    }
    assert_eq!(masters_of(&backing, &pools[..6]).len(), 3);
}

#[tokio::test]
async fn a_master_that_loses_its_data_gets_its_share_back() {
    let backing = RedisCluster::start(3);
    let port = free_port().to_string();
    let mut t = tokend(&backing, &port, &[]);
    let pools = pools();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&t.url(), &pools, &stop);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _: () = redis::cmd("FLUSHALL").query(&mut backing.nodes[1].conn()).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.unwrap());
    }
    let mut raw = RawConn::connect(t.addr).await;
    // The write-back completes: every pool's tokens are in the backing
    // store again, the flushed master's share too.
    let mut rc = backing.conn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut missing = Vec::new();
        for p in &pools {
            let total = common::stats(&mut raw, p).await[0];
            let stored = common::backing_records(&mut rc, p).len() as i64;
            if stored != total {
                missing.push((p.clone(), stored, total));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "write-back incomplete: {missing:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = raw.cmd("INFO persistence").await.text();
    let lost =
        info.lines().find_map(|l| l.strip_prefix("backing_data_lost:")).and_then(|n| n.trim().parse::<u64>().ok());
    assert!(lost.is_some_and(|n| n >= 1), "{info}");
    drop(raw);
    t.kill9();
    let t = tokend(&backing, &port, &[]);
    let mut c = t.conn().await;
    for (pool, ledger) in pools.iter().zip(&ledgers) {
        assert!(ledger.acked > 10, "the load ran on {pool} ({})", ledger.acked);
        assert_eq!(ledger.failures, Vec::<String>::new(), "tokend stayed up on {pool}");
        workload::verify(&mut c, pool, ledger).await;
    }
}

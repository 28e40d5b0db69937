//! Cluster mode: several tokend processes over one backing redis-server look
//! like one Redis Cluster to clients (redis-cli -c, the redis crate's
//! cluster client), spread the hash slots, hand them over on SIGTERM and
//! take a dead node's slots over after the node timeout.

mod common;
mod procs;

use common::{RawConn, Resp};
use procs::{RedisCluster, RedisProc, Tokend, free_port};
use redis::cluster::ClusterClient;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SLOTS: i64 = 16384;

fn node(redis: &RedisProc, port: u16, extra: &[&str]) -> Tokend {
    node_on(&redis.url(), port, extra)
}

/// A node whose backing store is at `url` (a redis-server or a node of a
/// Redis Cluster).
fn node_on(url: &str, port: u16, extra: &[&str]) -> Tokend {
    let port = port.to_string();
    let url = url.to_string();
    let mut args = vec!["--port", &port, "--redis", &url, "--cluster-enabled", "yes"];
    args.extend_from_slice(extra);
    Tokend::start_with_env(&args, &[])
}

/// A node's `INFO cluster` as (nodes, slots it serves, slots assigned);
/// None while it is unreachable or moving slots.
async fn cluster_info(addr: SocketAddr) -> Option<(i64, i64, i64)> {
    let mut c = tokio::time::timeout(Duration::from_secs(1), RawConn::connect(addr)).await.ok()?;
    info_of(&mut c).await
}

async fn info_of(c: &mut RawConn) -> Option<(i64, i64, i64)> {
    let text = tokio::time::timeout(Duration::from_secs(1), c.cmd("INFO cluster")).await.ok()?.text();
    let field = |k: &str| {
        text.lines().find_map(|l| l.strip_prefix(&format!("{k}:"))).and_then(|v| v.trim().parse::<i64>().ok())
    };
    if field("cluster_slots_moving")? != 0 {
        return None;
    }
    Some((field("cluster_nodes")?, field("cluster_slots_served")?, field("cluster_slots_assigned")?))
}

/// How long fresh nodes may take to find each other and share the slots:
/// not a target (failover is, and is timed apart). Debug builds beside two
/// busy loops on a slow 2-core VM took 14-20 s, where 10 s failed 4 of 4.
const FORMING: Duration = Duration::from_secs(30);

/// Waits until every node of `addrs` knows them all, none is moving a slot,
/// and together they serve every slot; returns how long it took. Each
/// node is asked over one connection, made once.
async fn wait_stable(addrs: &[SocketAddr], within: Duration) -> Duration {
    let started = Instant::now();
    let mut conns: Vec<Option<RawConn>> = Vec::new();
    for &a in addrs {
        conns.push(tokio::time::timeout(Duration::from_secs(1), RawConn::connect(a)).await.ok());
    }
    loop {
        let mut served = 0;
        let mut ok = true;
        let mut seen = Vec::new();
        for (i, &a) in addrs.iter().enumerate() {
            if conns[i].is_none() {
                conns[i] = tokio::time::timeout(Duration::from_secs(1), RawConn::connect(a)).await.ok();
            }
            let r = match conns[i].as_mut() {
                Some(c) => info_of(c).await,
                None => None,
            };
            seen.push((a, r));
            match r {
                Some((n, mine, assigned)) if n == addrs.len() as i64 && assigned == SLOTS => served += mine,
                _ => ok = false,
            }
        }
        if ok && served == SLOTS {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "the cluster did not settle within {within:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cluster_conn(addrs: &[SocketAddr]) -> redis::cluster_async::ClusterConnection {
    let urls: Vec<String> = addrs.iter().map(|a| format!("redis://{a}")).collect();
    ClusterClient::builder(urls)
        .retries(30)
        .min_retry_wait(20)
        .max_retry_wait(200)
        .build()
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// `n` nodes on `redis`, formed (see [`wait_stable`]).
async fn formed(redis: &RedisProc, n: usize, extra: &[&str]) -> (Vec<Tokend>, Vec<SocketAddr>) {
    let nodes: Vec<Tokend> = (0..n).map(|_| node(redis, free_port(), extra)).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    wait_stable(&addrs, FORMING).await;
    (nodes, addrs)
}

/// A pool whose hash slot `addr` serves (found by asking it).
async fn pool_on(addr: SocketAddr, prefix: &str) -> String {
    let mut c = RawConn::connect(addr).await;
    for i in 0.. {
        let pool = format!("{prefix}{i}");
        if let Resp::Error(_) = c.call(&["TOKEN.STATS", &pool]).await {
            continue;
        }
        return pool;
    }
    unreachable!()
}

#[tokio::test]
async fn three_nodes_spread_the_slots_and_redirect_like_redis_cluster() {
    let redis = RedisProc::start();
    let (_nodes, addrs) = formed(&redis, 3, &[]).await;
    for &a in &addrs {
        let (_, mine, _) = cluster_info(a).await.unwrap();
        assert!((mine - SLOTS / 3).abs() < SLOTS / 3 / 10, "{a} serves {mine} slots");
    }
    let mut c = RawConn::connect(addrs[0]).await;
    let id = c.cmd("CLUSTER MYID").await.text();
    assert_eq!(id.len(), 40);
    assert_eq!(c.cmd("CLUSTER KEYSLOT foo").await.int(), 12182);
    assert_eq!(c.cmd("CLUSTER KEYSLOT {foo}bar").await.int(), 12182);
    let info = c.cmd("CLUSTER INFO").await.text();
    assert!(info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3"), "{info}");
    let text = c.cmd("CLUSTER NODES").await.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().any(|l| l.starts_with(&id) && l.contains("myself,master")), "{text}");
    let slots = c.cmd("CLUSTER SLOTS").await;
    let covered: i64 = slots.items().iter().map(|r| r.items()[1].int() - r.items()[0].int() + 1).sum();
    assert_eq!(covered, SLOTS);
    assert_eq!(c.cmd("CLUSTER SHARDS").await.items().len(), 3);
    assert_eq!(c.cmd("READONLY").await.text(), "OK");
    assert_eq!(c.cmd("READWRITE").await.text(), "OK");
    // A pool another node serves: -MOVED to it, nothing done here.
    let there = pool_on(addrs[1], "p").await;
    let err = c.call(&["TOKEN.GEN", &there]).await.err();
    let slot = c.call(&["CLUSTER", "KEYSLOT", &there]).await.int();
    assert_eq!(err, format!("MOVED {slot} {}", addrs[1]));
    // Pools of different slots in one command.
    let here = pool_on(addrs[0], "q").await;
    assert!(c.call(&["DEL", &here, &there]).await.err().starts_with("CROSSSLOT"));
    // A transaction keeps to one slot, even of this node's.
    let here_slot = c.call(&["CLUSTER", "KEYSLOT", &here]).await.int();
    let mut other = String::new();
    for i in 0.. {
        other = format!("r{i}");
        if c.call(&["CLUSTER", "KEYSLOT", &other]).await.int() != here_slot
            && !matches!(c.call(&["TOKEN.STATS", &other]).await, Resp::Error(_))
        {
            break;
        }
    }
    c.cmd("MULTI").await;
    assert_eq!(c.call(&["TOKEN.STATS", &here]).await.text(), "QUEUED");
    assert_eq!(c.call(&["TOKEN.STATS", &other]).await.text(), "QUEUED");
    assert!(c.cmd("EXEC").await.err().starts_with("CROSSSLOT"));
    // Keys of this node only, in DBSIZE and SCAN.
    c.call(&["TOKEN.GEN", &here]).await.text();
    assert_eq!(c.cmd("DBSIZE").await.int(), 1);
}

#[tokio::test]
async fn redis_cli_c_follows_moved_for_every_token_command() {
    procs::require("redis-cli");
    let redis = RedisProc::start();
    let (_nodes, addrs) = formed(&redis, 3, &[]).await;
    let cli = |args: &[&str]| -> String {
        let port = addrs[0].port().to_string();
        let out =
            std::process::Command::new("redis-cli").args(["-c", "-p", &port]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Pools on each of the three nodes, all asked through the first.
    for (i, &a) in addrs.iter().enumerate() {
        let pool = pool_on(a, &format!("cli{i}-")).await;
        let t = cli(&["TOKEN.GEN", &pool, "PX", "60000"]);
        assert_eq!(t.len(), 36, "{t}");
        let acquired = cli(&["TOKEN.ACQUIRE", &pool]);
        assert_eq!(acquired, t);
        assert_eq!(cli(&["TOKEN.KEEPALIVE", &pool, &t]), "60000");
        assert!(cli(&["TOKEN.INFO", &pool, &t]).contains("assigned"));
        assert_eq!(cli(&["TOKEN.UNBLOCK", &pool, &t]), "1");
        assert!(cli(&["TOKEN.STATS", &pool]).starts_with("total\n1\nfree\n1"));
        assert_eq!(cli(&["TOKEN.DELEXPIRED", &pool]), "0");
        assert_eq!(cli(&["TOKEN.DEL", &pool, &t]), "1");
        assert_eq!(cli(&["EXISTS", &pool]), "0");
        // It ran on the node that serves it.
        let mut c = RawConn::connect(a).await;
        assert_eq!(c.call(&["TOKEN.STATS", &pool]).await.items()[1].int(), 0);
    }
}

/// A reply with its values left out: an array as the distinct shapes of
/// its elements (so lists of different lengths compare), a map as its
/// fields with their values' shapes, in order.
fn shape(r: &Resp) -> String {
    let list = |tag: char, v: &[Resp]| {
        let mut kinds: Vec<String> = v.iter().map(shape).collect();
        kinds.sort();
        kinds.dedup();
        format!("{tag}[{}]", kinds.join("|"))
    };
    match r {
        Resp::Array(v) => list('*', v),
        Resp::Set(v) => list('~', v),
        Resp::Push(v) => list('>', v),
        Resp::Map(kv) => {
            let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{}:{}", k.text(), shape(v))).collect();
            format!("%{{{}}}", fields.join(","))
        }
        Resp::Error(e) => format!("-{e}"),
        Resp::Simple(_) => "+".into(),
        Resp::Int(_) => ":".into(),
        Resp::Bulk(_) => "$".into(),
        Resp::Verbatim(..) => "=".into(),
        other => format!("{other:?}"),
    }
}

/// The fields of a `CLUSTER INFO` text, without their values, and without
/// the counts of cluster bus messages of each type (Redis lists a type
/// once one was sent or received; tokend has no bus).
fn info_fields(r: &Resp) -> Vec<String> {
    let per_type = |k: &str| {
        k.strip_prefix("cluster_stats_messages_")
            .and_then(|k| k.strip_suffix("_sent").or_else(|| k.strip_suffix("_received")))
            .is_some_and(|kind| !kind.is_empty())
    };
    r.text().lines().filter_map(|l| l.split_once(':')).map(|(k, _)| k.to_string()).filter(|k| !per_type(k)).collect()
}

#[tokio::test]
async fn cluster_replies_have_the_shapes_a_redis_cluster_gives_them() {
    let real = RedisCluster::start(3);
    let redis = RedisProc::start();
    let (_nodes, addrs) = formed(&redis, 3, &[]).await;
    let real_addr: SocketAddr = format!("127.0.0.1:{}", real.nodes[0].port).parse().unwrap();
    for proto in ["2", "3"] {
        let mut r = RawConn::connect(real_addr).await;
        let mut t = RawConn::connect(addrs[0]).await;
        r.call(&["HELLO", proto]).await;
        t.call(&["HELLO", proto]).await;
        // A key of a slot each asked node serves, so GETKEYSINSLOT has one.
        let real_key = set_where_served(&mut r).await;
        let pool = pool_on(addrs[0], "k").await;
        t.call(&["TOKEN.GEN", &pool]).await.text();
        let real_slot = r.call(&["CLUSTER", "KEYSLOT", &real_key]).await.int().to_string();
        let slot = t.call(&["CLUSTER", "KEYSLOT", &pool]).await.int().to_string();
        let real_id = r.cmd("CLUSTER MYID").await.text();
        let id = t.cmd("CLUSTER MYID").await.text();
        let same: &[&[&str]] = &[
            &["CLUSTER", "SLOTS"],
            &["CLUSTER", "SHARDS"],
            &["CLUSTER", "MYID"],
            &["CLUSTER", "KEYSLOT", "x"],
            &["CLUSTER", "INFO"],
            &["CLUSTER", "NODES"],
            &["CLUSTER", "HELP"],
            &["CLUSTER", "COUNTKEYSINSLOT", "{slot}"],
            &["CLUSTER", "GETKEYSINSLOT", "{slot}", "10"],
            &["CLUSTER", "REPLICAS", "{id}"],
            &["CLUSTER", "REPLICAS", "0123456789012345678901234567890123456789"],
            &["CLUSTER", "COUNTKEYSINSLOT", "16384"],
            &["CLUSTER", "COUNTKEYSINSLOT", "16383"],
            &["CLUSTER", "GETKEYSINSLOT", "16383", "1"],
            &["CLUSTER", "GETKEYSINSLOT", "{slot}", "0"],
            &["CLUSTER", "GETKEYSINSLOT", "0", "-1"],
            &["CLUSTER", "GETKEYSINSLOT", "x", "1"],
            &["CLUSTER", "GETKEYSINSLOT", "0"],
            &["CLUSTER", "LINKS", "x"],
            &["CLUSTER", "NOSUCH"],
            &["READONLY"],
            &["READWRITE"],
            &["ASKING"],
        ];
        for cmd in same {
            let fill = |slot: &str, id: &str| -> Vec<String> {
                cmd.iter().map(|a| a.replace("{slot}", slot).replace("{id}", id)).collect()
            };
            let (a, b) = (r.call(&fill(&real_slot, &real_id)).await, t.call(&fill(&slot, &id)).await);
            assert_eq!(shape(&a), shape(&b), "RESP{proto} {cmd:?}:\nredis:  {a:?}\ntokend: {b:?}");
        }
        assert_eq!(info_fields(&r.cmd("CLUSTER INFO").await), info_fields(&t.cmd("CLUSTER INFO").await));
        // The same pools the slot's count counts.
        assert_eq!(t.call(&["CLUSTER", "GETKEYSINSLOT", &slot, "10"]).await.items(), [Resp::Bulk(pool.clone().into())]);
        assert_eq!(
            r.call(&["CLUSTER", "GETKEYSINSLOT", &real_slot, "10"]).await.items(),
            [Resp::Bulk(real_key.clone().into())]
        );
        // `CLUSTER NODES`: the same fields on every line.
        for c in [&mut r, &mut t] {
            let text = c.cmd("CLUSTER NODES").await.text();
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                assert!(f.len() >= 9 && f[0].len() == 40, "{line}");
                let (addr, bus) = f[1].split_once('@').unwrap();
                assert!(addr.parse::<SocketAddr>().is_ok() && bus.parse::<u16>().is_ok(), "{line}");
                assert!(f[2].ends_with("master") && f[3] == "-" && f[7] == "connected", "{line}");
                assert!(f[4..7].iter().all(|n| n.parse::<u64>().is_ok()), "{line}");
            }
        }
        // Inside a transaction that holds the pool's shard, as in Redis.
        r.cmd("MULTI").await;
        t.cmd("MULTI").await;
        r.call(&["GET", &real_key]).await;
        t.call(&["TOKEN.STATS", &pool]).await;
        for (c, slot) in [(&mut r, &real_slot), (&mut t, &slot)] {
            c.call(&["CLUSTER", "COUNTKEYSINSLOT", slot]).await;
            c.call(&["CLUSTER", "GETKEYSINSLOT", slot, "10"]).await;
        }
        let (a, b) = (r.cmd("EXEC").await, t.cmd("EXEC").await);
        let cluster_part = |x: &Resp| shape(&Resp::Array(x.items()[1..].to_vec()));
        assert_eq!(cluster_part(&a), cluster_part(&b), "RESP{proto}:\nredis:  {a:?}\ntokend: {b:?}");
        assert_eq!(b.items()[1].int(), 1, "{b:?}");
        assert_eq!(b.items()[2].items(), [Resp::Bulk(pool.clone().into())]);
        // A link list; tokend's is empty (its nodes meet in the backing Redis).
        assert!(!r.cmd("CLUSTER LINKS").await.items().is_empty());
        assert!(t.cmd("CLUSTER LINKS").await.items().is_empty());
        if proto == "3" {
            // GETKEYSINSLOT's count: a second key in the slot (a hash tag),
            // then one of the two, then both.
            r.call(&["SET", &format!("{{{real_key}}}2"), "v"]).await.text();
            t.call(&["TOKEN.GEN", &format!("{{{pool}}}2")]).await.text();
            for (c, slot) in [(&mut r, &real_slot), (&mut t, &slot)] {
                assert_eq!(c.call(&["CLUSTER", "GETKEYSINSLOT", slot, "1"]).await.items().len(), 1);
                assert_eq!(c.call(&["CLUSTER", "GETKEYSINSLOT", slot, "10"]).await.items().len(), 2);
                assert_eq!(c.call(&["CLUSTER", "COUNTKEYSINSLOT", slot]).await.int(), 2);
            }
        }
    }
    // redis-cli's own check of a cluster passes.
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "check", &addrs[0].to_string()])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[OK] All nodes agree about slots configuration."), "{text}");
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
}

/// Every command a cluster node lists, queued inside MULTI (see
/// [`common::every_command_inside_exec`]), on a node that writes through to
/// its backing Redis before it answers.
#[tokio::test]
async fn every_command_inside_exec_answers_on_a_cluster_node() {
    let redis = RedisProc::start();
    let (_nodes, addrs) = formed(&redis, 1, &["--durability", "sync", "--enable-flush", "yes"]).await;
    common::every_command_inside_exec(addrs[0]).await;
}

/// Sets keys `k0`, `k1`… on the redis-server `c` is connected to until
/// one is of a slot it serves (the others answer -MOVED); returns it.
async fn set_where_served(c: &mut RawConn) -> String {
    for i in 0.. {
        let key = format!("k{i}");
        if !matches!(c.call(&["SET", &key, "v"]).await, Resp::Error(_)) {
            return key;
        }
    }
    unreachable!()
}

/// A cluster client of another language, run as a child process by
/// [`client_scripts_follow_the_slots_through_a_node_s_death`]: it prints
/// one JSON line when each of its two phases is done, and starts the
/// second on a line on its stdin.
struct Script {
    what: String,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Script {
    fn start(mut cmd: std::process::Command, what: &str) -> Script {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start it ({e}): run scripts/setup.sh"));
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Script { what: what.into(), child, lines }
    }

    /// The next JSON line, within a minute (the script fails the test if it
    /// exits first).
    fn line(&mut self) -> serde_json::Value {
        match self.lines.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => serde_json::from_str(&l).unwrap_or_else(|e| panic!("{}: {e}: {l}", self.what)),
            Err(_) => {
                let _ = self.child.kill();
                panic!("{} printed no line: {:?}", self.what, self.child.wait());
            }
        }
    }

    fn go_on(&mut self) {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap(), "go").unwrap();
    }

    /// Waits (at most 30 s) for the script to exit 0.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{} did not exit within 30 s", self.what);
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(st.success(), "{} exited {st}", self.what);
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node of `addrs` that serves `pool` (the others answer -MOVED), and
/// the pool's token count there.
async fn served_by(addrs: &[SocketAddr], pool: &str) -> (SocketAddr, i64) {
    let mut found = Vec::new();
    for &a in addrs {
        let mut c = RawConn::connect(a).await;
        if let r @ Resp::Array(_) = c.call(&["TOKEN.STATS", pool]).await {
            found.push((a, common::stats_of(&r)[0]));
        }
    }
    assert_eq!(found.len(), 1, "{pool} is served by {found:?}");
    found[0]
}

/// redis-py's RedisCluster and ioredis's Cluster, each knowing only the
/// first node: every token command lands on the node that serves its
/// pool, and when that first node dies (kill -9) both find the slots'
/// new owners and every token made before is there.
#[tokio::test]
async fn python_and_node_cluster_clients_follow_the_slots_through_a_node_s_death() {
    procs::require(procs::PYTHON);
    procs::require("node");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("examples/node/node_modules");
    assert!(modules.join("ioredis").is_dir(), "examples/node has no node_modules: run scripts/setup.sh");
    let redis = RedisProc::start();
    let (mut nodes, addrs) = formed(&redis, 3, &[]).await;
    let port = addrs[0].port().to_string();
    let fixtures = root.join("tests/fixtures/cluster_clients");
    let mut py = std::process::Command::new(procs::PYTHON);
    py.arg(fixtures.join("redis_py.py")).args([&port, "30"]);
    let mut js = std::process::Command::new("node");
    js.arg(fixtures.join("ioredis.js")).args([&port, "30"]).env("NODE_PATH", &modules);
    let mut scripts = [Script::start(py, "redis_py.py"), Script::start(js, "ioredis.js")];
    let mut pools = Vec::new();
    let mut routed = serde_json::Map::new();
    for s in &mut scripts {
        let made = s.line();
        for (pool, slot) in made["slots"].as_object().unwrap() {
            pools.push((pool.clone(), slot.as_i64().unwrap()));
        }
        routed.extend(made.get("nodes").and_then(|n| n.as_object()).cloned().unwrap_or_default());
    }
    assert_eq!(pools.len(), 60);
    assert_eq!(routed.len(), 30, "redis-py names the node of each of its pools");
    let mut on_first = 0;
    let mut c = RawConn::connect(addrs[0]).await;
    for (pool, slot) in &pools {
        assert_eq!(c.call(&["CLUSTER", "KEYSLOT", pool]).await.int(), *slot);
        let (at, total) = served_by(&addrs, pool).await;
        assert_eq!(total, 2, "{pool}");
        if let Some(port) = routed.get(pool) {
            // redis-py sent it there without a redirect (it reads the
            // pool's position from `COMMAND`).
            assert_eq!(port.as_u64(), Some(u64::from(at.port())), "{pool}");
        }
        on_first += usize::from(at == addrs[0]);
    }
    assert!(on_first > 0 && on_first < pools.len(), "{on_first} of the pools on the first node");
    nodes[0].kill9();
    for s in &mut scripts {
        s.go_on();
    }
    for s in &mut scripts {
        let seen = s.line();
        let totals = seen["totals"].as_object().unwrap();
        assert_eq!(totals.len(), 30, "{seen}");
        assert!(totals.values().all(|t| t.as_i64() == Some(2)), "{seen}");
    }
    for s in scripts {
        s.finish();
    }
    wait_stable(&addrs[1..], FORMING).await;
    for (pool, _) in &pools {
        assert_eq!(served_by(&addrs[1..], pool).await.1, 2, "{pool}");
    }
}

/// Clients cycling ACQUIRE → KEEPALIVE → UNBLOCK through the redis crate's
/// cluster client; every token a client holds is recorded, and a token
/// held by two clients at once fails the test.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(addrs: &[SocketAddr], pools: &[String], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let held: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
        let mut tasks = Vec::new();
        for k in 0..clients {
            let mut con = cluster_conn(addrs).await;
            let (stop, ok, failed, errors, held) =
                (stop.clone(), ok.clone(), failed.clone(), errors.clone(), held.clone());
            let pools = pools.to_vec();
            tasks.push(tokio::spawn(async move {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    // Paced: the point is correctness under load, and the
                    // nodes are debug builds sharing two cores with the test.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    i = (i + 7) % pools.len();
                    let pool = &pools[i];
                    let fail = |e: redis::RedisError| {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut v = errors.lock().unwrap();
                        if v.len() < 20 {
                            v.push(e.to_string());
                        }
                    };
                    let t: Option<String> = match redis::cmd("TOKEN.ACQUIRE").arg(pool).query_async(&mut con).await {
                        Ok(t) => t,
                        Err(e) => {
                            fail(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let Some(t) = t else { continue };
                    assert!(held.lock().unwrap().insert((pool.clone(), t.clone())), "{pool} {t} held twice");
                    match redis::cmd("TOKEN.KEEPALIVE").arg(pool).arg(&t).query_async::<i64>(&mut con).await {
                        Ok(_) => {}
                        Err(e) => fail(e),
                    }
                    // Released from the record before UNBLOCK is sent: once it is
                    // applied another client may take the token.
                    held.lock().unwrap().remove(&(pool.clone(), t.clone()));
                    match redis::cmd("TOKEN.UNBLOCK").arg(pool).arg(&t).query_async::<i64>(&mut con).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => fail(e),
                    }
                }
            }));
        }
        Load { stop, ok, failed, errors, tasks }
    }

    /// Stops the clients; (cycles completed, operations failed).
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a client task failed");
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), errors)
    }
}

/// Follows redirects the way a cluster client does, without a pause, for
/// keys spread over every slot block, from every node in turn, until
/// stopped; collects each path that came back to a node it had left (a
/// `-MOVED` loop: a client retrying at once spends its retries in it).
struct Bounces {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Bounces {
    fn start(addrs: &[SocketAddr]) -> Bounces {
        let stop = Arc::new(AtomicBool::new(false));
        let starts: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let mut conns: std::collections::HashMap<String, RawConn> = Default::default();
            let (mut asked, mut loops) = (0u64, Vec::new());
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("bounce-{}", i % 1024);
                let mut at = starts[i % starts.len()].clone();
                let mut path = vec![at.clone()];
                loop {
                    if !conns.contains_key(&at) {
                        conns.insert(at.clone(), RawConn::connect(at.parse().unwrap()).await);
                    }
                    asked += 1;
                    let r = conns.get_mut(&at).unwrap().call(&["TOKEN.STATS", &key]).await;
                    let Resp::Error(e) = r else { break };
                    let Some(to) = e.strip_prefix("MOVED ").and_then(|m| m.split(' ').nth(1)) else { break };
                    if path.iter().any(|p| p == to) {
                        path.push(to.to_string());
                        if loops.len() < 10 {
                            loops.push(format!("{key}: {}", path.join(" -> ")));
                        }
                        break;
                    }
                    at = to.to_string();
                    path.push(at.clone());
                }
            }
            (asked, loops)
        });
        Bounces { stop, task }
    }

    /// Stops; (requests sent, the loops found).
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the redirect probe failed")
    }
}

/// Makes `per_pool` tokens in each of `n` pools; returns the pools.
async fn fill(addrs: Vec<SocketAddr>, n: usize, per_pool: usize) -> Vec<String> {
    let mut con = cluster_conn(&addrs).await;
    let pools: Vec<String> = (0..n).map(|i| format!("pool-{i}")).collect();
    for p in &pools {
        let made: Vec<String> = redis::cmd("TOKEN.GEN")
            .arg(p)
            .arg("PX")
            .arg(600_000)
            .arg("COUNT")
            .arg(per_pool)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(made.len(), per_pool);
    }
    pools
}

/// TOKEN.STATS total and assigned summed over `pools`.
async fn totals(addrs: &[SocketAddr], pools: &[String]) -> (i64, i64) {
    let mut con = cluster_conn(addrs).await;
    let (mut total, mut assigned) = (0, 0);
    for p in pools {
        let s: Vec<redis::Value> = redis::cmd("TOKEN.STATS").arg(p).query_async(&mut con).await.unwrap();
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => *i,
            v => panic!("{v:?}"),
        };
        total += int(&s[1]);
        assigned += int(&s[5]);
    }
    (total, assigned)
}

#[tokio::test]
async fn a_killed_node_s_slots_are_served_again_within_5_s_and_nothing_acknowledged_is_lost() {
    let redis = RedisProc::start();
    kill_one_under_load(&redis.url()).await;
}

#[tokio::test]
async fn the_same_over_a_backing_redis_cluster_of_three_masters() {
    let backing = RedisCluster::start(3);
    kill_one_under_load(&backing.url()).await;
    // The state is spread over the three masters, each slot's keys where
    // Redis Cluster puts that slot.
    for (i, n) in backing.nodes.iter().enumerate() {
        let keys: Vec<String> = redis::cmd("KEYS").arg("tokend:*").query(&mut n.conn()).unwrap();
        assert!(keys.iter().any(|k| k.contains(":slab:")), "master {i} holds no pool");
        assert!(keys.iter().any(|k| k.ends_with(":fence")), "master {i} holds no fence");
    }
}

/// Three nodes over the backing store at `url`, a cluster client's load
/// of ACQUIRE → KEEPALIVE → UNBLOCK cycles on 200 pools, and a kill -9 of
/// one node: its slots are served again within 5 s, no token is ever held
/// twice, and every token is still there.
async fn kill_one_under_load(url: &str) {
    let mut nodes: Vec<Tokend> = (0..3).map(|_| node_on(url, free_port(), &[])).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    wait_stable(&addrs, FORMING).await;
    let per_pool = 200;
    let clients = 8;
    let pools = match tokio::spawn(fill(addrs.clone(), 200, per_pool)).await {
        Ok(p) => p,
        Err(e) => {
            for (i, n) in nodes.iter().enumerate() {
                for l in n.logs() {
                    eprintln!("node {i}: {l}");
                }
            }
            panic!("{e}");
        }
    };
    let load = Load::start(&addrs, &pools, clients).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[0].kill9();
    let killed = Instant::now();
    // Measured from a thread of its own: the test's runtime is busy with
    // the clients.
    let survivors = addrs[1..].to_vec();
    let took = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(wait_stable(&survivors, Duration::from_secs(10)))
    })
    .join()
    .unwrap();
    let failover = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;
    eprintln!("failover {failover:?} (settled {took:?} after the kill); {ok} cycles, {failed} failed: {errors:?}");
    for n in &nodes[1..] {
        for l in n.logs().iter().filter(|l| l.contains("membership") || l.contains("claimed")) {
            eprintln!("{l}");
        }
    }
    assert!(failover < Duration::from_secs(5), "slots served again after {failover:?}");
    assert!(ok > 100, "{ok} cycles");
    // Every token is still there. A token stays assigned only where the kill
    // cut a cycle: an operation that failed, or one request in flight per
    // client (an ACQUIRE applied whose reply was lost is retried by the
    // client elsewhere; the token it got first keeps its lease).
    let (total, assigned) = totals(&addrs[1..], &pools).await;
    assert_eq!(total, (pools.len() * per_pool) as i64);
    assert!(assigned <= failed as i64 + clients as i64, "{assigned} assigned, {failed} failed operations");
}

#[tokio::test]
async fn sigterm_hands_the_slots_over_and_a_rolling_restart_fails_nothing() {
    let redis = RedisProc::start();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Tokend> = ports.iter().map(|&p| node(&redis, p, &[])).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    wait_stable(&addrs, FORMING).await;
    let pools = fill(addrs.clone(), 50, 20).await;
    // A client blocked on a pool of the first node is told where it went.
    let empty = pool_on(addrs[0], "empty-").await;
    let mut blocked = RawConn::connect(addrs[0]).await;
    blocked.send(&["TOKEN.ACQUIRE", &empty, "BLOCK", "0"]).await;
    common::wait_for_waiters(&mut RawConn::connect(addrs[0]).await, &empty, 1).await;
    let load = Load::start(&addrs, &pools, 4).await;
    for (i, &port) in ports.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let st = nodes[i].terminate();
        assert!(st.success(), "{st:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "stopping took {:?}", started.elapsed());
        if i == 0 {
            let r = blocked.read_within(Duration::from_secs(2)).await.expect("the blocked client got a reply");
            assert!(r.err().starts_with("MOVED "), "{r:?}");
        }
        nodes[i] = node(&redis, port, &[]);
        wait_stable(&addrs, Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, errors) = load.finish().await;
    assert!(ok > 100, "{ok} cycles");
    assert_eq!(failed, 0, "{errors:?}");
    let (total, assigned) = totals(&addrs, &pools).await;
    assert_eq!((total, assigned), (pools.len() as i64 * 20, 0));
}

/// A graceful stop over a slow backing Redis (it runs a fifth of the
/// time), whose flush of acknowledged async writes outlasts the node
/// timeout: the node renews its heartbeat until its slots are handed over,
/// so its writer does not stop for want of a lease before the flush ends,
/// no other node takes the slots meanwhile, and the one that takes them
/// loads every token. On optimised nodes GEN outruns the writer and the
/// backlog is there; a debug build writes as fast as it generates, and
/// checks the path only.
#[tokio::test]
async fn a_graceful_stop_over_a_slow_backing_redis_writes_every_token() {
    let redis = RedisProc::start();
    let gens = if cfg!(debug_assertions) { 2 } else { 9 };
    let args = ["--cluster-node-timeout", "1s", "--durability", "async"];
    let (mut nodes, addrs) = formed(&redis, 2, &args).await;
    let pool = pool_on(addrs[0], "big-").await;
    let mut c = RawConn::connect(addrs[0]).await;
    for _ in 0..gens {
        c.send(&["TOKEN.GEN", &pool, "COUNT", "100000"]).await;
    }
    for _ in 0..gens {
        assert_eq!(c.read().await.items().len(), 100000);
    }
    let info = c.cmd("INFO persistence").await.text();
    let backlog = info.lines().find(|l| l.starts_with("backing_backlog:")).unwrap_or_default().to_string();
    if !cfg!(debug_assertions) {
        assert_ne!(backlog, "backing_backlog:0", "the writer kept up: nothing to flush at the stop");
    }
    let slow = Arc::new(AtomicBool::new(true));
    let throttle = {
        let (slow, pid) = (slow.clone(), redis.pid());
        std::thread::spawn(move || {
            while slow.load(Ordering::Relaxed) {
                procs::signal_pid(pid, libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(17));
                procs::signal_pid(pid, libc::SIGCONT);
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let started = Instant::now();
    let st = nodes[0].terminate();
    let took = started.elapsed();
    slow.store(false, Ordering::Relaxed);
    throttle.join().unwrap();
    let logs = nodes[0].logs();
    assert!(st.success(), "{st:?}: {logs:?}");
    assert!(took < Duration::from_secs(8), "stopping took {took:?} ({backlog}): {logs:#?}");
    wait_stable(&addrs[1..], Duration::from_secs(10)).await;
    let s = RawConn::connect(addrs[1]).await.call(&["TOKEN.STATS", &pool]).await;
    assert_eq!(s.items()[1].int(), gens * 100000, "{s:?} (the stop took {took:?}; {backlog}) {logs:#?}");
}

#[tokio::test]
async fn a_fourth_node_joins_under_load_and_takes_a_quarter_of_the_slots() {
    let redis = RedisProc::start();
    // Heartbeats half a second apart, the nodes started a third of that
    // apart: each learns of the join at its own time, as on real machines.
    let timeout = ["--cluster-node-timeout", "10s"];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&redis, free_port(), &timeout));
        tokio::time::sleep(Duration::from_millis(170)).await;
    }
    let mut addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    wait_stable(&addrs, FORMING).await;
    let pools = fill(addrs.clone(), 50, 20).await;
    let load = Load::start(&addrs, &pools, 4).await;
    let bounces = Bounces::start(&addrs);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes.push(node(&redis, free_port(), &timeout));
    addrs.push(nodes[3].addr);
    wait_stable(&addrs, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, errors) = load.finish().await;
    // Some blocks move between the old nodes too: each of those goes to a
    // node that learns of the join at its own next heartbeat.
    let (asked, loops) = bounces.finish().await;
    assert!(asked > 200, "{asked} requests");
    assert!(loops.is_empty(), "redirect loops in {asked} requests: {loops:?}");
    let (_, mine, _) = cluster_info(addrs[3]).await.unwrap();
    assert!((mine - SLOTS / 4).abs() < SLOTS / 4 / 10, "the new node serves {mine} slots");
    assert!(ok > 100, "{ok} cycles");
    assert_eq!(failed, 0, "{errors:?}");
    let (total, assigned) = totals(&addrs, &pools).await;
    assert_eq!((total, assigned), (pools.len() as i64 * 20, 0));
}

#[tokio::test]
async fn a_paused_node_acknowledges_nothing_for_the_slots_it_lost_and_rejoins() {
    let redis = RedisProc::start();
    let timeout = ["--cluster-node-timeout", "1s"];
    let (nodes, addrs) = formed(&redis, 3, &timeout).await;
    let pool = pool_on(addrs[0], "paused-").await;
    let mut c = RawConn::connect(addrs[0]).await;
    c.call(&["TOKEN.GEN", &pool, "COUNT", "3"]).await;
    nodes[0].signal(libc::SIGSTOP);
    // Sent while it is stopped: read once it resumes.
    c.send(&["TOKEN.GEN", &pool, "COUNT", "5"]).await;
    wait_stable(&addrs[1..], Duration::from_secs(10)).await;
    let mut con = cluster_conn(&addrs[1..]).await;
    let _: Vec<String> = redis::cmd("TOKEN.GEN").arg(&pool).arg("COUNT").arg(1).query_async(&mut con).await.unwrap();
    nodes[0].signal(libc::SIGCONT);
    let r = c.read().await;
    let e = r.err();
    assert!(e.starts_with("CLUSTERDOWN") || e.starts_with("MOVED") || e.starts_with("TRYAGAIN"), "{r:?}");
    // Nothing it tried reached the backing Redis: 3 + 1 tokens.
    let s: Vec<redis::Value> = redis::cmd("TOKEN.STATS").arg(&pool).query_async(&mut con).await.unwrap();
    assert_eq!(s[1], redis::Value::Int(4));
    // It rejoins: three nodes again, every slot served.
    wait_stable(&addrs, Duration::from_secs(10)).await;
    let s: Vec<redis::Value> = redis::cmd("TOKEN.STATS").arg(&pool).query_async(&mut con).await.unwrap();
    assert_eq!(s[1], redis::Value::Int(4));
}

/// A node whose heartbeat lapses drops what it had queued, and loads its
/// slots again when it rejoins. A change its writer was still retrying
/// (the backing Redis at `maxmemory`) may still go through under the
/// fence of the incarnation that made it, before the node claims the slot
/// again (nobody else held it: the load then reads it back), but never
/// under the new incarnation's fence after the load: memory and the
/// backing Redis agree whichever comes first.
#[tokio::test]
async fn a_lapsed_node_never_writes_what_it_queued_before_the_lapse_over_what_it_loaded() {
    let redis = RedisProc::start();
    let a = node(&redis, free_port(), &["--cluster-node-timeout", "1s", "--persist-timeout", "200ms"]);
    wait_stable(&[a.addr], Duration::from_secs(10)).await;
    let mut c = RawConn::connect(a.addr).await;
    c.call(&["TOKEN.GEN", "p", "COUNT", "3"]).await;
    let mut r = redis.conn();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query(&mut r).unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query(&mut r).unwrap();
    // Applied here, not confirmed: the writer keeps trying it.
    let e = c.call(&["TOKEN.ACQUIRE", "p"]).await.err();
    assert!(e.starts_with("TRYAGAIN the backing Redis did not confirm"), "{e}");
    let lapsed = a.wait_log("heartbeat lapsed", Duration::from_secs(10));
    assert!(lapsed.is_some(), "no lapse: {:?}", a.logs());
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut r).unwrap();
    wait_stable(&[a.addr], Duration::from_secs(10)).await;
    // Its writer is done with what it had.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = c.call(&["INFO", "persistence"]).await.text();
        if info.contains("backing_backlog:0\r\n") && info.contains("backing_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "{info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = common::stats_of(&c.call(&["TOKEN.STATS", "p"]).await);
    let records = common::backing_records(&mut r, "p");
    let assigned = records.values().filter(|v| v.starts_with("a:")).count() as i64;
    assert_eq!((records.len() as i64, assigned), (stats[0], stats[2]), "memory {stats:?}, backing {records:?}");
    assert_eq!(stats[0], 3);
    // And the node writes again.
    let _ = c.call(&["TOKEN.ACQUIRE", "p"]).await.text();
    let records = common::backing_records(&mut r, "p");
    assert_eq!(records.values().filter(|v| v.starts_with("a:")).count() as i64, stats[2] + 1, "{records:?}");
}

/// A client's PUBLISH on one node reaches the subscribers of every node,
/// each once, as Redis Cluster broadcasts it; its count is the node's own.
#[tokio::test]
async fn publish_reaches_the_subscribers_of_every_node_once() {
    let redis = RedisProc::start();
    let (_nodes, addrs) = formed(&redis, 2, &[]).await;
    let mut subs = Vec::new();
    for &a in &addrs {
        let mut s = RawConn::connect(a).await;
        s.cmd("SUBSCRIBE news").await;
        subs.push(s);
    }
    let mut c = RawConn::connect(addrs[0]).await;
    assert_eq!(c.cmd("PUBLISH news hello").await.int(), 1, "the subscriber of this node");
    assert_eq!(c.cmd("PUBLISH elsewhere x").await.int(), 0);
    for s in &mut subs {
        let m = s.read_within(Duration::from_secs(5)).await.expect("the message");
        assert_eq!(m.items().iter().map(Resp::text).collect::<Vec<_>>(), ["message", "news", "hello"]);
        assert!(s.read_within(Duration::from_millis(300)).await.is_none(), "once");
    }
}

/// PUBLISH messages for the other nodes are best effort and bounded, as
/// on a Redis Cluster bus: while the backing Redis hangs (for less than
/// the node timeout: the node still serves), 200 MB of them hold at most
/// the bound in memory and take nothing from the writes' backlog; once it
/// is back, what was held reaches the other node, and a new message too.
#[tokio::test]
async fn publish_relays_are_bounded_while_the_backing_redis_hangs() {
    let redis = RedisProc::start();
    let args = ["--cluster-node-timeout", "30s"];
    let (nodes, addrs) = formed(&redis, 2, &args).await;
    let mut sub = RawConn::connect(addrs[1]).await;
    sub.cmd("SUBSCRIBE news").await;
    let mut c = RawConn::connect(addrs[0]).await;
    let before = nodes[0].rss_kib();
    redis.signal(libc::SIGSTOP);
    let big = vec![b'x'; 1 << 20];
    for _ in 0..200 {
        assert_eq!(c.call(&[&b"PUBLISH"[..], b"news", &big]).await.int(), 0);
    }
    let grown_mb = nodes[0].rss_kib().saturating_sub(before) / 1024;
    let info = c.cmd("INFO persistence").await.text();
    redis.signal(libc::SIGCONT);
    assert!(grown_mb < 100, "200 MB published, {grown_mb} MB held");
    assert!(info.lines().any(|l| l == "backing_backlog:0"), "{info}");
    wait_stable(&addrs, Duration::from_secs(10)).await;
    assert_eq!(c.cmd("PUBLISH news after").await.int(), 0);
    let mut big_ones = 0;
    loop {
        let m = sub.read_within(Duration::from_secs(10)).await.expect("the message published after");
        let payload = &m.items()[2];
        if payload.text() == "after" {
            break;
        }
        big_ones += 1;
    }
    assert!((1..=32).contains(&big_ones), "{big_ones} of the 1 MB messages delivered (32 MB held at most)");
}

/// A node paused past the node timeout finds, as it resumes, expiries
/// overdue in pools it no longer serves: it must not publish them, since
/// their new owner already did (its events are guarded by its own fence
/// only, which nobody else takes).
#[tokio::test]
async fn a_paused_node_does_not_repeat_the_expiries_its_slots_new_owner_published() {
    let redis = RedisProc::start();
    let timeout = ["--cluster-node-timeout", "1s"];
    let (nodes, addrs) = formed(&redis, 2, &timeout).await;
    let mut sub = RawConn::connect(addrs[1]).await;
    sub.cmd("SUBSCRIBE __keyevent@0__:expired").await;
    let pool = pool_on(addrs[0], "paused-ev-").await;
    let mut c = RawConn::connect(addrs[0]).await;
    let made: HashSet<String> = c
        .call(&["TOKEN.GEN", &pool, "PX", "1500", "COUNT", "5"])
        .await
        .items()
        .iter()
        .map(|t| format!("{pool}:{}", t.text()))
        .collect();
    nodes[0].signal(libc::SIGSTOP);
    let mut got = HashSet::new();
    while got.len() < made.len() {
        let m = sub.read_within(Duration::from_secs(10)).await.expect("the new owner's expired events");
        let msg = m.items()[2].text();
        assert!(got.insert(msg.clone()), "{msg} delivered twice");
    }
    assert_eq!(got, made);
    nodes[0].signal(libc::SIGCONT);
    // It finds its heartbeat lapsed and rejoins.
    wait_stable(&addrs, Duration::from_secs(10)).await;
    if let Some(m) = sub.read_within(Duration::from_millis(500)).await {
        panic!("published again by the paused node: {m:?}");
    }
}

#[tokio::test]
async fn a_subscriber_on_any_node_gets_every_node_s_expiries_once() {
    let redis = RedisProc::start();
    let (_nodes, addrs) = formed(&redis, 3, &[]).await;
    let mut sub = RawConn::connect(addrs[0]).await;
    sub.cmd("SUBSCRIBE __keyevent@0__:expired").await;
    let mut expected = HashSet::new();
    for (i, &a) in addrs.iter().enumerate() {
        let pool = pool_on(a, &format!("ev{i}-")).await;
        let mut c = RawConn::connect(a).await;
        for t in c.call(&["TOKEN.GEN", &pool, "PX", "200", "COUNT", "5"]).await.items() {
            expected.insert(format!("{pool}:{}", t.text()));
        }
    }
    let mut got = HashSet::new();
    while got.len() < expected.len() {
        let m = sub.read_within(Duration::from_secs(5)).await.expect("an expired event");
        let msg = m.items()[2].text();
        assert!(got.insert(msg.clone()), "{msg} delivered twice");
    }
    assert_eq!(got, expected);
    assert!(sub.read_within(Duration::from_millis(500)).await.is_none(), "no duplicate afterwards");
}

#[tokio::test]
async fn cluster_commands_without_cluster_mode_answer_as_redis_does() {
    let mut t = Tokend::start(&[]);
    let mut c = RawConn::connect(t.addr).await;
    assert_eq!(c.cmd("CLUSTER SLOTS").await.err(), "ERR This instance has cluster support disabled");
    // Each as a redis-server 7.0 without cluster mode answers it: refused
    // before its arguments are looked at, an arity error first.
    let redis = RedisProc::start();
    let mut r = RawConn::connect(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    for line in [
        "CLUSTER KEYSLOT foo",
        "CLUSTER HELP",
        "CLUSTER LINKS",
        "CLUSTER COUNTKEYSINSLOT 99999",
        "CLUSTER GETKEYSINSLOT x 1",
        "CLUSTER GETKEYSINSLOT 0",
        "CLUSTER REPLICAS x",
        "CLUSTER MYID x",
        "READONLY",
    ] {
        assert_eq!(c.cmd(line).await, r.cmd(line).await, "{line}");
    }
    assert!(c.cmd("INFO cluster").await.text().contains("cluster_enabled:0"));
    t.terminate();
    // Cluster mode needs a backing Redis.
    let child = Tokend::spawn(&["--port", "0", "--cluster-enabled", "yes"], &[]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --redis"));
}

/// A TCP proxy on loopback that the test can cut (bytes stop flowing both
/// ways, connections stay open: a network partition) and heal (what was
/// held back flows on, as TCP retransmits after a partition).
struct Proxy {
    addr: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Runs on a thread of its own: the tests block their runtime while
    /// they wait for a tokend to start.
    fn start(target: SocketAddr) -> Proxy {
        let (open, _) = tokio::sync::watch::channel(true);
        let gate = open.clone();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pipe(cr, sw, gate.subscribe()));
                    tokio::spawn(pipe(sr, cw, gate.subscribe()));
                }
            });
        });
        Proxy { addr, open }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn heal(&self) {
        self.open.send_replace(true);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if open.wait_for(|o| *o).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read during a cut: held until it heals.
        if open.wait_for(|o| *o).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// One node reaches the backing Redis through a proxy; the proxy is cut
/// while its clients still reach it. It must stop serving its slots before
/// another node can serve them (no client is served by two owners), in
/// sync and in async mode, and rejoin once the cut heals.
async fn cut_off(durability: &str) {
    let redis = RedisProc::start();
    let redis_addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let proxy = Proxy::start(redis_addr);
    let timeout = ["--cluster-node-timeout", "1s", "--durability", durability];
    let via = format!("redis://{}", proxy.addr);
    let cut_port = free_port().to_string();
    let mut args = vec!["--port", &cut_port, "--redis", &via, "--cluster-enabled", "yes"];
    args.extend_from_slice(&timeout);
    let a = Tokend::start_with_env(&args, &[]);
    let others: Vec<Tokend> = (0..2).map(|_| node(&redis, free_port(), &timeout)).collect();
    let addrs = vec![a.addr, others[0].addr, others[1].addr];
    wait_stable(&addrs, FORMING).await;
    let pool = pool_on(a.addr, "cut-").await;
    let mut on_a = RawConn::connect(a.addr).await;
    on_a.call(&["TOKEN.GEN", &pool, "COUNT", "10"]).await;
    // Async mode may lose what was acknowledged within a flush interval of
    // the cut (see the docs); the check below is about who serves, so
    // the tokens are in the backing Redis first.
    let mut r = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::backing_records(&mut r, &pool).len() < 10 {
        assert!(Instant::now() < deadline, "the tokens never reached the backing Redis");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut on_b = RawConn::connect(others[0].addr).await;
    let mut on_c = RawConn::connect(others[1].addr).await;
    proxy.cut();
    let cut = Instant::now();
    // The last time A served the pool, and the first time B or C did. B
    // and C are asked before A in each round, so an A that still serves
    // once another node does is caught; the rounds go on for 300 ms after
    // the takeover, A refusing throughout.
    let mut a_last = None;
    let mut other_first: Option<Duration> = None;
    while other_first.is_none_or(|f| cut.elapsed() < f + Duration::from_millis(300)) {
        assert!(cut.elapsed() < Duration::from_secs(10), "nobody took the slot over");
        for c in [&mut on_b, &mut on_c] {
            if !matches!(c.call(&["TOKEN.STATS", &pool]).await, Resp::Error(_)) {
                other_first.get_or_insert(cut.elapsed());
            }
        }
        let r = on_a.call(&["TOKEN.STATS", &pool]).await;
        if !matches!(r, Resp::Error(_)) {
            a_last = Some(cut.elapsed());
        } else {
            let e = r.err();
            assert!(e.starts_with("CLUSTERDOWN") || e.starts_with("TRYAGAIN"), "{e}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other_first = other_first.unwrap();
    assert!(a_last.is_none_or(|a| a < other_first), "A served until {a_last:?}, another node from {other_first:?}");
    proxy.heal();
    wait_stable(&addrs, Duration::from_secs(20)).await;
    let mut con = cluster_conn(&addrs).await;
    let s: Vec<redis::Value> = redis::cmd("TOKEN.STATS").arg(&pool).query_async(&mut con).await.unwrap();
    assert_eq!(s[1], redis::Value::Int(10));
}

#[tokio::test]
async fn a_node_cut_off_from_the_backing_redis_stops_serving_before_its_slots_are_taken() {
    cut_off("sync").await;
}

#[tokio::test]
async fn a_node_cut_off_stops_serving_in_time_in_async_mode_too() {
    cut_off("async").await;
}

#[tokio::test]
async fn a_backing_redis_that_lost_its_data_gets_every_node_s_state_back() {
    let redis = RedisProc::start();
    let (mut nodes, addrs) = formed(&redis, 3, &[]).await;
    let mut pools = Vec::new();
    for (i, &a) in addrs.iter().enumerate() {
        let pool = pool_on(a, &format!("lost{i}-")).await;
        RawConn::connect(a).await.call(&["TOKEN.GEN", &pool, "PX", "600000", "COUNT", "5"]).await;
        pools.push(pool);
    }
    let mut r = redis.conn();
    let _: () = redis::cmd("FLUSHALL").query(&mut r).unwrap();
    // Written back without any client writing: each node notices at its
    // next heartbeat.
    let started = Instant::now();
    for p in &pools {
        while common::backing_records(&mut r, p).len() < 5 {
            assert!(started.elapsed() < Duration::from_secs(10), "{p} was not written back");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    wait_stable(&addrs, Duration::from_secs(10)).await;
    // And it is what a node that takes over loads.
    nodes[0].kill9();
    wait_stable(&addrs[1..], Duration::from_secs(10)).await;
    let mut con = cluster_conn(&addrs[1..]).await;
    for p in &pools {
        let s: Vec<redis::Value> = redis::cmd("TOKEN.STATS").arg(p).query_async(&mut con).await.unwrap();
        assert_eq!(s[1], redis::Value::Int(5), "{p}");
    }
}

/// The address of the node that serves each of `pools`, by `addr`'s
/// `CLUSTER SLOTS`.
async fn servers(addr: SocketAddr, pools: &[String]) -> Vec<String> {
    let mut c = RawConn::connect(addr).await;
    let slots = c.cmd("CLUSTER SLOTS").await;
    let mut out = Vec::new();
    for p in pools {
        let slot = c.call(&["CLUSTER", "KEYSLOT", p]).await.int();
        let range = slots.items().iter().find(|r| (r.items()[0].int()..=r.items()[1].int()).contains(&slot));
        let node = range.map(|r| &r.items()[2]).expect("every slot is served");
        out.push(format!("{}:{}", node.items()[0].text(), node.items()[1].int()));
    }
    out
}

#[tokio::test]
async fn a_backing_redis_that_loses_its_data_during_a_join_keeps_every_slot_that_stayed_put() {
    let redis = RedisProc::start();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&redis, free_port(), &[]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    wait_stable(&addrs, FORMING).await;
    let pools = fill(addrs.clone(), 100, 5).await;
    let before = servers(addrs[0], &pools).await;
    nodes.push(node(&redis, free_port(), &[]));
    addrs.push(nodes[3].addr);
    // The data goes as soon as some node is moving slots.
    let mut conns = Vec::new();
    for &a in &addrs[..3] {
        conns.push(RawConn::connect(a).await);
    }
    let started = Instant::now();
    'moving: loop {
        for c in &mut conns {
            let text = c.cmd("INFO cluster").await.text();
            if text.lines().any(|l| l.starts_with("cluster_slots_moving:") && l != "cluster_slots_moving:0") {
                break 'moving;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no node started moving slots");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    // Every node writes its slots back, and the join completes: no slot
    // stays unserved.
    wait_stable(&addrs, Duration::from_secs(20)).await;
    let after = servers(addrs[0], &pools).await;
    let mut con = cluster_conn(&addrs).await;
    let mut stayed = 0;
    for (i, p) in pools.iter().enumerate() {
        let s: Vec<redis::Value> = redis::cmd("TOKEN.STATS").arg(p).query_async(&mut con).await.unwrap();
        if before[i] == after[i] {
            // In memory on its node throughout: written back.
            stayed += 1;
            assert_eq!(s[1], redis::Value::Int(5), "{p}, served by {} throughout", after[i]);
        } else {
            // Mid-handover, the backing Redis held its only copy.
            assert!(matches!(s[1], redis::Value::Int(0 | 5)), "{p}: {s:?}");
        }
    }
    assert!(stayed > pools.len() / 2, "{stayed} of {} pools stayed put", pools.len());
}

#[tokio::test]
async fn redirects_name_the_announced_address() {
    let redis = RedisProc::start();
    let a = node(&redis, free_port(), &[]);
    let b = node(&redis, free_port(), &["--cluster-announce-ip", "127.0.0.9", "--cluster-announce-port", "7999"]);
    let mut c = RawConn::connect(a.addr).await;
    let started = Instant::now();
    loop {
        let text = c.cmd("CLUSTER NODES").await.text();
        if text.contains("127.0.0.9:7999@17999 master") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut own = RawConn::connect(b.addr).await;
    assert!(own.cmd("CLUSTER NODES").await.text().contains("127.0.0.9:7999@17999 myself,master"));
}

/// True if this machine has IPv6's loopback (a container may not).
fn has_ipv6_loopback() -> bool {
    let ok = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !ok {
        eprintln!("skipped: this machine has no ::1");
    }
    ok
}

/// A node listening on every interface announces the address it reaches
/// the backing Redis from: here IPv6's loopback, where a fixed 127.0.0.1
/// would send clients to an address the node may not listen on (and, on
/// another machine, to the client's own host).
#[tokio::test]
async fn a_node_on_every_interface_announces_where_it_reaches_the_backing_redis() {
    if !has_ipv6_loopback() {
        return;
    }
    let redis = RedisProc::start_args(&["--bind", "127.0.0.1 ::1"]);
    let port = free_port();
    let t = node_on(&format!("redis://[::1]:{}", redis.port), port, &["--bind", "::"]);
    let mut c = RawConn::connect(t.addr).await;
    wait_stable(&[t.addr], FORMING).await;
    let nodes = c.cmd("CLUSTER NODES").await.text();
    assert!(nodes.starts_with(&format!("{} ::1:{port}@", c.cmd("CLUSTER MYID").await.text())), "{nodes}");
    let slots = c.cmd("CLUSTER SLOTS").await;
    assert_eq!(slots.items()[0].items()[2].items()[0].text(), "::1", "{slots:?}");
    // Bound to IPv4's every interface, an IPv6 address would not be
    // listened on: it announces loopback, and says so.
    let port = free_port();
    let v4 = node_on(&format!("redis://[::1]:{}", redis.port), port, &["--bind", "0.0.0.0", "--redis-prefix", "v4"]);
    let mut c = RawConn::connect(v4.addr).await;
    wait_stable(&[v4.addr], FORMING).await;
    let nodes = c.cmd("CLUSTER NODES").await.text();
    assert!(nodes.contains(&format!(" 127.0.0.1:{port}@")), "{nodes}");
    let logs = v4.logs();
    assert!(logs.iter().any(|l| l.contains("no IPv4 address")), "{logs:?}");
}

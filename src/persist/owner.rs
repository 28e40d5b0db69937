//! Who may write a backing Redis prefix: one tokend at a time.
//!
//! A tokend holds a lease on its prefix (`Please`: its node id and
//! address, with a TTL it renews every third of it). A second tokend on the
//! same prefix waits for the holder's lease to lapse (a holder killed with
//! `kill -9` stops renewing); if it sees the holder renew it, the newcomer
//! gives up at once and names it. A tokend restarted on the
//! holder's very address takes over at once: it listens there now, so the
//! holder is gone. The lease only keeps a
//! live holder from being displaced; what makes a displaced holder harmless
//! is the fence of every hash slot (`P{τS}:fence`), which names the owner
//! and which every write checks atomically: a holder that was paused past
//! its lease finds another owner there and cannot write.

use super::con::Con;
use super::layout::{Keys, SLOTS};
use super::script::CLAIM;
use std::time::{Duration, Instant};

/// A node's identity in the backing Redis: 40 hex digits, as Redis Cluster
/// node ids are.
pub fn new_node_id() -> String {
    let a: u128 = rand::random();
    let b: u32 = rand::random();
    format!("{a:032x}{b:08x}")
}

/// The lease's value: `<node id> <address>`.
pub fn lease_value(node_id: &str, addr: &str) -> String {
    format!("{node_id} {addr}")
}

/// The address in a lease's value.
fn holder_addr(holder: &str) -> &str {
    holder.split_once(' ').map_or(holder, |(_, a)| a)
}

/// Tells a holder that renews its lease (alive) from one that stopped,
/// from the lease's PTTL looked at every 100 ms.
struct Liveness {
    started: Instant,
    last_ttl: Option<i64>,
}

impl Liveness {
    fn new() -> Liveness {
        Liveness { started: Instant::now(), last_ttl: None }
    }

    /// True once the holder renewed (its TTL went up since the last look),
    /// or after two minutes of a lease that neither lapses nor renews (set
    /// by hand, without a TTL).
    fn alive(&mut self, pttl: i64) -> bool {
        let renewed = self.last_ttl.is_some_and(|t| pttl > t + 50);
        self.last_ttl = Some(pttl);
        renewed || self.started.elapsed() > Duration::from_secs(120)
    }

    fn first_look(&self) -> bool {
        self.last_ttl.is_none()
    }
}

/// Takes the prefix's lease, waiting for a holder that stopped renewing
/// to lapse; fails naming a holder seen renewing.
pub async fn acquire(con: &mut Con, keys: &Keys, value: &str, ttl: Duration) -> Result<(), String> {
    let mut live = Liveness::new();
    let take = |e: redis::RedisError| format!("cannot take the lease on the backing Redis prefix: {e}");
    loop {
        let set: Option<String> = redis::cmd("SET")
            .arg(keys.lease())
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(con)
            .await
            .map_err(take)?;
        if set.is_some() {
            return Ok(());
        }
        let holder: Option<String> = redis::cmd("GET").arg(keys.lease()).query_async(con).await.unwrap_or(None);
        let Some(holder) = holder else { continue };
        let addr = holder_addr(&holder).to_string();
        if value.split_once(' ').map(|(_, a)| a) == Some(addr.as_str()) {
            let taken: Option<String> = redis::cmd("SET")
                .arg(keys.lease())
                .arg(value)
                .arg("XX")
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async(con)
                .await
                .map_err(take)?;
            if taken.is_some() {
                tracing::info!(%addr, "took over the lease of an earlier tokend on this address");
                return Ok(());
            }
            continue;
        }
        let pttl: i64 = redis::cmd("PTTL").arg(keys.lease()).query_async(con).await.unwrap_or(-2);
        let first = live.first_look();
        if live.alive(pttl) {
            return Err(format!(
                "the backing Redis prefix {:?} is held by another tokend at {addr} (it keeps renewing its lease); \
                 stop it, or give this one another --redis-prefix",
                keys.prefix()
            ));
        }
        if first {
            tracing::warn!(holder = %addr, "another tokend holds the backing Redis prefix; waiting for its lease to lapse");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no tokend without cluster mode holds the prefix's lease
/// (a cluster node joining a prefix a standalone tokend used): at once if
/// none does, when a holder that stopped renewing lapses, or fails naming
/// a holder seen renewing. A holder on this node's very address is gone
/// (this node listens there now): its lease is removed at once, as
/// [`acquire`] takes such a lease over.
pub async fn wait_unheld(con: &mut Con, keys: &Keys, my_addr: &str) -> Result<(), String> {
    let mut live = Liveness::new();
    let read = |e: redis::RedisError| format!("cannot read the lease on the backing Redis prefix: {e}");
    loop {
        let holder: Option<String> = redis::cmd("GET").arg(keys.lease()).query_async(con).await.map_err(read)?;
        let Some(holder) = holder else { return Ok(()) };
        let addr = holder_addr(&holder).to_string();
        if addr == my_addr {
            release(con, keys, &holder).await;
            tracing::info!(%addr, "removed the lease of an earlier tokend without cluster mode on this address");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let pttl: i64 = redis::cmd("PTTL").arg(keys.lease()).query_async(con).await.map_err(read)?;
        let first = live.first_look();
        if live.alive(pttl) {
            return Err(format!(
                "the backing Redis prefix {:?} is held by a tokend without cluster mode at {addr} (it keeps \
                 renewing its lease); stop it, or give this node another --redis-prefix",
                keys.prefix()
            ));
        }
        if first {
            tracing::warn!(holder = %addr, "a tokend without cluster mode holds the backing Redis prefix; waiting for its lease to lapse");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live members of a tokend cluster on the prefix, and the nodes
/// starting to join it: (node id, address), each once.
pub async fn cluster_members(con: &mut Con, keys: &Keys) -> Result<Vec<(String, String)>, redis::RedisError> {
    let script = redis::Script::new(
        r#"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local out = {}
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
          out[#out + 1] = id
          out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
        end
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')) do
          local id, addr = string.match(m, '^(%S+) (.*)$')
          if id then
            out[#out + 1] = id
            out[#out + 1] = addr
          end
        end
        return out
        "#,
    );
    let flat: Vec<String> = script.key(keys.members()).key(keys.addrs()).key(keys.joining()).invoke_async(con).await?;
    let mut seen = std::collections::HashSet::new();
    Ok(flat
        .chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .filter(|(id, _)| seen.insert(id.clone()))
        .collect())
}

/// Whether `owner` names a tokend without cluster mode (`<node id>:<start>`;
/// a cluster node's incarnations have a third part).
pub fn is_standalone_owner(owner: &str) -> bool {
    owner.matches(':').count() == 1
}

/// What renewing the lease found.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours (renewed, or taken again after the backing Redis lost it).
    Held,
    /// Another tokend holds it now.
    Lost(String),
}

/// Renews the lease if it is still ours (or takes it again if it vanished,
/// as after a FLUSHALL).
pub async fn renew(con: &mut Con, keys: &Keys, value: &str, ttl: Duration) -> Result<Renewal, redis::RedisError> {
    let script = redis::Script::new(
        r#"
        local v = redis.call('GET', KEYS[1])
        if v == ARGV[1] or not v then
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return ''
        end
        return v
        "#,
    );
    let holder: String = script.key(keys.lease()).arg(value).arg(ttl.as_millis() as u64).invoke_async(con).await?;
    Ok(if holder.is_empty() { Renewal::Held } else { Renewal::Lost(holder) })
}

/// Gives the lease up if it is still ours (graceful stop: the next tokend
/// starts at once).
pub async fn release(con: &mut Con, keys: &Keys, value: &str) {
    let script = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    );
    let _: Result<i64, _> = script.key(keys.lease()).arg(value).invoke_async(con).await;
}

/// Makes `owner` the owner of every hash slot's fence, with the next epoch
/// (one call per 1,024 slots on a redis-server, per slot on a Redis
/// Cluster). With `force` false, stops at a slot another owner holds and
/// returns it.
pub async fn claim_all(
    con: &mut Con,
    keys: &Keys,
    owner: &str,
    addr: &str,
    force: bool,
) -> Result<Option<String>, redis::RedisError> {
    let script = redis::Script::new(CLAIM);
    let slots: Vec<u16> = (0..SLOTS).collect();
    let replies = con
        .each(con.groups(&slots), |mut c, group| {
            let mut inv = script.prepare_invoke();
            for slot in group {
                inv.key(keys.fence(slot));
            }
            inv.arg(owner).arg(addr).arg(if force { "force" } else { "" });
            async move { inv.invoke_async::<(i64, String)>(&mut c).await }
        })
        .await;
    for r in replies {
        let (_, holder) = r?;
        if !holder.is_empty() {
            return Ok(Some(holder));
        }
    }
    Ok(None)
}

//! The connection to the backing store: one redis-server (through the redis
//! crate's `ConnectionManager`) or a Redis Cluster (through its cluster
//! client, which routes each command to the node serving its key's slot).
//!
//! Every key tokend writes carries a hash tag, and each hash slot's fence
//! and pool set share that slot (see [`super::layout`]), so each fenced
//! write of a slot is one atomic call on one Redis node either way. What
//! differs is only what may go in one call: a redis-server takes a script
//! or a pipeline over any keys; a Redis Cluster only over keys of one slot.
//! [`Con::groups`] and [`Con::each`] hide that difference.

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// Calls in flight at once when one call per slot is needed.
const CONCURRENCY: usize = 64;

/// Commands per pipeline on a redis-server.
const PIPELINE: usize = 1024;

/// A connection to the backing store (cheap to clone: clones share it).
#[derive(Clone)]
pub enum Con {
    /// One redis-server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl From<ConnectionManager> for Con {
    fn from(c: ConnectionManager) -> Con {
        Con::Single(c)
    }
}

impl Con {
    /// True for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Con::Cluster(_))
    }

    /// `slots` split into groups whose keys one call may name together:
    /// runs of up to 1,024 slots on a redis-server, one slot each on a
    /// Redis Cluster.
    pub fn groups(&self, slots: &[u16]) -> Vec<Vec<u16>> {
        let size = if self.is_cluster() { 1 } else { PIPELINE };
        slots.chunks(size).map(<[u16]>::to_vec).collect()
    }

    /// Runs `call` on each item with a clone of this connection, up to
    /// [`CONCURRENCY`] at once; the results come back in `items` order.
    pub async fn each<I, T, F, Fut>(&self, items: Vec<I>, call: F) -> Vec<T>
    where
        F: Fn(Con, I) -> Fut,
        Fut: Future<Output = T>,
    {
        let width = if self.is_cluster() { CONCURRENCY } else { 1 };
        futures_util::stream::iter(items.into_iter().map(|i| call(self.clone(), i))).buffered(width).collect().await
    }

    /// Runs `cmds` (each naming keys of one slot at most) and returns their
    /// replies in order: pipelined on a redis-server, one call per command,
    /// many in flight, on a Redis Cluster (a pipeline there must stay
    /// within one slot).
    pub async fn query_each<T: FromRedisValue>(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<T>> {
        let mut out = Vec::with_capacity(cmds.len());
        if self.is_cluster() {
            let replies = self.each(cmds, |mut c, cmd| async move { cmd.query_async::<T>(&mut c).await }).await;
            for r in replies {
                out.push(r?);
            }
        } else {
            let mut con = self.clone();
            let mut cmds = cmds.into_iter().peekable();
            while cmds.peek().is_some() {
                let mut pipe = Pipeline::new();
                for cmd in cmds.by_ref().take(PIPELINE) {
                    pipe.add_command(cmd);
                }
                let replies: Vec<T> = pipe.query_async(&mut con).await?;
                out.extend(replies);
            }
        }
        Ok(out)
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(cmd, offset, count),
            Con::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(c) => c.get_db(),
        }
    }
}

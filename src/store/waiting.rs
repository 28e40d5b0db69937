//! Blocked `TOKEN.ACQUIRE … BLOCK`: the place in a pool's queue that a
//! client holds while it waits.

use super::{Shard, Store};
use crate::token::TokenId;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// What ACQUIRE got.
pub enum Acquired {
    Token(TokenId),
    /// No free token and no BLOCK.
    Empty,
    /// No free token; the caller is queued (BLOCK).
    Wait(Waiting),
}

/// What a waiter is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// A token, already assigned to this waiter.
    Token(TokenId),
    /// Nothing will come: the pool was deleted (the client gets nil).
    Gone,
    /// Nothing will come from this node: the pool's hash slot moved to
    /// another (cluster mode; the client gets `-MOVED`).
    Moved,
}

/// A queued blocked ACQUIRE: a drop guard for the client's place in the
/// queue. Dropped without [`Waiting::recv`] having handed over a token
/// (the client went away, the connection failed, the server is stopping),
/// it leaves the queue, and a token handed over in that instant goes back
/// to the free set (and to the next waiter).
pub struct Waiting {
    pub(super) store: Store,
    pub(super) pool: Bytes,
    pub(super) id: u64,
    pub(super) rx: oneshot::Receiver<Handed>,
    /// A token was received: it belongs to the client now.
    pub(super) settled: bool,
    /// The journal unit that assigned the token handed over (0: none, or
    /// not appended yet). Set under the shard's lock, after the token was
    /// sent under the same hold.
    pub(super) unit: Arc<AtomicU64>,
}

impl Waiting {
    /// The pool waited on.
    pub fn pool(&self) -> &Bytes {
        &self.pool
    }

    /// Resolves when a token was handed over or the pool went away (a
    /// store dropped from under the waiter also reads as gone).
    pub async fn recv(&mut self) -> Handed {
        let h = (&mut self.rx).await.unwrap_or(Handed::Gone);
        self.settled = true;
        h
    }

    /// The journal unit that assigned the token [`Waiting::recv`] handed
    /// over (None without a journal): the reply is durable once that unit
    /// is. Not the last unit queued: the token is sent before its unit is
    /// appended, and a later unit's fate is not this one's (in cluster
    /// mode a slot's change can be refused where the next unit is written).
    pub fn assigned_in(&self) -> Option<u64> {
        // The token was sent under the shard's lock and the unit appended
        // before that hold ended.
        self.store.pass_lock(&self.pool);
        match self.unit.load(Ordering::Acquire) {
            0 => None,
            seq => Some(seq),
        }
    }

    /// Leaves the queue (timeout). If a token was handed over meanwhile, it is
    /// returned, with the unit that assigned it: it belongs to this client.
    pub fn cancel(mut self) -> Option<(TokenId, Option<u64>)> {
        self.settled = true;
        // After removal under the lock nobody can send any more, and what
        // was sent had its unit appended.
        self.store.remove_waiter(&self.pool, self.id);
        match self.rx.try_recv() {
            Ok(Handed::Token(t)) => Some((t, Some(self.unit.load(Ordering::Acquire)).filter(|&u| u != 0))),
            _ => None,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.store.remove_waiter(&self.pool, self.id);
        if let Ok(Handed::Token(t)) = self.rx.try_recv() {
            let _ = self.store.unblock(&self.pool, t);
        }
    }
}

/// One blocked client in a pool's queue.
pub(crate) struct Waiter {
    pub id: u64,
    pub lease: u64,
    pub tx: oneshot::Sender<Handed>,
    /// Shared with [`Waiting::unit`].
    pub unit: Arc<AtomicU64>,
}

impl Store {
    /// Takes a waiter out of its pool's queue (it timed out or went away).
    fn remove_waiter(&self, pool: &[u8], waiter: u64) {
        self.with_shard(pool, |s, _, fx| {
            if let Some(pid) = s.pid(pool) {
                if let Some(q) = s.pools.get_mut(&pid).and_then(|p| p.waiters_mut()) {
                    q.retain(|w| w.id != waiter);
                }
                Shard::drop_if_empty(s, pid, fx);
            }
        })
    }
}

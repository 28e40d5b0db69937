//! The expiry driver: one task per shard that sleeps until the shard's next
//! deadline and fires it.
//!
//! Commands already fire whatever is due in their shard before they run, so
//! the driver exists for the quiet case: a token that nobody touches must
//! still expire, and its event must go out, within a millisecond or two of
//! its deadline. The task is woken early (through `ShardCell::wake`) only when
//! a command arms a deadline earlier than the one it sleeps until.

use super::{Store, lock};
use std::sync::atomic::Ordering;
use tokio::task::JoinHandle;

/// Stops the drivers when dropped (held by the server for its lifetime).
pub struct ExpiryDrivers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ExpiryDrivers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one driver per shard.
pub fn spawn(store: &Store) -> ExpiryDrivers {
    let tasks = (0..store.shard_cells().len())
        .map(|idx| {
            let store = store.clone();
            tokio::spawn(async move { drive(store, idx).await })
        })
        .collect();
    ExpiryDrivers { tasks }
}

impl Store {
    /// Fires what is due in shard `idx` and returns when to look again
    /// (epoch ms, `u64::MAX` when nothing is pending).
    pub(crate) fn tick(&self, idx: usize) -> u64 {
        self.with_shard_at(idx, true, |s, _, _| {
            let next = s.wheel.next_expiration().unwrap_or(u64::MAX).min(s.forget.front().map_or(u64::MAX, |e| e.0));
            // Stored under the lock: a command arming an earlier deadline after
            // this point sees it and wakes us (see `Store::with_shard_at`).
            self.shard_cells()[idx].wake_at.store(next, Ordering::Release);
            next
        })
    }

    /// Pending wheel entries in all shards (INFO).
    pub fn pending_timers(&self) -> usize {
        self.shard_cells().iter().map(|c| lock(&c.state).wheel.len()).sum()
    }
}

/// A tick slower than this is logged (debug): it delays every expiry of the
/// shard by as much.
const SLOW_TICK: std::time::Duration = std::time::Duration::from_millis(2);

async fn drive(store: Store, idx: usize) {
    loop {
        let started = std::time::Instant::now();
        let next = store.tick(idx);
        let took = started.elapsed();
        if took > SLOW_TICK {
            tracing::debug!(shard = idx, ms = took.as_secs_f64() * 1e3, "slow expiry tick");
        }
        let cell = &store.shard_cells()[idx];
        if next == u64::MAX {
            cell.wake.notified().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep_until(store.clock().instant_at(next)) => {}
                _ = cell.wake.notified() => {}
            }
        }
    }
}

//! The seam between commands and the backing store: what a write must pass
//! before it runs, and what its reply waits for. The command core and the
//! connections use it; the persistence layer implements it.

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// The backing store's link, as `INFO persistence` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Changes queued and not yet acknowledged.
    pub backlog: usize,
    /// Writes are refused now (the backing store is unreachable, hung, or
    /// refuses writes).
    pub down: bool,
    /// Units of changes the backing store refused (e.g. WRONGTYPE).
    pub refused: u64,
    /// Times the backing store was found to have lost its data.
    pub lost: u64,
}

/// What became of a unit of changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// In the backing store.
    Durable,
    /// Not confirmed yet; the reply to give instead (`-TRYAGAIN …`).
    Pending(String),
    /// The backing store refused it; the reply to give instead (`-ERR …`).
    Refused(String),
}

/// A place to wait until changes are durable.
pub trait Durability: Send + Sync {
    /// Whether a write may run now (`Err` is a `-TRYAGAIN …` reply); checked
    /// before the write changes anything.
    fn admit(&self) -> Result<(), String>;

    /// True when replies to writes must wait for the backing store (sync).
    fn waits(&self) -> bool;

    /// Cluster mode: a client's `PUBLISH`, for the other nodes'
    /// subscribers (as Redis Cluster broadcasts it); not durable, never
    /// waited for.
    fn relay(&self, _channel: Bytes, _message: Bytes) {}

    /// Resolves true once every unit up to `upto` is resolved (written or
    /// refused), false after the persist timeout.
    fn wait(&self, upto: u64) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;

    /// What became of unit `seq`.
    fn fate(&self, seq: u64) -> Fate;

    /// The link's state, for `INFO persistence`.
    fn status(&self) -> LinkStatus;

    /// How long writes to the backing store took, µs (for `/metrics`).
    fn write_latency(&self) -> crate::hist::Hist {
        crate::hist::Hist::default()
    }
}

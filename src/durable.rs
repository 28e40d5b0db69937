//! The seam between commands and the backing store: what a write must pass
//! before it runs, and what its reply waits for. The command core uses it;
//! the persistence layer implements it.

use std::future::Future;
use std::pin::Pin;

/// The backing store's link, as `INFO persistence` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Changes queued and not yet acknowledged.
    pub backlog: usize,
    /// The last write to the backing store failed.
    pub down: bool,
}

/// A place to wait until changes are durable.
pub trait Durability: Send + Sync {
    /// Whether a write may run now (`Err` is a `-TRYAGAIN …` reply); checked
    /// before the write changes anything.
    fn admit(&self) -> Result<(), String>;

    /// Resolves `Ok` when every change queued before the call is durable;
    /// `Err(msg)` (a `-TRYAGAIN …` reply) after the persist timeout.
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;

    /// The link's state, for `INFO persistence`.
    fn status(&self) -> LinkStatus;
}

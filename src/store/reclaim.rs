//! Freeing big storage off the request path (Redis's lazy free).
//!
//! Freeing a block of more than a megabyte is an `munmap` (tokend sets
//! glibc's mmap threshold to 1 MiB), and unmapping takes about 45 µs a
//! megabyte here: the 164 MB slot of a wheel cascade of 10M entries took
//! 7 ms, on whichever thread dropped it. When that was a connection's,
//! every client of its worker thread waited for it.
//!
//! Such storage is handed to one thread, `tokend-free`, at the lowest
//! priority (`SCHED_IDLE`), which gives it back a 2 MiB chunk at a time
//! with a pause in between. At once, unmapping a 10M-token pool's 640 MB
//! left the kernel's memory management with work that, two seconds later,
//! held up a client of another pool for 34 ms; spread over a second or two
//! it does not.

use super::PoolId;
use super::pool::{Pool, SlotIdx};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// What the free thread gives back.
pub(super) enum Garbage {
    /// A detached pool (see [`super::keys::dispose`]).
    Pool(Pool),
    /// Storage of wheel slots emptied by a cascade (see
    /// [`crate::wheel::Wheel::take_garbage`]).
    Entries(Vec<Vec<(u64, (PoolId, SlotIdx))>>),
}

/// Storage up to this size is freed where it is dropped: below the mmap
/// threshold it goes back to the heap, which is cheap.
pub(super) const INLINE_MAX_BYTES: usize = 1 << 20;

/// The pause between two 2 MiB chunks (a 10M-token pool is 305 chunks:
/// 1.5 s; a 10M-entry wheel slot, 79: 0.4 s).
const CHUNK_PAUSE: Duration = Duration::from_millis(5);

const CHUNK_BYTES: usize = 2 << 20;

/// Times the free thread went to sleep (tests wait for it).
#[cfg(test)]
static PARKS: AtomicU64 = AtomicU64::new(0);

/// Objects handed to the free thread, and those it has freed (INFO's
/// `lazyfree_pending_objects` and `lazyfreed_objects`).
static QUEUED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

/// The free thread's queue (`None` if the OS would not start it).
static FREE_THREAD: OnceLock<Option<UnboundedSender<Garbage>>> = OnceLock::new();

/// Bytes of wheel storage in `entries` (capacities: what freeing returns).
pub(super) fn entries_bytes(entries: &[Vec<(u64, (PoolId, SlotIdx))>]) -> usize {
    entries.iter().map(|v| v.capacity() * std::mem::size_of::<(u64, (PoolId, SlotIdx))>()).sum()
}

/// Starts the free thread if it is not running yet. A store calls it when
/// it is made, so that no request thread waits on [`later`]'s first call
/// while another thread starts it.
pub(super) fn start() {
    free_thread();
}

/// The free thread's queue (the thread started by the first call).
///
/// Handing storage over never waits for another thread, which matters for
/// a request thread at real-time priority (`--rt-priority`): tokio's
/// senders never wait for one another (std's and crossbeam's unbounded
/// queues make one wait for another to link the next block), and the
/// free thread is woken by a waker that unparks it (a futex wake), not
/// through `blocking_recv`'s parker, whose mutex the free thread, at
/// `SCHED_IDLE`, holds on its way to sleep.
fn free_thread() -> Option<&'static UnboundedSender<Garbage>> {
    FREE_THREAD
        .get_or_init(|| {
            let (tx, mut rx) = unbounded_channel::<Garbage>();
            std::thread::Builder::new()
                .name("tokend-free".into())
                .spawn(move || {
                    lowest_priority();
                    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
                    let mut cx = Context::from_waker(&waker);
                    loop {
                        match rx.poll_recv(&mut cx) {
                            Poll::Ready(Some(g)) => {
                                // A panic in one free must not end the
                                // thread: what is queued behind it would
                                // stay counted as pending for good.
                                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| free_gradually(g)));
                                QUEUED.fetch_sub(1, Ordering::Relaxed);
                                FREED.fetch_add(1, Ordering::Relaxed);
                            }
                            Poll::Ready(None) => return,
                            // A send from now on wakes the waker; a wake
                            // that came first left a token, and park
                            // returns at once.
                            Poll::Pending => {
                                #[cfg(test)]
                                PARKS.fetch_add(1, Ordering::SeqCst);
                                std::thread::park();
                            }
                        }
                    }
                })
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot start the free thread; big pools and wheel storage are freed in place, by the thread that lets them go");
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Wakes the free thread by unparking it.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Frees `g` on the free thread, or here if the OS will not start it.
pub(super) fn later(g: Garbage) {
    let Some(tx) = free_thread() else { return drop(g) };
    // Counted before the send, so the thread never counts it down first.
    QUEUED.fetch_add(1, Ordering::Relaxed);
    if let Err(back) = tx.send(g) {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
        drop(back.0);
    }
}

/// Objects waiting for the free thread, and objects it has freed, since the
/// process started.
pub fn lazyfree_counts() -> (u64, u64) {
    (QUEUED.load(Ordering::Relaxed), FREED.load(Ordering::Relaxed))
}

fn free_gradually(g: Garbage) {
    match g {
        Garbage::Pool(p) => p.free_gradually(CHUNK_PAUSE),
        Garbage::Entries(slots) => slots.into_iter().for_each(shrink_gradually),
    }
}

/// Gives a Vec's storage back a chunk at a time: shrinking a block glibc
/// mapped on its own is an `mremap` that unmaps its tail in place.
fn shrink_gradually<E: Copy>(mut v: Vec<E>) {
    v.clear();
    let step = (CHUNK_BYTES / std::mem::size_of::<E>().max(1)).max(1);
    while v.capacity() > step {
        v.shrink_to(v.capacity() - step);
        std::thread::sleep(CHUNK_PAUSE);
    }
}

fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets this thread's own policy; the argument is a valid
        // sched_param. Failure only leaves the default policy.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_handed_over_is_freed() {
        // Three hand-overs, each after the thread went to sleep: each must
        // wake it.
        start();
        let mut seen = 0;
        for round in 1..=3 {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            // Asleep (or about to be) since the last free, or since it
            // started.
            while PARKS.load(Ordering::SeqCst) == seen {
                assert!(std::time::Instant::now() < deadline, "round {round}: the free thread never went to sleep");
                std::thread::sleep(Duration::from_millis(1));
            }
            seen = PARKS.load(Ordering::SeqCst);
            // 5 MiB of entries: two shrinks, then the drop.
            let v: Vec<(u64, (u32, u32))> = Vec::with_capacity(5 * (1 << 20) / 16);
            let (_, before) = lazyfree_counts();
            later(Garbage::Entries(vec![v, Vec::with_capacity(10)]));
            while lazyfree_counts().1 == before {
                assert!(std::time::Instant::now() < deadline, "round {round}: the free thread never freed it");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

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
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

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

/// Objects handed to the free thread, and those it has freed (INFO's
/// `lazyfree_pending_objects` and `lazyfreed_objects`).
static QUEUED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

/// Objects handed to the free thread and not yet taken.
static HANDED: HandOff<Garbage> = HandOff::new();

/// The free thread, once started (`None` if the OS would not start it).
static FREE_THREAD: OnceLock<Option<std::thread::Thread>> = OnceLock::new();

/// Cleared if the free thread ends (a panic in it): what comes after is
/// freed where it is dropped.
static FREE_ALIVE: AtomicBool = AtomicBool::new(true);

/// Bytes of wheel storage in `entries` (capacities: what freeing returns).
pub(super) fn entries_bytes(entries: &[Vec<(u64, (PoolId, SlotIdx))>]) -> usize {
    entries.iter().map(|v| v.capacity() * std::mem::size_of::<(u64, (PoolId, SlotIdx))>()).sum()
}

/// Frees `g` on the free thread, or here if the OS will not start it.
///
/// The hand-over never waits for another thread: a push onto a lock-free
/// stack and an unpark (a futex wake). A request thread at real-time
/// priority (`--rt-priority`) that waited for the free thread (at
/// `SCHED_IDLE`) to release a lock, or for a sender it preempted on its
/// core to finish (std's channel spins, yielding, for that), could wait
/// as long as those threads are kept off the core.
pub(super) fn later(g: Garbage) {
    let thread = FREE_THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("tokend-free".into())
            .spawn(|| {
                struct Ends;
                impl Drop for Ends {
                    fn drop(&mut self) {
                        FREE_ALIVE.store(false, Ordering::Release);
                    }
                }
                let _ends = Ends;
                lowest_priority();
                loop {
                    let batch = HANDED.take();
                    if batch.is_empty() {
                        // A push after the take unparks: the token makes
                        // this return at once.
                        std::thread::park();
                        continue;
                    }
                    for g in batch {
                        free_gradually(g);
                        QUEUED.fetch_sub(1, Ordering::Relaxed);
                        FREED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .ok()
            .map(|h| h.thread().clone())
    });
    match thread {
        Some(t) if FREE_ALIVE.load(Ordering::Acquire) => {
            // Counted before the push, so the thread never counts it down
            // first.
            QUEUED.fetch_add(1, Ordering::Relaxed);
            HANDED.push(g);
            t.unpark();
        }
        _ => drop(g),
    }
}

/// A multi-producer, single-consumer hand-over: a Treiber stack whose
/// consumer takes everything at once. A push is one compare-and-swap,
/// retried only when another push or a take went first, so no thread
/// ever waits for another to make progress. std's and crossbeam's
/// unbounded queues make a sender wait for the one that took a block's
/// last slot to link the next; tokio's wakes its receiver through a
/// mutex the receiver holds while it goes to sleep.
struct HandOff<T> {
    head: AtomicPtr<Node<T>>,
    _owns: PhantomData<*mut T>,
}

struct Node<T> {
    item: T,
    next: *mut Node<T>,
}

// SAFETY: items move between threads through the stack, and only there;
// nothing else of a node is shared.
unsafe impl<T: Send> Sync for HandOff<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for HandOff<T> {}

impl<T> HandOff<T> {
    const fn new() -> HandOff<T> {
        HandOff { head: AtomicPtr::new(std::ptr::null_mut()), _owns: PhantomData }
    }

    fn push(&self, item: T) {
        let node = Box::into_raw(Box::new(Node { item, next: std::ptr::null_mut() }));
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the node is this thread's alone until the exchange
            // below publishes it.
            unsafe { (*node).next = head };
            match self.head.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Everything pushed so far, oldest first.
    fn take(&self) -> Vec<T> {
        let mut at = self.head.swap(std::ptr::null_mut(), Ordering::Acquire);
        let mut items = Vec::new();
        while !at.is_null() {
            // SAFETY: the swap detached these nodes, so they are this
            // thread's alone; each came from `Box::into_raw` in `push`,
            // and the acquire pairs with the push's release.
            let node = unsafe { Box::from_raw(at) };
            at = node.next;
            items.push(node.item);
        }
        items.reverse();
        items
    }
}

impl<T> Drop for HandOff<T> {
    fn drop(&mut self) {
        drop(self.take());
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
    fn a_hand_off_keeps_every_item_and_each_pushers_order() {
        let stack = std::sync::Arc::new(HandOff::<(u32, u32)>::new());
        let pushers: Vec<_> = (0..4)
            .map(|t| {
                let stack = stack.clone();
                std::thread::spawn(move || (0..20_000).for_each(|i| stack.push((t, i))))
            })
            .collect();
        let mut got = Vec::new();
        while !pushers.iter().all(|p| p.is_finished()) {
            got.extend(stack.take());
        }
        pushers.into_iter().for_each(|p| p.join().unwrap());
        got.extend(stack.take());
        assert_eq!(got.len(), 80_000);
        for t in 0..4 {
            let mine: Vec<u32> = got.iter().filter(|x| x.0 == t).map(|x| x.1).collect();
            assert_eq!(mine, (0..20_000).collect::<Vec<u32>>(), "pusher {t}'s items, in its order");
        }
        stack.push((9, 9));
        // The drop frees what was never taken.
        drop(stack);
    }

    #[test]
    fn storage_handed_over_is_freed() {
        // 5 MiB of entries: two shrinks, then the drop.
        let v: Vec<(u64, (u32, u32))> = Vec::with_capacity(5 * (1 << 20) / 16);
        let (_, before) = lazyfree_counts();
        later(Garbage::Entries(vec![v, Vec::with_capacity(10)]));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lazyfree_counts().1 == before {
            assert!(std::time::Instant::now() < deadline, "the free thread never freed it");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

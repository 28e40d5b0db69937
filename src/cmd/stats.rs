//! Per-command statistics (`INFO commandstats`, `INFO latencystats`,
//! `/metrics`) and the slow log (`SLOWLOG`).
//!
//! Every command is counted and timed, so the counting must cost a few
//! nanoseconds and never contend: each thread that runs commands owns one
//! [`ThreadStats`] per server, which only it writes (a load and a store per
//! counter, no locked instruction), and readers add up every thread's. A
//! histogram is only allocated for a command that has run.
//!
//! `CONFIG RESETSTAT` cannot zero counters that other threads own without a
//! race; it keeps a snapshot instead, and INFO shows what happened since.
//! `/metrics` shows the raw totals, which only grow, as Prometheus counters
//! must.

use super::table;
use crate::hist::{Hist, LocalHist, bump};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One command's counters on one thread.
#[derive(Default)]
struct PerCommand {
    calls: AtomicU64,
    nsec: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    /// Its latency buckets (count and sum are `calls` and `nsec`).
    hist: OnceLock<Box<LocalHist>>,
}

/// One thread's counters for one server, indexed by [`table::flat`].
struct ThreadStats {
    cmds: Box<[PerCommand]>,
}

impl ThreadStats {
    fn new() -> ThreadStats {
        ThreadStats { cmds: (0..table::flat().len()).map(|_| PerCommand::default()).collect() }
    }
}

/// What one command did, added over every thread.
#[derive(Clone, Debug, Default)]
pub struct CommandTotals {
    pub calls: u64,
    /// Time spent running it, ns.
    pub nsec: u64,
    pub failed: u64,
    pub rejected: u64,
    /// Latency (ns) of its calls; None if it never ran.
    pub hist: Option<Hist>,
}

impl CommandTotals {
    /// What happened since `earlier` (a snapshot of the same counters).
    fn since(&self, earlier: &CommandTotals) -> CommandTotals {
        CommandTotals {
            calls: self.calls.saturating_sub(earlier.calls),
            nsec: self.nsec.saturating_sub(earlier.nsec),
            failed: self.failed.saturating_sub(earlier.failed),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            hist: match (&self.hist, &earlier.hist) {
                (Some(h), Some(e)) => Some(h.since(e)),
                (h, _) => h.clone(),
            },
        }
    }
}

/// Tells servers apart in the thread-local registry (an address could be
/// reused by a later server in the same process).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's counters, per server (one entry outside tests).
    static MINE: RefCell<Vec<(u64, Arc<ThreadStats>)>> = const { RefCell::new(Vec::new()) };
    /// The entry last used: (server id, its counters). The pointer stays
    /// valid while the server exists (`MINE` holds the `Arc`, and drops it
    /// only once the server is gone, whose id is never used again).
    static LAST: Cell<(u64, *const ThreadStats)> = const { Cell::new((0, std::ptr::null())) };
}

/// The TSC, calibrated once per process: a command is timed with two reads
/// of it (18 ns each on the benchmark VM, where `Instant::now()` through
/// the vDSO costs 36).
fn tsc() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A raw timestamp for [`CommandStats::record`] (not in any unit).
#[inline]
pub fn tick() -> u64 {
    tsc().raw()
}

/// Nanoseconds between two [`tick`]s.
#[inline]
pub fn nanos_between(start: u64, end: u64) -> u64 {
    tsc().delta_as_nanos(start, end)
}

/// The slow log's settings and entries.
pub struct SlowLog {
    /// µs; negative: off; 0: every command.
    slower_than: AtomicI64,
    max_len: AtomicUsize,
    entries: Mutex<VecDeque<SlowEntry>>,
    next_id: AtomicU64,
}

/// One slow log entry, as `SLOWLOG GET` shows it.
#[derive(Clone, Debug)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix seconds when it ran.
    pub at: u64,
    pub usec: u64,
    /// At most 32 arguments of at most 128 bytes, as Redis keeps them.
    pub args: Vec<Bytes>,
    pub addr: String,
    pub name: String,
}

/// Redis's limits on what a slow log entry keeps of a request.
const SLOWLOG_MAX_ARGS: usize = 32;
const SLOWLOG_MAX_ARG_LEN: usize = 128;

impl SlowLog {
    pub fn new(slower_than_us: i64, max_len: usize) -> SlowLog {
        SlowLog {
            slower_than: AtomicI64::new(slower_than_us),
            max_len: AtomicUsize::new(max_len),
            entries: Mutex::default(),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn slower_than(&self) -> i64 {
        self.slower_than.load(Ordering::Relaxed)
    }

    pub fn set_slower_than(&self, us: i64) {
        self.slower_than.store(us, Ordering::Relaxed);
    }

    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    pub fn set_max_len(&self, n: usize) {
        self.max_len.store(n, Ordering::Relaxed);
        let mut g = self.lock();
        while g.len() > n {
            g.pop_back();
        }
    }

    /// Whether a command that took `usec` belongs in the log.
    #[inline]
    pub fn wants(&self, usec: u64) -> bool {
        let t = self.slower_than();
        t >= 0 && usec >= t as u64
    }

    /// Adds an entry (newest first), trimming the request as Redis does.
    pub fn push(&self, args: &[Bytes], usec: u64, addr: String, name: String) {
        let mut kept: Vec<Bytes> = Vec::with_capacity(args.len().min(SLOWLOG_MAX_ARGS));
        let shown = if args.len() > SLOWLOG_MAX_ARGS { SLOWLOG_MAX_ARGS - 1 } else { args.len() };
        for a in &args[..shown] {
            if a.len() > SLOWLOG_MAX_ARG_LEN {
                let mut v = a[..SLOWLOG_MAX_ARG_LEN].to_vec();
                v.extend_from_slice(format!("... ({} more bytes)", a.len() - SLOWLOG_MAX_ARG_LEN).as_bytes());
                kept.push(v.into());
            } else {
                kept.push(a.clone());
            }
        }
        if shown < args.len() {
            kept.push(format!("... ({} more arguments)", args.len() - shown).into());
        }
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let max = self.max_len();
        let mut g = self.lock();
        g.push_front(SlowEntry { id, at, usec, args: kept, addr, name });
        while g.len() > max {
            g.pop_back();
        }
    }

    /// The newest `n` entries (all when `None`).
    pub fn get(&self, n: Option<usize>) -> Vec<SlowEntry> {
        let g = self.lock();
        g.iter().take(n.unwrap_or(usize::MAX)).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SlowEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A server's command statistics.
pub struct CommandStats {
    id: u64,
    threads: Mutex<Vec<Arc<ThreadStats>>>,
    /// What the counters read at the last `CONFIG RESETSTAT`.
    baseline: Mutex<Option<Arc<Vec<CommandTotals>>>>,
    pub slowlog: SlowLog,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats::new(DEFAULT_SLOWLOG_SLOWER_THAN_US, DEFAULT_SLOWLOG_MAX_LEN)
    }
}

/// Redis's defaults for the slow log.
pub const DEFAULT_SLOWLOG_SLOWER_THAN_US: i64 = 10_000;
pub const DEFAULT_SLOWLOG_MAX_LEN: usize = 128;

impl CommandStats {
    pub fn new(slowlog_slower_than_us: i64, slowlog_max_len: usize) -> CommandStats {
        // Calibrate the TSC now, not on the first command.
        tsc();
        CommandStats {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            threads: Mutex::default(),
            baseline: Mutex::default(),
            slowlog: SlowLog::new(slowlog_slower_than_us, slowlog_max_len),
        }
    }

    /// Runs `f` on this thread's counters for this server.
    #[inline]
    fn with_mine<R>(&self, f: impl FnOnce(&ThreadStats) -> R) -> R {
        let (id, ptr) = LAST.get();
        if id == self.id {
            // SAFETY: see `LAST`: this server exists (we are in its
            // method), so `MINE` still holds the Arc behind `ptr`.
            return f(unsafe { &*ptr });
        }
        let r = MINE.with(|m| {
            if let Some((_, t)) = m.borrow().iter().find(|(id, _)| *id == self.id) {
                return f(t);
            }
            let t = Arc::new(ThreadStats::new());
            self.threads.lock().unwrap_or_else(|e| e.into_inner()).push(t.clone());
            let mut m = m.borrow_mut();
            // Servers that are gone (only their thread-local entry still
            // holds their counters) make room.
            m.retain(|(_, t)| Arc::strong_count(t) > 1);
            m.push((self.id, t.clone()));
            f(&t)
        });
        MINE.with(|m| {
            if let Some((_, t)) = m.borrow().iter().find(|(id, _)| *id == self.id) {
                LAST.set((self.id, Arc::as_ptr(t)));
            }
        });
        r
    }

    /// Counts a call of command `id` (its place in [`table::flat`]) that
    /// took `nsec`; `failed`: it answered an error. Nanoseconds, as Redis's
    /// latency histograms: most commands take less than a microsecond.
    #[inline]
    pub fn record(&self, id: usize, nsec: u64, failed: bool) {
        self.with_mine(|t| {
            let Some(c) = t.cmds.get(id) else { return };
            bump(&c.calls, 1);
            bump(&c.nsec, nsec);
            if failed {
                bump(&c.failed, 1);
            }
            c.hist.get_or_init(Box::default).record(nsec);
        })
    }

    /// Counts a call of command `id` refused before it ran.
    pub fn reject(&self, id: usize) {
        self.with_mine(|t| {
            if let Some(c) = t.cmds.get(id) {
                bump(&c.rejected, 1);
            }
        })
    }

    /// Every command's totals since the server started, by [`table::flat`]
    /// place.
    pub fn totals(&self) -> Vec<CommandTotals> {
        let mut out = vec![CommandTotals::default(); table::flat().len()];
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for t in threads {
            for (o, c) in out.iter_mut().zip(t.cmds.iter()) {
                o.calls += c.calls.load(Ordering::Relaxed);
                o.nsec += c.nsec.load(Ordering::Relaxed);
                o.failed += c.failed.load(Ordering::Relaxed);
                o.rejected += c.rejected.load(Ordering::Relaxed);
                if let Some(h) = c.hist.get() {
                    h.add_to(o.hist.get_or_insert_with(Hist::default), c.nsec.load(Ordering::Relaxed));
                }
            }
        }
        out
    }

    /// Every command's totals since the last `CONFIG RESETSTAT`.
    pub fn since_reset(&self) -> Vec<CommandTotals> {
        let now = self.totals();
        let base = self.baseline.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match base {
            Some(b) => now.iter().zip(b.iter()).map(|(n, e)| n.since(e)).collect(),
            None => now,
        }
    }

    /// `CONFIG RESETSTAT`.
    pub fn reset(&self) {
        let now = Arc::new(self.totals());
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(name: &str) -> usize {
        table::flat().iter().position(|s| s.name == name).unwrap()
    }

    #[test]
    fn threads_add_up_and_reset_shows_what_came_after() {
        let stats = Arc::new(CommandStats::default());
        let ping = id_of("ping");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = stats.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        s.record(ping, i % 10, i % 100 == 0);
                    }
                    s.reject(ping);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let t = &stats.since_reset()[ping];
        assert_eq!((t.calls, t.failed, t.rejected), (4000, 40, 4));
        assert_eq!(t.nsec, 4 * 100 * 45);
        assert_eq!(t.hist.as_ref().unwrap().count(), 4000);
        stats.reset();
        stats.record(ping, 7, false);
        let t = &stats.since_reset()[ping];
        assert_eq!((t.calls, t.nsec, t.failed, t.rejected), (1, 7, 0, 0));
        assert_eq!(t.hist.as_ref().unwrap().percentile(50.0), 7.0);
        assert_eq!(stats.totals()[ping].calls, 4001, "the raw totals never go back");
    }

    #[test]
    fn two_servers_on_one_thread_keep_their_own_counts() {
        let (a, b) = (CommandStats::default(), CommandStats::default());
        let ping = id_of("ping");
        a.record(ping, 1, false);
        b.record(ping, 1, false);
        b.record(ping, 1, false);
        assert_eq!((a.totals()[ping].calls, b.totals()[ping].calls), (1, 2));
    }

    #[test]
    fn the_slow_log_trims_requests_as_redis_does() {
        let log = SlowLog::new(0, 2);
        let args: Vec<Bytes> = (0..40).map(|i| Bytes::from(vec![b'a'; if i == 0 { 200 } else { 1 }])).collect();
        log.push(&args, 5, "1.2.3.4:5".into(), "".into());
        let e = &log.get(None)[0];
        assert_eq!(e.args.len(), 32);
        assert_eq!(&e.args[0][128..], b"... (72 more bytes)");
        assert_eq!(&e.args[31][..], b"... (9 more arguments)");
        log.push(&args[..1], 6, String::new(), String::new());
        log.push(&args[..1], 7, String::new(), String::new());
        assert_eq!(log.len(), 2);
        assert_eq!(log.get(Some(1))[0].id, 2, "newest first");
        assert!(log.wants(0));
        log.set_slower_than(-1);
        assert!(!log.wants(u64::MAX));
    }
}

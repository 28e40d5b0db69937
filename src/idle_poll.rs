//! Polling for new requests a little while before the runtime's thread goes
//! to sleep.
//!
//! A thread asleep in `epoll_wait` must be woken by whoever sends to it. On
//! a virtual machine that wake-up is an inter-processor interrupt, a VM
//! exit inside the client's `send`, and tens of microseconds before the
//! woken vCPU runs. KVM hosts poll for 200 µs before halting a vCPU for this
//! reason (`halt_poll_ns`), and guests can do the same (`cpuidle-haltpoll`),
//! but neither is always on. Measured on a 2-core VM with guest polling off:
//! one connection's ACQUIRE+UNBLOCK cycle took 68 µs at the median with the
//! thread sleeping between requests and 22 µs with it polling; under
//! redis-benchmark, the client spent 8.9% of its time waking the server
//! against 4.7% when the server was Redis (whose thread blocked in
//! `epoll_wait` a third as often for the same requests).
//!
//! With `--idle-poll-us N`, after a request the thread keeps polling its
//! sockets (without blocking) for a window of at most N µs before it
//! sleeps. The window adapts the way cpuidle-haltpoll's does: a quiet spell
//! that ended soon after the thread went to sleep (within N) doubles it;
//! one longer than N halves it. A client that sends a request at least
//! every N µs keeps the core busy; a trickle of requests, or none, costs
//! nothing.
//!
//! It is off by default. Polling spends CPU time that a virtual machine's
//! host may take back: on the same VM, with polling on, a client on the
//! other vCPU was now and then not run for 7.2 ms (steal time 50 ms in 13 s,
//! against 10 ms without), which a latency-bound deployment must not get by
//! default. Where cores are dedicated, polling is the cheaper way to wait.
//!
//! Only the single-threaded runtime polls (one per process pinned to one
//! core, or `--threads 1`): with several workers, the one polling would
//! take the wake-ups of the others.
//!
//! # Ceding to the server's own threads
//!
//! A polling thread is never woken by a request, so the scheduler has no
//! reason to preempt whatever else runs on its core when one comes: the
//! request waits for that thread's time slice to end, up to a tick (4 ms
//! here). A sleeping thread, woken by the request, preempts it at once.
//! So where the process may use one CPU only (pinned with `taskset`, or a
//! one-CPU quota), the poller does not poll while another thread of the
//! server's wants the core (`cede_while`: an expiry driver at work, a
//! GEN's stock being made, and the free thread with storage to give back,
//! which at the lowest priority would otherwise get the core only when
//! the poller yields it); it sleeps until the next request instead, as
//! with polling off. With more CPUs those threads run elsewhere. Measured on a 2-core VM,
//! the server on one core, in the bench's mass expiry (10M tokens due
//! within 2 s, a subscriber of every event, a probe cycling ACQUIRE and
//! UNBLOCK on another pool) with `--idle-poll-us 100`: polling through the
//! drain took the server's CPU per event from 0.184–0.202 µs (polling
//! off, 9 runs) to 0.236–0.245 µs, and the subscriber was cut off at its
//! output limit in 2 of 3 runs (9,333,880 and 9,977,024 events of 10M;
//! never with polling off). Ceding: 0.196–0.216 µs, and cut off in 1 of 6
//! runs (9,496,192), on an hour when the drain barely kept up even with
//! polling off (the last event 204–594 ms after the last deadline).
//!
//! Threads of other programs on the core still cost a polling server up
//! to a tick per request that comes while they run: in the same runs the
//! probe waited more than 4.5 ms for 6–13 replies a run, most of them
//! 4.5–5 ms (1–2 a run with polling off).
//!
//! # Napping
//!
//! With `--idle-nap-us N` (off by default), when requests come fast the
//! runtime's thread naps, off its sockets, right before it would sleep in
//! `epoll_wait` (tokio's `on_thread_park`): a client that sends meanwhile
//! wakes nobody, and what gathered is served in one turn, as a network
//! card's interrupt coalescing does. A nap keeps the core idle, unlike
//! polling. It helps a client that has work of its own while the server
//! naps (replies still to read, requests to write): it no longer pays for
//! waking the thread. It harms a client that has nothing left to do but
//! wait for its replies: the nap holds it.
//!
//! So the nap's length adapts to what the clients did during the last
//! one. A nap starts only after [`NAP_MIN_BATCHES`] batches from at least
//! [`NAP_MIN_CONNS`] connections since the thread last parked. After it,
//! one `poll` that does not wait asks which of those connections (a sample
//! of at most [`NAP_SAMPLE`]) have sent again. Three quarters or more: the
//! clients ran dry during the nap, waiting for it, and the next nap is
//! half as long; below [`NAP_MIN`], naps stop for a number of parks that
//! doubles each time. Fewer than half: they were still busy, and the nap
//! grows by an eighth, up to N. It starts at N / 2.
//!
//! Measured on a 2-core VM (server and client on a core each), against
//! the same build without naps, alternating runs: `redis-benchmark -t
//! ping_mbulk -c 50 -P 16`, the thread blocked 3,650–5,850 times per 2M
//! requests against 8,700–11,650, for 1.00–1.07× Redis's throughput
//! (0.87–1.02× without naps); without pipelining 119,000–162,000 times per
//! 400,000 requests against 345,000–359,000 (Redis 282,000–334,000), for
//! 1.08–1.12× (0.89–1.01×), both at a lower CPU time per request.
//! tokend-bench's closed loops with 50 connections, whose client runs dry
//! within microseconds, stayed within the machine's spread of the build
//! without naps: the naps shrink away for them.
//!
//! It is off by default because the throughput costs latency: a request
//! that comes during a nap waits for its end, and the turn after a nap is
//! long. In runs like those, redis-benchmark's p50 / p99 went from
//! 0.29–0.34 / 0.42–0.58 ms to 0.34–0.40 / 0.70–0.81 ms without pipelining
//! (Redis 0.30–0.31 / 0.54–0.62), and from 0.28–0.38 / 0.54–0.69 ms to
//! 0.41–0.50 / 0.72–0.88 ms with `-P 16` (Redis 0.27–0.47 / 0.52–0.82). Turn it on where throughput and CPU
//! time per request matter more than a tenth of a millisecond.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where a window of 0 starts when it grows (cpuidle-haltpoll's
/// `guest_halt_poll_grow_start`, 50 µs, scaled to the smaller limit).
const GROW_START: Duration = Duration::from_micros(25);

/// The default limit, µs (`--idle-poll-us`): off.
pub const DEFAULT_LIMIT_US: u64 = 0;

/// The largest limit `--idle-poll-us` and `CONFIG SET` take (1 s).
pub const MAX_LIMIT_US: u64 = 1_000_000;

/// The default longest nap, µs (`--idle-nap-us`): off. Naps buy
/// throughput and CPU time with latency (module documentation), and a
/// Redis user expects the latency.
pub const DEFAULT_NAP_US: u64 = 0;

/// The longest nap `--idle-nap-us` and `CONFIG SET` take (1 ms): a nap
/// holds the runtime's timers too.
pub const MAX_NAP_US: u64 = 1_000;

/// Batches served since the thread last parked for it to nap rather than
/// sleep: fewer, and requests come too far apart for a nap to gather any
/// (a client alone, or two taking turns, never wait for one).
pub const NAP_MIN_BATCHES: u64 = 4;

/// Connections answered since the thread last parked for it to nap: a nap
/// gathers at most a batch from each, so with fewer it saves little
/// against what it risks.
pub const NAP_MIN_CONNS: usize = 8;

/// Connections the nap's `poll` asks about: enough to tell whether most
/// clients ran dry, few enough for one cheap call.
pub const NAP_SAMPLE: usize = 64;

/// The shortest nap: one that shrinks below it stops naps for a while.
pub const NAP_MIN: Duration = Duration::from_micros(3);

/// The most parks without a nap after naps that held waiting clients.
const MAX_NAP_BACKOFF: u32 = 1024;

/// The poller's state, shared with the connections that report activity.
#[derive(Debug)]
pub struct IdlePoll {
    /// The longest window, µs (0: never poll).
    limit_us: AtomicU64,
    /// A poller runs (only on a single-threaded runtime).
    running: AtomicBool,
    /// Bumped once per batch of requests handled.
    activity: AtomicU64,
    /// The poller sleeps until the next activity (not while off: then only
    /// a new limit wakes it).
    asleep: AtomicBool,
    wake: Notify,
    /// Quiet spells that ended while polling.
    hits: AtomicU64,
    /// Quiet spells the poller slept through.
    sleeps: AtomicU64,
    /// Quiet spells it slept through without polling because another
    /// thread of the server's wanted the core.
    ceded: AtomicU64,
    /// Whether another thread of the server's wants the core now (an
    /// expiry driver at work, the free thread, a GEN's stock maker): set
    /// once, by [`IdlePoll::cede_while`].
    others_busy: std::sync::OnceLock<Busy>,
    /// The current window, µs.
    window_us: AtomicU64,
    /// The nap when requests come fast, µs (0: never nap).
    nap_us: AtomicU64,
    /// The runtime calls [`IdlePoll::before_park`] (a single-threaded
    /// runtime built for it).
    hooked: AtomicBool,
    /// Naps taken.
    naps: AtomicU64,
    /// Naps during which the clients ran dry.
    naps_dry: AtomicU64,
    /// What the park hooks remember (only the runtime's thread locks it).
    nap: std::sync::Mutex<NapState>,
}

/// What tells the poller that another thread of the process wants the core.
struct Busy(Box<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Busy")
    }
}

/// The nap's memory between parks.
#[derive(Debug, Default)]
struct NapState {
    /// `activity` when the thread last parked.
    mark: u64,
    /// The next nap's length (zero: not yet set).
    len: Duration,
    /// Parks left without a nap, and the current back-off.
    skip: u32,
    backoff: u32,
    /// The thread's timer slack is down to 1 µs (done at the first nap,
    /// so that a tokend that never naps keeps the default).
    slack: bool,
}

impl NapState {
    /// Whether to nap before this park, and how long: `batches` served
    /// from `conns` connections since the last park, `max` the setting.
    fn plan(&mut self, batches: u64, conns: usize, max: Duration) -> Option<Duration> {
        if batches < NAP_MIN_BATCHES || conns < NAP_MIN_CONNS {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        if self.len.is_zero() {
            self.len = max / 2;
        }
        self.len = self.len.clamp(NAP_MIN.min(max), max);
        Some(self.len)
    }

    /// After a nap: `ready` of the `conns` connections asked about had sent
    /// again. Returns whether the clients ran dry (and the nap shrank).
    fn judge(&mut self, ready: usize, conns: usize, max: Duration) -> bool {
        if ready * 4 >= conns * 3 {
            self.len /= 2;
            if self.len < NAP_MIN {
                self.backoff = (self.backoff * 2).clamp(1, MAX_NAP_BACKOFF);
                self.skip = self.backoff;
                self.len = NAP_MIN;
            }
            return true;
        }
        if ready * 2 < conns {
            self.len = (self.len + self.len / 8 + Duration::from_nanos(500)).min(max);
            self.backoff /= 2;
        }
        false
    }
}

thread_local! {
    /// Connections the runtime's thread answered since it last parked (at
    /// most [`NAP_SAMPLE`]), as `poll` takes them.
    static ANSWERED: std::cell::RefCell<Vec<libc::pollfd>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What INFO shows of the poller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub hits: u64,
    pub sleeps: u64,
    pub ceded: u64,
    pub window_us: u64,
    pub naps: u64,
    pub naps_dry: u64,
}

impl IdlePoll {
    pub fn new(limit_us: u64, nap_us: u64) -> IdlePoll {
        IdlePoll {
            nap_us: AtomicU64::new(nap_us),
            hooked: AtomicBool::new(false),
            naps: AtomicU64::new(0),
            naps_dry: AtomicU64::new(0),
            nap: std::sync::Mutex::new(NapState::default()),
            limit_us: AtomicU64::new(limit_us),
            running: AtomicBool::new(false),
            activity: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            wake: Notify::new(),
            hits: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
            ceded: AtomicU64::new(0),
            others_busy: std::sync::OnceLock::new(),
            window_us: AtomicU64::new(0),
        }
    }

    /// Marks a poller as running from now on: called before it is spawned,
    /// so that a request served before its first turn sees it.
    pub fn starting(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// A poller runs: the runtime is single-threaded.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub fn limit_us(&self) -> u64 {
        self.limit_us.load(Ordering::Relaxed)
    }

    /// `CONFIG SET idle-poll-us`: takes effect at the next quiet spell.
    pub fn set_limit_us(&self, us: u64) {
        self.limit_us.store(us, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub fn nap_us(&self) -> u64 {
        self.nap_us.load(Ordering::Relaxed)
    }

    /// `CONFIG SET idle-nap-us`: takes effect at the next park.
    pub fn set_nap_us(&self, us: u64) {
        self.nap_us.store(us, Ordering::Relaxed);
    }

    /// The runtime will call the park hooks: called on the thread that
    /// will run it, before it starts.
    pub fn hook(&self) {
        self.hooked.store(true, Ordering::Relaxed);
    }

    /// Naps can happen: the runtime calls the park hooks.
    pub fn is_hooked(&self) -> bool {
        self.hooked.load(Ordering::Relaxed)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            hits: self.hits.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
            ceded: self.ceded.load(Ordering::Relaxed),
            window_us: self.window_us.load(Ordering::Relaxed),
            naps: self.naps.load(Ordering::Relaxed),
            naps_dry: self.naps_dry.load(Ordering::Relaxed),
        }
    }

    /// Polls only while `busy` says no: it tells whether another thread of
    /// the server's wants the core (`Store::threads_working`). Set once;
    /// later calls change nothing.
    pub fn cede_while(&self, busy: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.others_busy.set(Busy(Box::new(busy)));
    }

    fn others_busy(&self) -> bool {
        self.others_busy.get().is_some_and(|busy| (busy.0)())
    }

    /// A connection was served (`fd` its socket, or -1): the quiet spell
    /// (if any) is over. Costs a few loads of a line nobody writes unless a
    /// poller runs with a limit or naps are on: with several worker
    /// threads, a counter bumped by all of them would bounce between their
    /// cores.
    #[inline]
    pub fn touch(&self, fd: i32) {
        let polls = self.running.load(Ordering::Relaxed) && self.limit_us.load(Ordering::Relaxed) > 0;
        let naps = self.hooked.load(Ordering::Relaxed) && self.nap_us.load(Ordering::Relaxed) > 0;
        if !polls && !naps {
            return;
        }
        self.activity.fetch_add(1, Ordering::SeqCst);
        if naps && fd >= 0 {
            ANSWERED.with(|v| {
                let mut v = v.borrow_mut();
                if v.len() < NAP_SAMPLE && v.last().is_none_or(|p| p.fd != fd) {
                    v.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
                }
            });
        }
        if polls && self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Polls while the runtime's other tasks are idle, until `stop`. Each
    /// turn yields to the runtime, which then looks at its sockets without
    /// blocking, and offers the core to other threads (`sched_yield`). A
    /// yield does not hand the core over for long, so while one of the
    /// server's own threads wants it (`cede_while`) the poller sleeps
    /// instead.
    pub async fn run(&self, stop: &CancellationToken) {
        self.starting();
        self.poll(stop).await;
        self.running.store(false, Ordering::Relaxed);
    }

    async fn poll(&self, stop: &CancellationToken) {
        let mut window = Duration::ZERO;
        let mut seen = self.activity.load(Ordering::SeqCst);
        let mut quiet_since = Instant::now();
        loop {
            if self.limit_us() == 0 {
                window = Duration::ZERO;
                self.window_us.store(0, Ordering::Relaxed);
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
                seen = self.activity.load(Ordering::SeqCst);
                quiet_since = Instant::now();
                continue;
            }
            let now = Instant::now();
            let a = self.activity.load(Ordering::SeqCst);
            if a != seen {
                if now.duration_since(quiet_since) > POLL_TURN {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                }
                seen = a;
                quiet_since = now;
            } else if self.others_busy() {
                // The core is busy anyway, and the thread asleep in
                // `epoll_wait` is the one the scheduler runs first when a
                // request comes. The window is left as it is: this spell
                // says nothing of how soon requests come.
                if !self.sleep_until_served(seen, &self.ceded, stop).await {
                    return;
                }
                seen = self.activity.load(Ordering::SeqCst);
                quiet_since = Instant::now();
                continue;
            } else if now.duration_since(quiet_since) >= window {
                if !self.sleep_until_served(seen, &self.sleeps, stop).await {
                    return;
                }
                let woke = Instant::now();
                let limit = Duration::from_micros(self.limit_us());
                window = adjust(window, woke.duration_since(quiet_since), limit);
                self.window_us.store(window.as_micros() as u64, Ordering::Relaxed);
                seen = self.activity.load(Ordering::SeqCst);
                quiet_since = woke;
                continue;
            } else {
                std::thread::yield_now();
            }
            if stop.is_cancelled() {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Sleeps until a request is served after activity `seen` (the spell
    /// counted in `spells`), or until `stop` (false).
    async fn sleep_until_served(&self, seen: u64, spells: &AtomicU64, stop: &CancellationToken) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        if self.activity.load(Ordering::SeqCst) == seen {
            spells.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => return false,
            }
        }
        self.asleep.store(false, Ordering::SeqCst);
        true
    }
}

impl IdlePoll {
    /// The runtime's thread is about to park (sleep in `epoll_wait` unless
    /// something is ready): nap first if requests come fast, and judge the
    /// nap by what the clients did meanwhile.
    pub fn before_park(&self) {
        let max = Duration::from_micros(self.nap_us());
        if max.is_zero() {
            // Turned off with connections noted: forget them.
            ANSWERED.with(|v| v.borrow_mut().clear());
            return;
        }
        let Ok(mut st) = self.nap.lock() else { return };
        let a = self.activity.load(Ordering::SeqCst);
        let batches = a.wrapping_sub(st.mark);
        st.mark = a;
        ANSWERED.with(|v| {
            let mut v = v.borrow_mut();
            v.sort_unstable_by_key(|p| p.fd);
            v.dedup_by_key(|p| p.fd);
            if let Some(len) = st.plan(batches, v.len(), max) {
                if !st.slack {
                    st.slack = true;
                    fine_timer_slack();
                }
                std::thread::sleep(len);
                self.naps.fetch_add(1, Ordering::Relaxed);
                if st.judge(sent_again(&mut v), v.len(), max) {
                    self.naps_dry.fetch_add(1, Ordering::Relaxed);
                }
            }
            v.clear();
        });
    }
}

/// Lowers the calling thread's timer slack to 1 µs: naps end within a
/// microsecond of their length, not the 50 µs of the default slack.
fn fine_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: sets the calling thread's own timer slack; no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
}

/// How many of these sockets have something to read (or were closed), by
/// one `poll` that does not wait.
fn sent_again(fds: &mut [libc::pollfd]) -> usize {
    // SAFETY: the pointer and length are the slice's; poll writes only
    // `revents` within it.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    usize::try_from(n).unwrap_or(0)
}

/// A quiet spell shorter than this is the gap between two turns of a busy
/// runtime, not one that polling bridged.
const POLL_TURN: Duration = Duration::from_micros(2);

/// The next window after a quiet spell of `quiet` that the thread slept
/// through (cpuidle-haltpoll's `adjust_poll_limit`, grow and shrink by 2).
fn adjust(window: Duration, quiet: Duration, limit: Duration) -> Duration {
    let next = if quiet <= window {
        window
    } else if quiet <= limit {
        (window * 2).max(GROW_START)
    } else {
        window / 2
    };
    next.min(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LIMIT: Duration = Duration::from_micros(100);
    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A poller with this limit, running on the test's runtime.
    fn start(limit_us: u64) -> (Arc<IdlePoll>, CancellationToken, tokio::task::JoinHandle<()>) {
        let p = Arc::new(IdlePoll::new(limit_us, 0));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (p, stop) = (p.clone(), stop.clone());
            async move { p.run(&stop).await }
        });
        (p, stop, task)
    }

    #[test]
    fn the_window_grows_for_short_spells_and_shrinks_for_long_ones() {
        // A spell the limit would have bridged: grow from the start value.
        assert_eq!(adjust(Duration::ZERO, us(60), LIMIT), GROW_START);
        assert_eq!(adjust(us(25), us(60), LIMIT), us(50));
        assert_eq!(adjust(us(50), us(60), LIMIT), us(100));
        assert_eq!(adjust(us(100), us(99), LIMIT), us(100));
        // Never past the limit.
        assert_eq!(adjust(us(80), us(90), LIMIT), LIMIT);
        // Longer than the limit: polling would not have helped.
        assert_eq!(adjust(us(100), us(5000), LIMIT), us(50));
        assert_eq!(adjust(us(50), us(5000), LIMIT), us(25));
        assert_eq!(adjust(Duration::ZERO, us(5000), LIMIT), Duration::ZERO);
        // A lowered limit (CONFIG SET) takes effect at once; 0 turns it off.
        assert_eq!(adjust(us(100), us(10), us(40)), us(40));
        assert_eq!(adjust(us(100), us(10), Duration::ZERO), Duration::ZERO);
        assert_eq!(adjust(us(25), us(30), Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_nap_needs_several_connections_and_shrinks_when_their_clients_run_dry() {
        let max = us(50);
        let mut st = NapState::default();
        // A client alone, or a few: no nap.
        assert_eq!(st.plan(1, 1, max), None);
        assert_eq!(st.plan(100, NAP_MIN_CONNS - 1, max), None);
        assert_eq!(st.plan(NAP_MIN_BATCHES - 1, 50, max), None);
        // The first nap is half the setting.
        assert_eq!(st.plan(NAP_MIN_BATCHES, NAP_MIN_CONNS, max), Some(us(25)));
        // Few clients sent during it (they were busy): it grows by an
        // eighth, up to the setting.
        assert!(!st.judge(2, 50, max));
        assert_eq!(st.plan(50, 50, max), Some(Duration::from_nanos(28_625)));
        for _ in 0..20 {
            st.judge(0, 50, max);
        }
        assert_eq!(st.plan(50, 50, max), Some(max));
        // Between a half and three quarters: unchanged.
        assert!(!st.judge(30, 50, max));
        assert_eq!(st.plan(50, 50, max), Some(max));
        // Three quarters or more (they ran dry, waiting): it halves.
        assert!(st.judge(38, 50, max));
        assert_eq!(st.plan(50, 50, max), Some(us(25)));
        // Below the shortest nap: none for 1 park, then 2, 4 … up to 1024.
        while st.len >= NAP_MIN * 2 {
            assert!(st.judge(50, 50, max));
        }
        assert!(st.judge(50, 50, max));
        assert_eq!((st.skip, st.backoff), (1, 1));
        assert_eq!(st.plan(50, 50, max), None);
        assert_eq!(st.plan(50, 50, max), Some(NAP_MIN));
        assert!(st.judge(50, 50, max));
        assert_eq!((st.skip, st.backoff), (2, 2));
        for _ in 0..20 {
            st.judge(50, 50, max);
        }
        assert_eq!(st.backoff, MAX_NAP_BACKOFF);
        // A busy nap halves the back-off.
        st.skip = 0;
        assert!(!st.judge(0, 50, max));
        assert_eq!(st.backoff, MAX_NAP_BACKOFF / 2);
        // A lowered setting (CONFIG SET) takes effect at the next nap.
        for _ in 0..20 {
            st.judge(0, 50, max);
        }
        assert_eq!(st.plan(50, 50, us(10)), Some(us(10)));
    }

    #[test]
    fn the_park_hook_naps_after_several_connections_and_sees_which_sent_again() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let p = IdlePoll::new(0, 200);
        p.hook();
        let pairs: Vec<_> = (0..NAP_MIN_CONNS).map(|_| std::os::unix::net::UnixStream::pair().unwrap()).collect();
        // One connection answered many times: no nap.
        for _ in 0..NAP_MIN_BATCHES * 4 {
            p.touch(pairs[0].0.as_raw_fd());
        }
        p.before_park();
        assert_eq!(p.counts().naps, 0, "one connection");
        // Every connection answered once, and none sends again: a nap of
        // half the setting, its clients busy.
        for (server, _) in &pairs {
            p.touch(server.as_raw_fd());
        }
        let t = Instant::now();
        p.before_park();
        assert!(t.elapsed() >= us(100));
        assert_eq!((p.counts().naps, p.counts().naps_dry), (1, 0));
        // This time every client has sent again by the nap's end: they ran
        // dry.
        for (server, client) in &pairs {
            p.touch(server.as_raw_fd());
            (&*client).write_all(b"x").unwrap();
        }
        p.before_park();
        assert_eq!((p.counts().naps, p.counts().naps_dry), (2, 1));
        // Off: no nap, and touches are not counted.
        p.set_nap_us(0);
        for (server, _) in &pairs {
            p.touch(server.as_raw_fd());
        }
        p.before_park();
        assert_eq!(p.counts().naps, 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn off_it_sleeps_through_touches_until_a_limit_is_set() {
        let (p, stop, task) = start(0);
        for _ in 0..100 {
            p.touch(-1);
            tokio::task::yield_now().await;
        }
        assert_eq!(p.counts(), Counts::default(), "off: no polling, no sleeps counted");
        p.set_limit_us(MAX_LIMIT_US);
        while p.counts().sleeps == 0 {
            tokio::task::yield_now().await;
        }
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn while_another_thread_wants_the_core_it_sleeps_instead_of_polling() {
        let busy = Arc::new(AtomicBool::new(true));
        let p = Arc::new(IdlePoll::new(MAX_LIMIT_US, 0));
        p.cede_while({
            let busy = busy.clone();
            move || busy.load(Ordering::Relaxed)
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (p, stop) = (p.clone(), stop.clone());
            async move { p.run(&stop).await }
        });
        while p.counts().ceded == 0 {
            tokio::task::yield_now().await;
        }
        // Each request served wakes it, and it sleeps again at once: no
        // turn of polling, and the window is not judged by these spells.
        for n in 2..5 {
            p.touch(-1);
            while p.counts().ceded < n {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!((p.counts().sleeps, p.counts().hits, p.counts().window_us), (0, 0, 0));
        // The other thread is done: polling as before.
        busy.store(false, Ordering::Relaxed);
        p.touch(-1);
        while p.counts().sleeps == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(p.counts().ceded, 4);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_touch_wakes_the_sleeping_poller_and_stop_ends_it() {
        // A limit no pause of this test's machine reaches.
        let (p, stop, task) = start(MAX_LIMIT_US);
        // Let it reach its first sleep (window 0).
        while p.counts().sleeps == 0 {
            tokio::task::yield_now().await;
        }
        p.touch(-1);
        while p.counts().sleeps < 2 {
            tokio::task::yield_now().await;
        }
        // Woken right after it slept: the spell was short, the window grew.
        assert_eq!(p.counts().window_us, GROW_START.as_micros() as u64);
        stop.cancel();
        task.await.unwrap();
    }
}

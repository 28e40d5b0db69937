//! Real-time scheduling for the threads that serve requests
//! (`--rt-priority`).
//!
//! On a shared machine other programs' threads take the server's core now
//! and then for milliseconds: on the machine the benchmarks run on, a
//! management agent at nice -10 for about 4 ms every 5.1 s, and the
//! kernel's memory monitor. A request that comes meanwhile waits for
//! them, however short the server's own work. A thread at `SCHED_FIFO`
//! preempts every normal thread the moment it is woken.
//!
//! Only the threads that serve requests get it. `SCHED_RESET_ON_FORK`
//! gives every thread they start the normal policy: the expiry drivers,
//! the free thread, blocking work (a rewrite, a recovery's repacking, a
//! GEN's stock). Those keep sharing the core by time slices and can never
//! hold it against a request; a real-time thread that did not sleep
//! would keep them off its core (the kernel leaves normal threads a
//! twentieth of it with its default `sched_rt_runtime_us`, nothing with
//! -1), which is why polling (`--idle-poll-us`) is refused alongside.
//!
//! For the same reason a serving thread must never wait for a normal
//! thread by spinning or yielding until that thread acts: `sched_yield`
//! hands the core only to threads of its own priority. It waits on
//! futexes (std's mutexes), which let the holder run, and hands storage
//! to the free thread without waiting for it (`store::reclaim`; tokio's
//! queue, which allocates a block and yields once every 32 hand-overs,
//! but never for another thread). Waits for a lock that another thread
//! holds while preempted are left: a shard's lock, held by its expiry
//! thread; glibc's arena lock, which the free thread (at `SCHED_IDLE`)
//! takes for the moments it frees the small parts of what a request
//! thread allocated; and the kernel's lock on the address space, which
//! it holds while it unmaps a chunk, and which a request thread needs to
//! map memory (an allocation of 1 MiB or more). `block_in_place` is
//! barred (clippy.toml): it would leave a raised worker in tokio's
//! blocking pool, running blocking work at real-time priority.

use std::cell::Cell;

/// The highest priority `SCHED_FIFO` takes on Linux.
pub const MAX_PRIORITY: u8 = 99;

/// Puts the calling thread at `SCHED_FIFO` `priority` (1 to
/// [`MAX_PRIORITY`]); threads it starts from then on get the normal
/// policy. Fails without the right to (`CAP_SYS_NICE`, or an
/// `RLIMIT_RTPRIO` of at least `priority`).
pub fn serve_at(priority: u8) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: libc::c_int::from(priority) };
        // SAFETY: sets the calling thread's own policy (pid 0 is the
        // calling thread on Linux); the argument is a valid sched_param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "real-time scheduling is Linux-only here"))
    }
}

thread_local! {
    static SERVING: Cell<bool> = const { Cell::new(false) };
}

/// [`serve_at`], once per thread: for a multi-threaded runtime's park
/// hook, which only its workers run (its blocking threads never park
/// there). The main thread has shown at startup that the process may; a
/// worker refused all the same (its limit lowered meanwhile) says so on
/// stderr (logging may not be set up yet) and serves at the normal
/// policy.
pub fn serve_at_once(priority: u8) {
    SERVING.with(|done| {
        if !done.get() {
            done.set(true);
            if let Err(e) = serve_at(priority) {
                eprintln!("tokend: a worker thread stays at the normal policy: cannot use SCHED_FIFO {priority}: {e}");
            }
        }
    });
}

//! Redis's latency monitor (`LATENCY LATEST | HISTORY | RESET`): for each
//! kind of event that took at least `--latency-monitor-threshold` ms, the
//! latest and the worst, and a history of one sample per second (the
//! second's worst), 160 deep, as Redis keeps them.
//!
//! Events: `command` (a command that ran that long) and `expire-late` (an
//! expiry that fired that long after its deadline: the one number that
//! matters most for a token server).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Samples kept per event (Redis's `LATENCY_TS_LEN`).
const HISTORY: usize = 160;

/// One event's record.
#[derive(Clone, Debug, Default)]
pub struct EventSeries {
    /// (unix seconds, ms), oldest first; one per second.
    pub samples: VecDeque<(u64, u64)>,
    /// The worst ever (ms), since the last reset.
    pub max: u64,
}

/// The monitor.
#[derive(Default)]
pub struct LatencyMonitor {
    /// In ms; 0 disables it (Redis's default).
    threshold_ms: AtomicU64,
    events: Mutex<HashMap<&'static str, EventSeries>>,
}

impl LatencyMonitor {
    /// A monitor with this threshold (ms; 0: off).
    pub fn new(threshold_ms: u64) -> LatencyMonitor {
        LatencyMonitor { threshold_ms: AtomicU64::new(threshold_ms), events: Mutex::default() }
    }

    /// The threshold (ms; 0: off).
    pub fn threshold_ms(&self) -> u64 {
        self.threshold_ms.load(Ordering::Relaxed)
    }

    pub fn set_threshold_ms(&self, ms: u64) {
        self.threshold_ms.store(ms, Ordering::Relaxed);
    }

    /// Records `ms` for `event` if it reaches the threshold.
    pub fn record(&self, event: &'static str, ms: u64) {
        let t = self.threshold_ms();
        if t == 0 || ms < t {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let e = g.entry(event).or_default();
        match e.samples.back_mut() {
            Some(last) if last.0 == now => last.1 = last.1.max(ms),
            _ => {
                e.samples.push_back((now, ms));
                if e.samples.len() > HISTORY {
                    e.samples.pop_front();
                }
            }
        }
        e.max = e.max.max(ms);
    }

    /// Every event: (name, latest time, latest ms, max ms).
    pub fn latest(&self) -> Vec<(&'static str, u64, u64, u64)> {
        let g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> =
            g.iter().filter_map(|(name, e)| e.samples.back().map(|&(at, ms)| (*name, at, ms, e.max))).collect();
        v.sort_by_key(|e| e.0);
        v
    }

    /// One event's history: (time, ms), oldest first.
    pub fn history(&self, event: &str) -> Vec<(u64, u64)> {
        let g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        g.get(event).map(|e| e.samples.iter().copied().collect()).unwrap_or_default()
    }

    /// Forgets the named events (all when none are named); how many were reset.
    pub fn reset(&self, events: &[String]) -> usize {
        let mut g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.is_empty() {
            let n = g.len();
            g.clear();
            return n;
        }
        events.iter().filter(|e| g.remove(e.as_str()).is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_at_the_threshold_and_keeps_the_worst() {
        let m = LatencyMonitor::new(5);
        m.record("command", 4);
        assert!(m.latest().is_empty());
        m.record("command", 7);
        m.record("command", 6);
        m.record("expire-late", 9);
        let l = m.latest();
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].0, l[0].2, l[0].3), ("command", 7, 7), "one sample a second: the second's worst");
        assert_eq!(m.history("command").len(), 1);
        assert_eq!(m.reset(&["expire-late".into(), "nope".into()]), 1);
        assert_eq!(m.reset(&[]), 1);
        assert!(LatencyMonitor::new(0).latest().is_empty());
    }
}

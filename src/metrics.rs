//! Prometheus metrics at `http://--metrics-addr/metrics`.
//!
//! Nothing is counted for Prometheus alone: every scrape reads what the
//! server counts anyway (per-command statistics, the store's totals and
//! expiry lateness, the backing link) through a `prometheus-client`
//! [`Collector`], and its text encoder writes the exposition format. The
//! counters are the raw totals since start — `CONFIG RESETSTAT` resets what
//! INFO shows, never what Prometheus sees, since a counter must only grow.
//!
//! Per-pool series are bounded: the `--metrics-max-pools` largest pools
//! get their own `pool` label, the rest are summed under `pool="_other"`.

use crate::cmd::{Ctx, table};
use crate::hist::Hist;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The label of the pools beyond `--metrics-max-pools`, summed.
pub const OTHER_POOLS: &str = "_other";

/// Bucket bounds of the command latency histogram, ns (1 µs to 10 s).
const COMMAND_BOUNDS_NS: [u64; 20] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// Bucket bounds of the expiry lateness and backing write histograms, µs
/// (100 µs to 10 s: an expiry a few ms late is already worth seeing).
const LATE_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// What `/metrics` shows of a server.
struct Exporter {
    ctx: Arc<Ctx>,
    max_pools: usize,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter").field("max_pools", &self.max_pools).finish()
    }
}

/// One pool's counts, as the per-pool series show them.
#[derive(Default, Clone, Copy)]
struct PoolCounts {
    free: u64,
    assigned: u64,
    expired: u64,
    waiters: u64,
}

impl PoolCounts {
    fn add(&mut self, o: &PoolCounts) {
        self.free += o.free;
        self.assigned += o.assigned;
        self.expired += o.expired;
        self.waiters += o.waiters;
    }
}

fn counter<S: EncodeLabelSet>(m: &mut MetricEncoder, labels: &S, v: u64) -> fmt::Result {
    m.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge<S: EncodeLabelSet>(m: &mut MetricEncoder, labels: &S, v: f64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

/// Writes `h` (values in 1/`per_second` seconds) as a Prometheus histogram
/// in seconds with buckets at `bounds` (same units). Dividing, not
/// multiplying by 1e-9, keeps `le="1e-06"` from printing as
/// `1.0000000000000002e-06`.
fn histogram<S: EncodeLabelSet>(
    m: &mut MetricEncoder,
    labels: &S,
    h: &Hist,
    bounds: &[u64],
    per_second: f64,
) -> fmt::Result {
    let cumulative = h.cumulative(bounds);
    let mut prev = 0;
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .zip(cumulative)
        .map(|(&b, c)| {
            let n = c - prev;
            prev = c;
            (b as f64 / per_second, n)
        })
        .collect();
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(h.sum() as f64 / per_second, h.count(), &buckets, None)
}

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let ctx = &self.ctx;
        let none: [(&str, &str); 0] = [];

        let mut m = enc.encode_descriptor("build", "tokend's version", None, MetricType::Info)?;
        m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        let mut m =
            enc.encode_descriptor("uptime", "Time since the server started", Some(&Unit::Seconds), MetricType::Gauge)?;
        gauge(&mut m, &none, ctx.started.elapsed().as_secs_f64())?;

        // Commands.
        let stats = ctx.cmdstats.totals();
        let ran = || table::flat().iter().zip(stats.iter()).filter(|(_, t)| t.calls + t.failed + t.rejected > 0);
        let mut m = enc.encode_descriptor("commands", "Commands run, by command", None, MetricType::Counter)?;
        for (spec, t) in ran() {
            counter(&mut m, &[("command", spec.name)], t.calls)?;
        }
        let mut m = enc.encode_descriptor(
            "command_errors",
            "Commands that answered an error (reason=failed) or were refused before running (reason=rejected: arity, \
             authentication, loading, backing store down)",
            None,
            MetricType::Counter,
        )?;
        for (spec, t) in ran() {
            counter(&mut m, &[("command", spec.name), ("reason", "failed")], t.failed)?;
            counter(&mut m, &[("command", spec.name), ("reason", "rejected")], t.rejected)?;
        }
        let mut m = enc.encode_descriptor(
            "command_duration",
            "Time commands took to run, by command",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (spec, t) in ran() {
            if let Some(h) = &t.hist {
                histogram(&mut m, &[("command", spec.name)], h, &COMMAND_BOUNDS_NS, 1e9)?;
            }
        }

        // Tokens and pools.
        let (pools, other, total_pools) = self.pool_counts();
        let mut m = enc.encode_descriptor(
            "tokens",
            "Tokens by pool and state (free, assigned, expired = remembered after expiry)",
            None,
            MetricType::Gauge,
        )?;
        let all = pools.iter().map(|(n, c)| (n.as_str(), c)).chain(other.as_ref().map(|c| (OTHER_POOLS, c)));
        for (name, c) in all.clone() {
            gauge(&mut m, &[("pool", name), ("state", "free")], c.free as f64)?;
            gauge(&mut m, &[("pool", name), ("state", "assigned")], c.assigned as f64)?;
            gauge(&mut m, &[("pool", name), ("state", "expired")], c.expired as f64)?;
        }
        let mut m = enc.encode_descriptor(
            "blocked_waiters",
            "Clients blocked in TOKEN.ACQUIRE, by pool",
            None,
            MetricType::Gauge,
        )?;
        for (name, c) in all {
            gauge(&mut m, &[("pool", name)], c.waiters as f64)?;
        }
        let mut m = enc.encode_descriptor("pools", "Pools", None, MetricType::Gauge)?;
        gauge(&mut m, &none, total_pools as f64)?;
        let mut m = enc.encode_descriptor(
            "pending_timers",
            "Deadlines in the timing wheels (stale ones included until they fire or are swept)",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut m, &none, ctx.store.pending_timers() as f64)?;

        // Expiries.
        // Totals since the start: CONFIG RESETSTAT resets only INFO's view.
        let exp = ctx.store.expiry_totals();
        let mut m = enc.encode_descriptor(
            "expiries",
            "Lifetimes (event=expired) and leases (event=leaseexpired) that ended",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &[("event", "expired")], exp.expired)?;
        counter(&mut m, &[("event", "leaseexpired")], exp.lease_expired)?;
        let mut m = enc.encode_descriptor(
            "expiry_lateness",
            "How long after its deadline a lifetime or lease ended",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        histogram(&mut m, &none, &exp.lateness, &LATE_BOUNDS_US, 1e6)?;

        // Clients.
        let mut m = enc.encode_descriptor("connected_clients", "Client connections open", None, MetricType::Gauge)?;
        gauge(&mut m, &none, ctx.clients.len() as f64)?;
        let st = &ctx.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let mut m =
            enc.encode_descriptor("connections_received", "Client connections accepted", None, MetricType::Counter)?;
        counter(&mut m, &none, load(&st.connections_received))?;
        let mut m = enc.encode_descriptor(
            "rejected_connections",
            "Client connections refused (--maxclients)",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &none, load(&st.rejected_connections))?;
        let mut m =
            enc.encode_descriptor("resident_memory", "Resident set size", Some(&Unit::Bytes), MetricType::Gauge)?;
        gauge(&mut m, &none, crate::cmd::server_info::rss_bytes() as f64)?;

        // The backing Redis.
        if let Some(d) = ctx.durability() {
            let s = d.status();
            let mut m = enc.encode_descriptor(
                "backing_link_up",
                "1 while the backing Redis takes writes, 0 while it is unreachable, hung or refusing",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &none, if s.down { 0.0 } else { 1.0 })?;
            let mut m = enc.encode_descriptor(
                "backing_backlog",
                "Changes queued for the backing Redis and not yet acknowledged",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &none, s.backlog as f64)?;
            let mut m = enc.encode_descriptor(
                "backing_refused_changes",
                "Units of changes the backing Redis refused (they stay in memory only)",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m, &none, s.refused)?;
            let mut m = enc.encode_descriptor(
                "backing_data_lost",
                "Times the backing Redis was found to have lost its data (the state was written back)",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m, &none, s.lost)?;
            let mut m = enc.encode_descriptor(
                "backing_write_duration",
                "Time a batch of changes took to be written to the backing Redis, retries included",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            histogram(&mut m, &none, &d.write_latency(), &LATE_BOUNDS_US, 1e6)?;
        }

        // Cluster mode.
        if let Some(cl) = ctx.cluster() {
            let (mine, _) = cl.counts();
            let mut m = enc.encode_descriptor(
                "cluster_slots_owned",
                "Hash slots this node serves (cluster mode)",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &none, mine as f64)?;
            let mut m = enc.encode_descriptor(
                "cluster_nodes",
                "Live nodes of the cluster, as this node last saw them",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &none, cl.nodes().len() as f64)?;
        }
        Ok(())
    }
}

impl Exporter {
    /// The largest pools by tokens (ties: by name), the rest summed, and
    /// how many pools there are.
    fn pool_counts(&self) -> (Vec<(String, PoolCounts)>, Option<PoolCounts>, u64) {
        // A min-heap of the largest `max_pools` seen so far.
        let mut top: BinaryHeap<Reverse<(u64, String)>> = BinaryHeap::new();
        let mut counts = std::collections::HashMap::new();
        let mut other: Option<PoolCounts> = None;
        let mut n = 0;
        self.ctx.store.for_each_pool(|name, s| {
            n += 1;
            let c = PoolCounts {
                free: s.free,
                assigned: s.assigned,
                expired: s.expired_remembered,
                waiters: s.blocked_waiters,
            };
            let name = String::from_utf8_lossy(name).into_owned();
            let size = s.total + s.expired_remembered;
            if self.max_pools == 0 {
                other.get_or_insert_default().add(&c);
                return;
            }
            if top.len() < self.max_pools {
                top.push(Reverse((size, name.clone())));
                counts.insert(name, c);
                return;
            }
            let smallest = top.peek().map(|r| r.0.0).unwrap_or(0);
            if size > smallest {
                if let Some(Reverse((_, out))) = top.pop()
                    && let Some(oc) = counts.remove(&out)
                {
                    other.get_or_insert_default().add(&oc);
                }
                top.push(Reverse((size, name.clone())));
                counts.insert(name, c);
            } else {
                other.get_or_insert_default().add(&c);
            }
        });
        let mut pools: Vec<(String, PoolCounts)> = counts.into_iter().collect();
        pools.sort_by(|a, b| a.0.cmp(&b.0));
        (pools, other, n)
    }
}

/// The text `/metrics` answers.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// A registry whose scrape reads `ctx`.
pub fn registry(ctx: Arc<Ctx>, max_pools: usize) -> Registry {
    let mut r = Registry::with_prefix("tokend");
    r.register_collector(Box::new(Exporter { ctx, max_pools }));
    r
}

/// Serves `/metrics` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, max_pools: usize, stop: CancellationToken) {
    use axum::http::header::CONTENT_TYPE;
    let registry = Arc::new(registry(ctx, max_pools));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                // The scrape walks every pool: off the async workers.
                let text = tokio::task::spawn_blocking(move || render(&registry)).await.unwrap_or_default();
                ([(CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], text)
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!(error = %e, "the metrics endpoint failed");
    }
}

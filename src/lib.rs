//! tokend: a token server that speaks the Redis protocol.
//!
//! Layers, each behind a narrow seam so it can be tested alone:
//!
//! - [`codec`] frames requests (RESP or inline) and [`reply`] encodes replies
//!   for RESP2 or RESP3;
//! - [`store`] holds the pools, sharded, with one [`wheel`] (a hierarchical
//!   timing wheel) per shard for lifetimes and leases; [`hist`] (latency
//!   histograms) and [`latency`] (Redis's latency monitor) are what it and
//!   the command core record into;
//! - [`notify`] turns store events into keyspace-style messages on the
//!   [`pubsub`] broker (and on the backing Redis);
//! - [`idle_poll`] keeps the runtime's thread polling for a moment before it
//!   sleeps (the RESP front end reports activity to it);
//! - [`cluster`] is cluster mode's slot map as this node knows it (the
//!   command core routes by it: `-MOVED`, `-TRYAGAIN`, `-CLUSTERDOWN`);
//! - [`cmd`] is the command core: one table of commands and one
//!   `execute(ctx, session, request)` that every front end calls ([`parse`]
//!   is the argument cursor; [`durable`] is its seam to the backing store);
//! - [`persist`] writes changes to the backing Redis and reads them back,
//!   and in cluster mode keeps the membership there (heartbeats, slot
//!   claims and handovers);
//! - [`connection`] is the RESP front end and [`http`] the old service's
//!   HTTP API (both call `cmd::execute`), [`metrics`] the Prometheus
//!   endpoint (it reads what the layers below count); [`server`] wires everything
//!   together, accepts connections and stops gracefully; [`config`] reads
//!   the settings; [`import`] (`tokend import-seed`) and [`ping`]
//!   (`tokend --ping`) are clients of a running server.
//!
//! Imports only go down this list (a module never imports one above it).

pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod connection;
pub mod durable;
pub mod glob;
pub mod hist;
pub mod http;
pub mod idle_poll;
pub mod import;
pub mod latency;
pub mod metrics;
pub mod notify;
pub mod parse;
pub mod persist;
pub mod ping;
pub mod pubsub;
pub mod reply;
pub mod sched;
pub mod server;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod token;
pub mod wheel;

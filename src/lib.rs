//! tokend: a token server that speaks the Redis protocol.
//!
//! Layers, each behind a narrow seam so it can be tested alone:
//!
//! - [`codec`] frames requests (RESP or inline) and [`reply`] encodes replies
//!   for RESP2 or RESP3;
//! - [`cmd`] parses each command ([`parse`] is the argument cursor) and runs
//!   it against the [`store`];
//! - [`store`] holds the pools, sharded, with one [`wheel`] (a hierarchical
//!   timing wheel) per shard for lifetimes and leases;
//! - [`notify`] turns store events into keyspace-style messages on the
//!   [`pubsub`] broker (and on the backing Redis);
//! - [`server`] and [`connection`] run the network side.

pub mod clock;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod connection;
pub mod glob;
pub mod notify;
pub mod parse;
pub mod persist;
pub mod pubsub;
pub mod reply;
pub mod server;
pub mod store;
pub mod tls;
pub mod token;
pub mod wheel;

//! `CLUSTER …`, `READONLY`, `READWRITE`, `ASKING`: what cluster-aware
//! clients ask a node to learn the slot map. Without cluster mode they
//! answer as a Redis with `cluster-enabled no` does.

use super::{Call, Outcome};
use crate::cluster::{Cluster, Node, keyslot};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use bytes::Bytes;
use std::fmt::Write;

const DISABLED: &str = "ERR This instance has cluster support disabled";

/// Answers a subcommand without arguments: `reply` of the slot map, or
/// Redis's error without cluster mode.
fn answer(p: &mut Parse, c: &Call, reply: impl FnOnce(&Cluster) -> Reply) -> Result<Outcome, ParseError> {
    p.finish()?;
    Ok(match c.ctx.cluster() {
        Some(cl) => reply(cl).into(),
        None => Reply::error(DISABLED).into(),
    })
}

fn text(s: String) -> Reply {
    Reply::Bulk(Bytes::from(s))
}

/// Redis's cluster bus port for a client port.
fn bus_port(port: u16) -> u16 {
    port.wrapping_add(10000)
}

/// `CLUSTER MYID`.
pub fn myid(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |cl| text(cl.me().id.clone()))
}

/// `CLUSTER KEYSLOT key` (refused without cluster mode, as by
/// redis-server 7.0).
pub fn keyslot_cmd(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let key = p.next_slice()?;
    answer(p, c, |_| Reply::Integer(i64::from(keyslot(key))))
}

/// `CLUSTER INFO`.
pub fn info(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |cl| Reply::Verbatim(Bytes::from(info_text(cl))))
}

/// The `CLUSTER INFO` text (also `INFO cluster`'s details).
pub fn info_text(cl: &Cluster) -> String {
    let (_, assigned) = cl.counts();
    let nodes = cl.nodes().len();
    let (current, mine) = cl.epochs();
    let ok = assigned == crate::cluster::SLOTS as usize && cl.serving();
    let mut s = String::new();
    let _ = write!(
        s,
        "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{assigned}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{nodes}\r\ncluster_size:{nodes}\r\n\
         cluster_current_epoch:{current}\r\ncluster_my_epoch:{mine}\r\ncluster_stats_messages_sent:0\r\n\
         cluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
        if ok { "ok" } else { "fail" },
        crate::cluster::SLOTS as usize - assigned,
    );
    s
}

/// A node as `CLUSTER SLOTS` lists it: host, port, id, no extra metadata.
fn slots_node(n: &Node) -> Reply {
    Reply::Array(vec![
        text(n.host.clone()),
        Reply::Integer(i64::from(n.port)),
        text(n.id.clone()),
        Reply::Map(Vec::new()),
    ])
}

/// `CLUSTER SLOTS`.
pub fn slots(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |cl| {
        let out = cl
            .ranges()
            .into_iter()
            .map(|(first, last, n)| {
                Reply::Array(vec![Reply::Integer(i64::from(first)), Reply::Integer(i64::from(last)), slots_node(&n)])
            })
            .collect();
        Reply::Array(out)
    })
}

/// `CLUSTER SHARDS`: one shard per node (tokend has no replicas).
pub fn shards(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, shards_of)
}

fn shards_of(cl: &Cluster) -> Reply {
    let ranges = cl.ranges();
    let out = cl
        .nodes()
        .iter()
        .map(|n| {
            let slots = ranges
                .iter()
                .filter(|(.., o)| o.id == n.id)
                .flat_map(|(a, b, _)| [Reply::Integer(i64::from(*a)), Reply::Integer(i64::from(*b))])
                .collect();
            let node = Reply::Map(vec![
                (Reply::bulk_static("id"), text(n.id.clone())),
                (Reply::bulk_static("port"), Reply::Integer(i64::from(n.port))),
                (Reply::bulk_static("ip"), text(n.host.clone())),
                (Reply::bulk_static("endpoint"), text(n.host.clone())),
                (Reply::bulk_static("role"), Reply::bulk_static("master")),
                (Reply::bulk_static("replication-offset"), Reply::Integer(0)),
                (Reply::bulk_static("health"), Reply::bulk_static("online")),
            ]);
            Reply::Map(vec![
                (Reply::bulk_static("slots"), Reply::Array(slots)),
                (Reply::bulk_static("nodes"), Reply::Array(vec![node])),
            ])
        })
        .collect();
    Reply::Array(out)
}

/// `CLUSTER NODES`: Redis's text format, one line per node.
pub fn nodes(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |cl| Reply::Verbatim(Bytes::from(nodes_text(cl))))
}

/// The `CLUSTER NODES` text.
pub fn nodes_text(cl: &Cluster) -> String {
    let ranges = cl.ranges();
    let (_, my_epoch) = cl.epochs();
    let mut s = String::new();
    for n in cl.nodes().iter() {
        let myself = n.id == cl.me().id;
        let flags = if myself { "myself,master" } else { "master" };
        let _ = write!(
            s,
            "{} {}:{}@{} {flags} - 0 0 {} connected",
            n.id,
            n.host,
            n.port,
            bus_port(n.port),
            if myself { my_epoch } else { 0 }
        );
        for (a, b, _) in ranges.iter().filter(|(.., o)| o.id == n.id) {
            if a == b {
                let _ = write!(s, " {a}");
            } else {
                let _ = write!(s, " {a}-{b}");
            }
        }
        s.push('\n');
    }
    s
}

/// `CLUSTER COUNTKEYSINSLOT slot`: pools of that slot held here.
pub fn countkeysinslot(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let slot = p.next_i64()?;
    p.finish()?;
    if !(0..i64::from(crate::cluster::SLOTS)).contains(&slot) {
        return Ok(Reply::error("ERR Invalid slot").into());
    }
    if c.ctx.cluster().is_none() {
        return Ok(Reply::error(DISABLED).into());
    }
    let n = c.ctx.store.keys(b"*").iter().filter(|k| i64::from(keyslot(k)) == slot).count();
    Ok(Reply::Integer(n as i64).into())
}

/// `READONLY` / `READWRITE` / `ASKING`: accepted (tokend has no replicas to
/// read from, and answers every slot it serves).
pub fn accept(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |_| Reply::ok())
}

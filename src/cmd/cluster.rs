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
            .iter()
            .map(|(first, last, n)| {
                Reply::Array(vec![Reply::Integer(i64::from(*first)), Reply::Integer(i64::from(*last)), slots_node(n)])
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

/// Runs a subcommand with arguments on the slot map, or answers Redis's
/// error without cluster mode (before looking at the arguments, as
/// redis-server 7.0 does).
fn with_cluster(
    p: &mut Parse,
    c: &Call,
    run: impl FnOnce(&mut Parse, &Cluster) -> Result<Reply, ParseError>,
) -> Result<Outcome, ParseError> {
    match c.ctx.cluster() {
        Some(cl) => Ok(run(p, cl)?.into()),
        None => Ok(Reply::error(DISABLED).into()),
    }
}

/// A slot number argument, if it names one of the 16384.
fn slot_arg(p: &mut Parse) -> Result<Option<u16>, ParseError> {
    let slot = p.next_i64()?;
    Ok(u16::try_from(slot).ok().filter(|&s| s < crate::cluster::SLOTS))
}

/// The pools of `slot` held here.
fn pools_in_slot(c: &Call, slot: u16) -> Result<impl Iterator<Item = Bytes>, ParseError> {
    Ok(c.tokens.keys(b"*")?.into_iter().filter(move |k| keyslot(k) == slot))
}

/// `CLUSTER COUNTKEYSINSLOT slot`: pools of that slot held here.
pub fn countkeysinslot(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    with_cluster(p, c, |p, _| {
        let slot = slot_arg(p)?;
        p.finish()?;
        Ok(match slot {
            Some(slot) => Reply::Integer(pools_in_slot(c, slot)?.count() as i64),
            None => Reply::error("ERR Invalid slot"),
        })
    })
}

/// `CLUSTER GETKEYSINSLOT slot count`: at most `count` pools of that slot
/// held here.
pub fn getkeysinslot(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    with_cluster(p, c, |p, _| {
        let slot = slot_arg(p)?;
        let count = usize::try_from(p.next_i64()?).ok();
        p.finish()?;
        Ok(match (slot, count) {
            (Some(slot), Some(count)) => Reply::Array(pools_in_slot(c, slot)?.take(count).map(Reply::Bulk).collect()),
            _ => Reply::error("ERR Invalid slot or number of keys"),
        })
    })
}

/// `CLUSTER REPLICAS node-id`: none (tokend nodes have no replicas; the
/// backing Redis keeps what a replica would).
pub fn replicas(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    with_cluster(p, c, |p, cl| {
        let id = p.next_slice()?;
        p.finish()?;
        Ok(if cl.nodes().iter().any(|n| n.id.as_bytes() == id) {
            Reply::Array(Vec::new())
        } else {
            Reply::error(format!("ERR Unknown node {}", String::from_utf8_lossy(id)))
        })
    })
}

/// `CLUSTER LINKS`: none, as tokend nodes have no cluster bus (they meet
/// in the backing Redis).
pub fn links(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |_| Reply::Array(Vec::new()))
}

/// `CLUSTER HELP`.
pub fn help(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |_| {
        Reply::help(&[
            "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "COUNTKEYSINSLOT <slot>",
            "    Return the number of keys in <slot>.",
            "GETKEYSINSLOT <slot> <count>",
            "    Return key names stored by current node in a slot.",
            "INFO",
            "    Return information about the cluster.",
            "KEYSLOT <key>",
            "    Return the hash slot for <key>.",
            "LINKS",
            "    Return information about all network links between this node and its peers",
            "    (none: tokend nodes meet in the backing Redis, not over a cluster bus).",
            "MYID",
            "    Return the node id.",
            "NODES",
            "    Return cluster configuration seen by node. Output format:",
            "    <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
            "REPLICAS <node-id>",
            "    Return <node-id> replicas.",
            "SHARDS",
            "    Return information about slot range mappings and the nodes associated with them.",
            "SLOTS",
            "    Return information about slots range mappings. Each range is made of:",
            "    start, end, master and replicas IP addresses, ports and ids",
            "HELP",
            "    Prints this help.",
        ])
    })
}

/// `READONLY` / `READWRITE` / `ASKING`: accepted (tokend has no replicas to
/// read from, and answers every slot it serves).
pub fn accept(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    answer(p, c, |_| Reply::ok())
}

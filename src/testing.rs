//! Helpers for the crate's unit tests: a command context with no socket,
//! a way to run a request through the dispatcher, and a RESP decoder that
//! keeps the type byte of every value (to compare reply types with Redis's).

use crate::clock::Clock;
use crate::cmd::{self, Ctx, Outcome, Session, Settings};
use crate::notify::{EventClasses, Notifier};
use crate::pubsub::PubSub;
use crate::reply::{Protocol, Reply};
use crate::store::{Store, StoreConfig};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, OnceLock};

/// A shared in-memory context for tests that only read (COMMAND, errors).
pub fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let pubsub = Arc::new(PubSub::default());
        let notifier = Arc::new(Notifier::new(EventClasses::parse("").unwrap(), pubsub.clone()));
        let store = Store::new(StoreConfig::default(), Clock::new(), notifier);
        Ctx::new(store, pubsub, Settings { max_gen_count: 100_000, shards: 16, ..Settings::default() })
    })
}

/// Runs one request through [`cmd::execute`] on a fresh session; the reply.
pub fn run(argv: &[&str]) -> Reply {
    run_bytes(argv.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect())
}

/// [`run`] with any bytes.
pub fn run_bytes(args: Vec<Bytes>) -> Reply {
    let ctx = ctx();
    let addr = "127.0.0.1:1".parse().unwrap();
    let mut s = Session::new(ctx, addr, addr);
    let r = match cmd::execute(ctx, &mut s, args) {
        Outcome::Reply(r) | Outcome::Close(r) => r,
        Outcome::Replies(rs) => Reply::Array(rs),
        Outcome::Block { .. } | Outcome::Hangup => Reply::Null,
    };
    s.close(ctx);
    r
}

/// A reply's bytes in a protocol.
pub fn encode(r: Reply, p: Protocol) -> Vec<u8> {
    let mut b = BytesMut::new();
    r.encode(p, &mut b);
    b.to_vec()
}

/// A decoded RESP value: a scalar with its type byte and payload, or an
/// aggregate with its type byte and children (a map's flattened k, v, k, v…).
#[derive(Debug)]
pub enum Node {
    Scalar(u8, Vec<u8>),
    Agg(u8, Vec<Node>),
}

impl Node {
    pub fn kind(&self) -> u8 {
        match self {
            Node::Scalar(k, _) | Node::Agg(k, _) => *k,
        }
    }
    pub fn children(&self) -> &[Node] {
        match self {
            Node::Agg(_, c) => c,
            Node::Scalar(..) => panic!("not an aggregate: {self:?}"),
        }
    }
    pub fn text(&self) -> &[u8] {
        match self {
            Node::Scalar(_, t) => t,
            Node::Agg(..) => panic!("not a scalar: {self:?}"),
        }
    }
    /// A map's fields, whether sent as `%` (RESP3) or a flat array (RESP2);
    /// field names must be bulk strings, as Redis sends them.
    pub fn fields(&self) -> Vec<(&str, &Node)> {
        let c = self.children();
        let pairs = c.chunks_exact(2);
        assert!(matches!(self.kind(), b'%' | b'*') && pairs.remainder().is_empty(), "not a map: {self:?}");
        pairs
            .map(|kv| {
                assert_eq!(kv[0].kind(), b'$', "map key not a bulk string: {:?}", kv[0]);
                (std::str::from_utf8(kv[0].text()).unwrap(), &kv[1])
            })
            .collect()
    }
    pub fn field(&self, name: &str) -> Option<&Node> {
        self.fields().into_iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

pub fn decode(buf: &[u8]) -> Node {
    fn line<'a>(buf: &'a [u8], pos: &mut usize) -> &'a [u8] {
        let end = *pos + buf[*pos..].windows(2).position(|w| w == b"\r\n").unwrap();
        let l = &buf[*pos..end];
        *pos = end + 2;
        l
    }
    fn node(buf: &[u8], pos: &mut usize) -> Node {
        let l = line(buf, pos);
        let (kind, rest) = (l[0], &l[1..]);
        let n = || std::str::from_utf8(rest).unwrap().parse::<i64>().unwrap();
        match kind {
            b'$' | b'=' if n() >= 0 => {
                let len = usize::try_from(n()).unwrap();
                let data = buf[*pos..*pos + len].to_vec();
                *pos += len + 2;
                Node::Scalar(kind, data)
            }
            b'*' | b'~' | b'>' if n() >= 0 => Node::Agg(kind, (0..n()).map(|_| node(buf, pos)).collect()),
            b'%' => Node::Agg(kind, (0..2 * n()).map(|_| node(buf, pos)).collect()),
            _ => Node::Scalar(kind, rest.to_vec()),
        }
    }
    let mut pos = 0;
    let n = node(buf, &mut pos);
    assert_eq!(pos, buf.len(), "trailing bytes");
    n
}

/// The type bytes of an encoded reply with aggregate lengths, values left
/// out: `*2 $ *12 $ $ …`.
pub fn shape(buf: &[u8]) -> String {
    fn walk(n: &Node, out: &mut Vec<String>) {
        match n {
            Node::Scalar(k, _) => out.push((*k as char).to_string()),
            Node::Agg(k, c) => {
                let len = if *k == b'%' { c.len() / 2 } else { c.len() };
                out.push(format!("{}{len}", *k as char));
                c.iter().for_each(|c| walk(c, out));
            }
        }
    }
    let mut out = Vec::new();
    walk(&decode(buf), &mut out);
    out.join(" ")
}

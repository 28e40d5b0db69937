//! Replies, independent of the protocol version.
//!
//! Commands build a [`Reply`]; the connection encodes it for the protocol the
//! client negotiated (RESP2 by default, RESP3 after `HELLO 3`). Keeping the two
//! apart means a command is written once and a map, a set, a null or a push
//! message come out the way each protocol spells them, exactly as Redis does:
//! a map is a flat field/value array in RESP2, a null is `$-1` in RESP2 and `_`
//! in RESP3, a push message is `>` in RESP3 and a plain array in RESP2.
//!
//! Encoding is delegated to the `redis-protocol` crate's encoders; this module
//! only converts to its frame types.

use crate::token::{self, TokenId};
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as F2;
use redis_protocol::resp3::types::{BytesFrame as F3, FrameMap, FrameSet, VerbatimStringFormat};

/// The protocol a connection speaks, chosen by `HELLO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// One reply, in protocol-neutral form.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`-style status reply.
    Simple(Bytes),
    /// An error; the text must start with an upper-case code (`ERR`, `NOTOKEN`…).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// A null bulk string in RESP2, `_` in RESP3.
    Null,
    /// A null array in RESP2 (`*-1`, as an aborted EXEC replies), `_` in RESP3.
    NullArray,
    Array(Vec<Reply>),
    /// RESP3 map; a flat field/value array in RESP2 (as `HGETALL` does).
    Map(Vec<(Reply, Reply)>),
    /// RESP3 set; a plain array in RESP2.
    Set(Vec<Reply>),
    /// RESP3 double; a bulk string in RESP2.
    Double(f64),
    /// RESP3 verbatim string (`txt`); a bulk string in RESP2 (used by `INFO`).
    Verbatim(Bytes),
    /// RESP3 push (pub/sub messages); a plain array in RESP2.
    Push(Vec<Reply>),
    /// An array of tokens' text forms (GEN COUNT), written straight from
    /// the ids: no string is made per token.
    Tokens(Vec<TokenId>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple(Bytes::from_static(b"OK"))
    }

    /// A status reply from static text.
    pub fn status(s: &'static str) -> Reply {
        Reply::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// A `HELP` subcommand's answer: its lines as status replies.
    pub fn help(lines: &[&'static str]) -> Reply {
        Reply::Array(lines.iter().copied().map(Reply::status).collect())
    }

    /// A bulk string from static text.
    pub fn bulk_static(s: &'static str) -> Reply {
        Reply::Bulk(Bytes::from_static(s.as_bytes()))
    }

    /// A bulk string copied from any bytes.
    pub fn bulk(b: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(b.as_ref()))
    }

    /// An error reply. `msg` must start with the error code, e.g. `"ERR syntax error"`.
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    /// True for arrays, maps, sets and pushes.
    pub fn is_aggregate(&self) -> bool {
        matches!(self, Reply::Array(_) | Reply::Map(_) | Reply::Set(_) | Reply::Push(_) | Reply::Tokens(_))
    }

    /// True for error replies.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoded reply to `dst`.
    ///
    /// Scalars (the replies of every hot command) and arrays of bulk
    /// strings (GEN COUNT, pub/sub messages) are written directly: the same
    /// bytes the crate writes (a test checks this for both protocols),
    /// without building a frame or computing lengths through a float `log10`
    /// as the crate does. Other aggregates go through the crate.
    pub fn encode(self, proto: Protocol, dst: &mut BytesMut) {
        let mut num = itoa::Buffer::new();
        match &self {
            Reply::Bulk(b) => {
                dst.reserve(b.len() + 16);
                put_bulk(dst, &mut num, b);
                return;
            }
            Reply::Integer(i) => {
                dst.extend_from_slice(b":");
                dst.extend_from_slice(num.format(*i).as_bytes());
                dst.extend_from_slice(b"\r\n");
                return;
            }
            Reply::Null => {
                dst.extend_from_slice(if proto == Protocol::Resp3 { b"_\r\n" } else { b"$-1\r\n" });
                return;
            }
            Reply::NullArray => {
                dst.extend_from_slice(if proto == Protocol::Resp3 { b"_\r\n" } else { b"*-1\r\n" });
                return;
            }
            Reply::Simple(s) if !s.iter().any(|&b| b == b'\r' || b == b'\n') => {
                dst.extend_from_slice(b"+");
                dst.extend_from_slice(s);
                dst.extend_from_slice(b"\r\n");
                return;
            }
            // Arrays of bulk strings: GEN COUNT's tokens, and every pub/sub
            // message (a burst of expiries is hundreds of thousands).
            Reply::Array(v) | Reply::Push(v) if v.iter().all(|r| matches!(r, Reply::Bulk(_))) => {
                let push = proto == Protocol::Resp3 && matches!(self, Reply::Push(_));
                dst.reserve(
                    v.iter().map(|r| if let Reply::Bulk(b) = r { b.len() + 16 } else { 0 }).sum::<usize>() + 16,
                );
                dst.extend_from_slice(if push { b">" } else { b"*" });
                dst.extend_from_slice(num.format(v.len()).as_bytes());
                dst.extend_from_slice(b"\r\n");
                for r in v {
                    if let Reply::Bulk(b) = r {
                        put_bulk(dst, &mut num, b);
                    }
                }
                return;
            }
            Reply::Tokens(ids) => {
                put_array_header(dst, ids.len());
                put_tokens(dst, ids);
                return;
            }
            _ => {}
        }
        // Encoding into a growable buffer cannot fail for frames we build
        // ourselves (only invalid frame kinds, which we never make, error).
        let res = match proto {
            Protocol::Resp2 => redis_protocol::resp2::encode::extend_encode(dst, &self.into_resp2(), false).map(|_| ()),
            Protocol::Resp3 => {
                redis_protocol::resp3::encode::complete::extend_encode(dst, &self.into_resp3(), false).map(|_| ())
            }
        };
        debug_assert!(res.is_ok(), "encoding a reply failed: {res:?}");
    }

    /// Converts to a RESP2 frame.
    pub fn into_resp2(self) -> F2 {
        match self {
            Reply::Simple(s) => F2::SimpleString(s),
            Reply::Error(e) => F2::Error(sanitize_error(e).into()),
            Reply::Integer(i) => F2::Integer(i),
            Reply::Bulk(b) | Reply::Verbatim(b) => F2::BulkString(b),
            // Inside an aggregate the crate has no null array: a null.
            Reply::Null | Reply::NullArray => F2::Null,
            Reply::Double(d) => F2::BulkString(Bytes::from(format_double(d))),
            Reply::Array(v) | Reply::Set(v) | Reply::Push(v) => {
                F2::Array(v.into_iter().map(Reply::into_resp2).collect())
            }
            Reply::Tokens(ids) => F2::Array(ids.into_iter().map(|t| F2::BulkString(token_text(t))).collect()),
            Reply::Map(kv) => {
                let mut out = Vec::with_capacity(kv.len() * 2);
                for (k, v) in kv {
                    out.push(k.into_resp2());
                    out.push(v.into_resp2());
                }
                F2::Array(out)
            }
        }
    }

    /// Converts to a RESP3 frame.
    pub fn into_resp3(self) -> F3 {
        match self {
            Reply::Simple(s) => F3::SimpleString { data: s, attributes: None },
            Reply::Error(e) => F3::SimpleError { data: sanitize_error(e).into(), attributes: None },
            Reply::Integer(i) => F3::Number { data: i, attributes: None },
            Reply::Bulk(b) => F3::BlobString { data: b, attributes: None },
            Reply::Verbatim(b) => F3::VerbatimString { data: b, format: VerbatimStringFormat::Text, attributes: None },
            Reply::Null | Reply::NullArray => F3::Null,
            Reply::Double(d) => F3::Double { data: d, attributes: None },
            Reply::Array(v) => F3::Array { data: v.into_iter().map(Reply::into_resp3).collect(), attributes: None },
            Reply::Push(v) => F3::Push { data: v.into_iter().map(Reply::into_resp3).collect(), attributes: None },
            Reply::Tokens(ids) => F3::Array {
                data: ids.into_iter().map(|t| F3::BlobString { data: token_text(t), attributes: None }).collect(),
                attributes: None,
            },
            // redis-protocol's RESP3 set hashes its members and cannot hold
            // aggregates (it panics); such sets are sent as arrays, which
            // every client reads the same way.
            Reply::Set(v) if v.iter().any(Reply::is_aggregate) => {
                F3::Array { data: v.into_iter().map(Reply::into_resp3).collect(), attributes: None }
            }
            Reply::Set(v) => {
                let mut set = FrameSet::with_capacity(v.len());
                for r in v {
                    set.insert(r.into_resp3());
                }
                F3::Set { data: set, attributes: None }
            }
            Reply::Map(kv) => {
                let mut map = FrameMap::with_capacity(kv.len());
                for (k, v) in kv {
                    map.insert(k.into_resp3(), v.into_resp3());
                }
                F3::Map { data: map, attributes: None }
            }
        }
    }
}

/// Appends an array's header: `*<n>\r\n` (then its `n` elements go).
pub fn put_array_header(dst: &mut BytesMut, n: usize) {
    dst.extend_from_slice(b"*");
    dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// Appends a pushed message of bulk strings (a pub/sub `message` or
/// `pmessage`): a push (`>`) in RESP3, an array in RESP2, byte for byte
/// what [`Reply::Push`] of the same bulk strings encodes to, without
/// building it.
pub fn put_push(dst: &mut BytesMut, proto: Protocol, parts: &[&[u8]]) {
    dst.reserve(parts.iter().map(|p| p.len() + 16).sum::<usize>() + 8);
    put_push_header(dst, proto, parts.len());
    let mut num = itoa::Buffer::new();
    for p in parts {
        put_bulk(dst, &mut num, p);
    }
}

/// Appends the header of a pushed message of `n` parts (see
/// [`put_push`]); its parts follow as [`put_bulk_string`]s.
pub fn put_push_header(dst: &mut BytesMut, proto: Protocol, n: usize) {
    dst.extend_from_slice(if proto == Protocol::Resp3 { b">" } else { b"*" });
    dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// Appends a bulk string.
pub fn put_bulk_string(dst: &mut BytesMut, b: &[u8]) {
    put_bulk(dst, &mut itoa::Buffer::new(), b);
}

/// The encoded length of `n` tokens' text forms (a [`Reply::Tokens`]),
/// and of its header.
pub fn tokens_len(n: usize) -> usize {
    const EACH: usize = 1 + 2 + 2 + token::TOKEN_TEXT_LEN + 2;
    n * EACH + 16
}

/// Appends tokens' text forms as bulk strings: the elements of a
/// [`Reply::Tokens`], which may be written a piece at a time.
pub fn put_tokens(dst: &mut BytesMut, ids: &[TokenId]) {
    dst.reserve(tokens_len(ids.len()));
    let mut num = itoa::Buffer::new();
    for &t in ids {
        put_bulk(dst, &mut num, &token::format(t));
    }
}

/// A token's text form as a bulk string's bytes.
fn token_text(id: TokenId) -> Bytes {
    Bytes::copy_from_slice(&token::format(id))
}

/// Appends a bulk string: `$<len>\r\n<bytes>\r\n`, as the crate writes it.
fn put_bulk(dst: &mut BytesMut, num: &mut itoa::Buffer, b: &[u8]) {
    dst.extend_from_slice(b"$");
    dst.extend_from_slice(num.format(b.len()).as_bytes());
    dst.extend_from_slice(b"\r\n");
    dst.extend_from_slice(b);
    dst.extend_from_slice(b"\r\n");
}

/// Error lines cannot contain CR or LF; Redis replaces them with spaces.
fn sanitize_error(e: String) -> String {
    if e.contains(['\r', '\n']) { e.replace(['\r', '\n'], " ") } else { e }
}

/// Formats a double the way Redis does in RESP2 bulk replies.
fn format_double(d: f64) -> String {
    if d.is_infinite() { if d > 0.0 { "inf".into() } else { "-inf".into() } } else { format!("{d}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Reply, p: Protocol) -> Vec<u8> {
        let mut b = BytesMut::new();
        r.encode(p, &mut b);
        b.to_vec()
    }

    #[test]
    fn map_is_flat_array_in_resp2_and_map_in_resp3() {
        let m = Reply::Map(vec![
            (Reply::bulk_static("a"), Reply::Integer(1)),
            (Reply::bulk_static("b"), Reply::Integer(2)),
        ]);
        assert_eq!(enc(m.clone(), Protocol::Resp2), b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n");
        assert_eq!(enc(m, Protocol::Resp3), b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n");
    }

    /// The fast paths write exactly what the crate writes.
    #[test]
    fn fast_path_matches_the_crate() {
        let cases = [
            Reply::Bulk(Bytes::from_static(b"")),
            Reply::Bulk(Bytes::from_static(b"67e55044-10b1-426f-9247-bb680e5fe0c8")),
            Reply::Bulk(Bytes::from(vec![b'x'; 100_000])),
            Reply::Integer(0),
            Reply::Integer(-1),
            Reply::Integer(i64::MIN),
            Reply::Integer(i64::MAX),
            Reply::Null,
            Reply::status("OK"),
            Reply::status("PONG"),
            Reply::Array(Vec::new()),
            Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"a")), Reply::Bulk(Bytes::from(vec![b'y'; 1_000]))]),
            Reply::Push(vec![
                Reply::bulk_static("message"),
                Reply::Bulk(Bytes::from_static(b"__keyevent@0__:expired")),
                Reply::Bulk(Bytes::from_static(b"p:67e55044-10b1-426f-9247-bb680e5fe0c8")),
            ]),
            Reply::Tokens(Vec::new()),
            Reply::Tokens(vec![0, u128::MAX, 0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8]),
        ];
        for r in cases {
            for p in [Protocol::Resp2, Protocol::Resp3] {
                let mut crate_bytes = BytesMut::new();
                match p {
                    Protocol::Resp2 => {
                        redis_protocol::resp2::encode::extend_encode(&mut crate_bytes, &r.clone().into_resp2(), false)
                            .unwrap();
                    }
                    Protocol::Resp3 => {
                        redis_protocol::resp3::encode::complete::extend_encode(
                            &mut crate_bytes,
                            &r.clone().into_resp3(),
                            false,
                        )
                        .unwrap();
                    }
                }
                assert_eq!(enc(r.clone(), p), crate_bytes.to_vec(), "{r:?} {p:?}");
            }
        }
    }

    #[test]
    fn null_per_protocol() {
        assert_eq!(enc(Reply::Null, Protocol::Resp2), b"$-1\r\n");
        assert_eq!(enc(Reply::Null, Protocol::Resp3), b"_\r\n");
        assert_eq!(enc(Reply::NullArray, Protocol::Resp2), b"*-1\r\n");
        assert_eq!(enc(Reply::NullArray, Protocol::Resp3), b"_\r\n");
    }

    #[test]
    fn sets_of_aggregates_do_not_panic_in_resp3() {
        let s = Reply::Set(vec![Reply::Map(vec![(Reply::bulk_static("a"), Reply::Integer(1))])]);
        assert!(enc(s.clone(), Protocol::Resp3).starts_with(b"*1\r\n%1\r\n"));
        assert!(enc(s, Protocol::Resp2).starts_with(b"*1\r\n*2\r\n"));
        let flat = Reply::Set(vec![Reply::status("a")]);
        assert_eq!(enc(flat, Protocol::Resp3), b"~1\r\n+a\r\n");
    }

    #[test]
    fn errors_lose_newlines() {
        assert_eq!(enc(Reply::error("ERR a\r\nb"), Protocol::Resp2), b"-ERR a  b\r\n");
    }

    #[test]
    fn push_per_protocol() {
        let p = Reply::Push(vec![Reply::bulk_static("message"), Reply::bulk_static("c"), Reply::bulk_static("m")]);
        assert!(enc(p.clone(), Protocol::Resp2).starts_with(b"*3\r\n"));
        assert!(enc(p, Protocol::Resp3).starts_with(b">3\r\n"));
    }

    #[test]
    fn a_pushed_message_is_written_as_its_push_reply_encodes() {
        let long = vec![b'z'; 300];
        let cases: [&[&[u8]]; 3] = [
            &[b"message", b"__keyevent@0__:expired", b"p:67e55044-10b1-426f-9247-bb680e5fe0c8"],
            &[b"pmessage", b"__key*", b"__keyspace@0__:p:x", b"expired"],
            &[b"message", b"", &long],
        ];
        for parts in cases {
            let r = Reply::Push(parts.iter().map(|p| Reply::Bulk(Bytes::copy_from_slice(p))).collect());
            for p in [Protocol::Resp2, Protocol::Resp3] {
                let mut direct = BytesMut::new();
                put_push(&mut direct, p, parts);
                assert_eq!(direct.to_vec(), enc(r.clone(), p), "{parts:?} {p:?}");
            }
        }
    }
}

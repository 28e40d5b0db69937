//! Request framing: RESP arrays of bulk strings (decoded by the
//! `redis-protocol` crate without copying) and inline commands (a line of
//! text, as telnet or `nc` send), with limits.
//!
//! "Need more bytes" is the normal case (`Ok(None)`), not an error. While a
//! request is incomplete its headers are checked against the limits, so a
//! client announcing a 4 GB argument is refused at once instead of being
//! allowed to fill memory (this is the only reason we look at headers
//! ourselves; complete frames are left to the crate).

use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

/// Limits on one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest bulk argument, and largest request, in bytes.
    pub max_bulk: usize,
    /// Most arguments in one request. Redis allows 1,048,576 (1024 × 1024)
    /// before it calls a multibulk length invalid; so do we.
    pub max_args: usize,
}

/// Longest inline command: Redis's `PROTO_INLINE_MAX_SIZE` (64 KiB).
pub const MAX_INLINE: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        // 64 MiB: TOKEN commands carry pool names and 36-byte tokens; the
        // bound exists for PUBLISH payloads and hostile clients.
        Limits { max_bulk: 64 * 1024 * 1024, max_args: 1024 * 1024 }
    }
}

/// A protocol error: the client gets `-ERR Protocol error: …` and is
/// disconnected, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(s: &str) -> ProtocolError {
        ProtocolError(format!("ERR Protocol error: {s}"))
    }
}

/// Takes one request off the front of `buf`. `Ok(Some(args))` with empty
/// `args` is an empty request (`*0`, a blank line) that gets no reply.
pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return decode_inline(buf);
    }
    // The array header: refuse absurd lengths before anything is parsed.
    let Some(n) = header_len(buf, 0, limits.max_args, "invalid multibulk length")? else {
        return Ok(None);
    };
    if n.1 <= 0 {
        buf.advance(n.0);
        return Ok(Some(Vec::new()));
    }
    match decode_bytes_mut(buf) {
        Ok(Some((BytesFrame::Array(items), _, _))) => {
            let mut args = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    BytesFrame::BulkString(b) => args.push(b),
                    BytesFrame::Null => return Err(ProtocolError::new("invalid bulk length")),
                    other => {
                        let c = match other {
                            BytesFrame::SimpleString(_) => '+',
                            BytesFrame::Error(_) => '-',
                            BytesFrame::Integer(_) => ':',
                            BytesFrame::Array(_) => '*',
                            _ => '?',
                        };
                        return Err(ProtocolError::new(&format!("expected '$', got '{c}'")));
                    }
                }
            }
            Ok(Some(args))
        }
        Ok(Some(_)) => Err(ProtocolError::new("expected an array of bulk strings")),
        Ok(None) => {
            check_incomplete(buf, n.0, n.1 as usize, limits)?;
            Ok(None)
        }
        // Prefer Redis's wording for what our header walk recognises.
        Err(e) => {
            check_incomplete(buf, n.0, n.1 as usize, limits)?;
            Err(ProtocolError::new(e.details()))
        }
    }
}

/// Parses a `<kind><int>\r\n` header at `at`. Returns (bytes used, value), or
/// None if the line is not complete yet.
fn header_len(buf: &[u8], at: usize, max: usize, what: &str) -> Result<Option<(usize, i64)>, ProtocolError> {
    // 1 kind byte + up to 20 digits/sign + CRLF.
    let window = &buf[at..buf.len().min(at + 24)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() >= 24 { Err(ProtocolError::new(what)) } else { Ok(None) };
    };
    if window.len() < cr + 2 {
        return Ok(None);
    }
    let v = crate::parse::parse_i64(&window[1..cr]).ok_or_else(|| ProtocolError::new(what))?;
    if v > max as i64 || window[cr + 1] != b'\n' {
        return Err(ProtocolError::new(what));
    }
    Ok(Some((cr + 2, v)))
}

/// Walks the bulk headers of an incomplete array as far as they have arrived
/// and rejects any that break the limits.
fn check_incomplete(buf: &[u8], mut at: usize, n: usize, limits: &Limits) -> Result<(), ProtocolError> {
    for _ in 0..n {
        if at >= buf.len() {
            return Ok(());
        }
        if buf[at] != b'$' {
            return Err(ProtocolError::new(&format!("expected '$', got '{}'", buf[at] as char)));
        }
        let Some((used, len)) = header_len(buf, at, limits.max_bulk, "invalid bulk length")? else {
            return Ok(());
        };
        if len < 0 {
            return Err(ProtocolError::new("invalid bulk length"));
        }
        at += used + len as usize + 2;
        if at > limits.max_bulk.saturating_add(n.saturating_mul(32)) {
            return Err(ProtocolError::new("request too large"));
        }
    }
    Ok(())
}

/// An inline command: one line, split on whitespace, with `"…"` and `'…'`
/// quoting as `redis-cli` and Redis's `sdssplitargs` accept.
fn decode_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE { Err(ProtocolError::new("too big inline request")) } else { Ok(None) };
    };
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_args(line).map(Some).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))
}

/// Splits a line into arguments; `None` on unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut cur = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let c = *line.get(i)?;
                    i += 1;
                    if c == q {
                        // A closing quote must be followed by space or end.
                        if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return None;
                        }
                        break;
                    }
                    if c == b'\\' && q == b'"' {
                        let e = *line.get(i)?;
                        i += 1;
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'a' => 7,
                            b'b' => 8,
                            other => other,
                        });
                    } else if c == b'\\' && q == b'\'' && line.get(i) == Some(&b'\'') {
                        cur.push(b'\'');
                        i += 1;
                    } else {
                        cur.push(c);
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    cur.push(line[i]);
                    i += 1;
                }
            }
        }
        out.push(Bytes::from(cur));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut b = BytesMut::from(s);
        decode_request(&mut b, &Limits::default())
    }

    #[test]
    fn resp_array() {
        let mut b = BytesMut::from(&b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n*1\r\n$4\r\nPI"[..]);
        let l = Limits::default();
        assert_eq!(decode_request(&mut b, &l).unwrap().unwrap(), vec![Bytes::from("PING"), Bytes::from("hi")]);
        assert_eq!(decode_request(&mut b, &l).unwrap(), None);
        b.extend_from_slice(b"NG\r\n");
        assert_eq!(decode_request(&mut b, &l).unwrap().unwrap(), vec![Bytes::from("PING")]);
        assert!(b.is_empty());
    }

    #[test]
    fn inline_commands() {
        assert_eq!(dec(b"PING\r\n").unwrap().unwrap(), vec![Bytes::from("PING")]);
        assert_eq!(
            dec(b"echo \"a b\" 'c'\n").unwrap().unwrap(),
            vec![Bytes::from("echo"), Bytes::from("a b"), Bytes::from("c")]
        );
        assert_eq!(dec(b"\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
        assert_eq!(dec(b"PIN").unwrap(), None);
        assert!(dec(b"echo \"a\n").is_err());
    }

    #[test]
    fn huge_bulk_header_refused_without_allocating() {
        let e = dec(b"*1\r\n$4294967295\r\n").unwrap_err();
        assert_eq!(e.0, "ERR Protocol error: invalid bulk length");
        assert!(dec(b"*99999999999\r\n").is_err());
        assert!(dec(b"*-1\r\n").unwrap().unwrap().is_empty());
        assert!(dec(b"*1\r\n:5\r\n").is_err());
        assert!(dec(b"*1\r\n$-5\r\n").is_err());
        assert!(dec(b"*abc\r\n").is_err());
    }

    #[test]
    fn too_long_inline_is_an_error() {
        let big = vec![b'a'; MAX_INLINE + 1];
        assert!(dec(&big).is_err());
    }
}

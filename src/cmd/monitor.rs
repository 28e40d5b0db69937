//! `MONITOR`: every command the server runs, as a line per command, to the
//! clients that asked — in Redis's format, so tools that parse it work:
//! `+1339518083.107412 [0 127.0.0.1:60866] "token.gen" "p"` (the arguments
//! as the client sent them, quoted and escaped as Redis's `sdscatrepr`
//! does; passwords shown as `(redacted)`).

use super::{Call, Outcome};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Lines a monitor may have queued before it is disconnected (a monitor
/// that does not read must not grow the server's memory).
pub const MONITOR_QUEUE: usize = 65_536;

/// The clients in MONITOR mode.
#[derive(Default)]
pub struct Monitors {
    list: RwLock<Vec<(u64, mpsc::Sender<Bytes>)>>,
    /// How many: lets every command skip the rest with one load.
    active: AtomicUsize,
}

impl Monitors {
    /// True if anyone monitors.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Adds a monitor; its lines come out of the receiver.
    pub fn attach(&self, client: u64) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(MONITOR_QUEUE);
        let mut g = self.list.write().unwrap_or_else(|e| e.into_inner());
        g.push((client, tx));
        self.active.store(g.len(), Ordering::Relaxed);
        rx
    }

    /// Removes a monitor.
    pub fn detach(&self, client: u64) {
        let mut g = self.list.write().unwrap_or_else(|e| e.into_inner());
        g.retain(|(c, _)| *c != client);
        self.active.store(g.len(), Ordering::Relaxed);
    }

    /// Shows one command run by the client at `addr`.
    pub fn feed(&self, addr: SocketAddr, args: &[Bytes]) {
        let line = format_line(SystemTime::now(), addr, args);
        let mut full = Vec::new();
        {
            let g = self.list.read().unwrap_or_else(|e| e.into_inner());
            for (c, tx) in g.iter() {
                if tx.try_send(line.clone()).is_err() {
                    full.push(*c);
                }
            }
        }
        for c in full {
            tracing::warn!(client = c, "monitor output queue full; disconnecting it");
            self.detach(c);
        }
    }
}

/// One line: `<secs>.<usecs> [0 <addr>] "arg" …` (the status reply's text).
fn format_line(at: SystemTime, addr: SocketAddr, args: &[Bytes]) -> Bytes {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = BytesMut::with_capacity(64 + args.iter().map(|a| a.len() + 3).sum::<usize>());
    out.extend_from_slice(format!("{}.{:06} [0 {addr}]", d.as_secs(), d.subsec_micros()).as_bytes());
    for (i, a) in args.iter().enumerate() {
        out.extend_from_slice(b" ");
        if redacted(args, i) {
            out.extend_from_slice(b"\"(redacted)\"");
        } else {
            repr(a, &mut out);
        }
    }
    out.freeze()
}

/// Whether argument `i` of a request is a secret never shown (MONITOR,
/// SLOWLOG): AUTH's arguments, and HELLO's after AUTH.
pub(super) fn redacted(args: &[Bytes], i: usize) -> bool {
    let Some(name) = args.first() else { return false };
    (name.eq_ignore_ascii_case(b"auth") && i > 0)
        || (name.eq_ignore_ascii_case(b"hello") && args.iter().take(i).any(|a| a.eq_ignore_ascii_case(b"auth")))
}

/// Redis's `sdscatrepr`: a quoted, escaped string.
fn repr(s: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(b"\"");
    for &c in s {
        match c {
            b'\\' | b'"' => out.extend_from_slice(&[b'\\', c]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.extend_from_slice(&[c]),
            _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    out.extend_from_slice(b"\"");
}

/// `MONITOR`: from now on this client receives every command run.
pub fn monitor(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    if c.session.monitor_rx.is_none() {
        c.session.monitor_rx = Some(c.ctx.monitors.attach(c.session.id));
    }
    Ok(Reply::ok().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_are_redis_monitor_lines() {
        // The expected text is what redis-server 7.0.15 sent for the same
        // commands (only the time and the address set here).
        let at = UNIX_EPOCH + Duration::from_micros(1_796_028_975_119_209);
        let addr: SocketAddr = "127.0.0.1:45104".parse().unwrap();
        let b = |s: &[u8]| Bytes::copy_from_slice(s);
        let line = format_line(at, addr, &[b(b"sEt"), b(b"a\"b\\c"), b(b"\x01\n\xff ")]);
        assert_eq!(&line[..], br#"1796028975.119209 [0 127.0.0.1:45104] "sEt" "a\"b\\c" "\x01\n\xff ""#);
        let line = format_line(at, addr, &[b(b"AUTH"), b(b"pwd")]);
        assert_eq!(&line[..], br#"1796028975.119209 [0 127.0.0.1:45104] "AUTH" "(redacted)""#);
        let line = format_line(at, addr, &[b(b"HELLO"), b(b"3"), b(b"AUTH"), b(b"default"), b(b"pw")]);
        assert!(line.ends_with(br#""HELLO" "3" "AUTH" "(redacted)" "(redacted)""#), "{line:?}");
    }
}

//! Keyspace-style notifications.
//!
//! Every expiry (and, when enabled, every token command) is announced the way
//! Redis announces key events, so subscribers written for Redis keep working:
//!
//! - `__keyevent@0__:<event>` with the message `<pool>:<token>`
//! - `__keyspace@0__:<pool>:<token>` with the message `<event>`
//!
//! Which classes go out is set like Redis's `notify-keyspace-events`: a string
//! of letters (see [`EventClasses::parse`]). Events are built by the store
//! while it holds a shard lock, but published only after the lock is released.

use crate::pubsub::{Burst, Payload, PubSub};
use crate::token::{self, TokenId};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// What happened to a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Lifetime ended; the token is deleted (remembered as expired).
    Expired,
    /// Lease ended; the token is free again.
    LeaseExpired,
    TokenGen,
    TokenAcquire,
    TokenKeepalive,
    TokenUnblock,
    TokenDel,
    /// A whole pool was deleted (DEL, UNLINK, FLUSHDB): Redis's `del` of a
    /// key; its event names the pool, not a token.
    PoolDel,
}

impl EventKind {
    /// The keyevent channel of this event (static: no allocation per event).
    pub fn keyevent_channel(self) -> &'static str {
        match self {
            EventKind::Expired => "__keyevent@0__:expired",
            EventKind::LeaseExpired => "__keyevent@0__:leaseexpired",
            EventKind::TokenGen => "__keyevent@0__:tokengen",
            EventKind::TokenAcquire => "__keyevent@0__:tokenacquire",
            EventKind::TokenKeepalive => "__keyevent@0__:tokenkeepalive",
            EventKind::TokenUnblock => "__keyevent@0__:tokenunblock",
            EventKind::TokenDel => "__keyevent@0__:tokendel",
            EventKind::PoolDel => "__keyevent@0__:del",
        }
    }

    /// The event's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Expired => "expired",
            EventKind::LeaseExpired => "leaseexpired",
            EventKind::TokenGen => "tokengen",
            EventKind::TokenAcquire => "tokenacquire",
            EventKind::TokenKeepalive => "tokenkeepalive",
            EventKind::TokenUnblock => "tokenunblock",
            EventKind::TokenDel => "tokendel",
            EventKind::PoolDel => "del",
        }
    }

    fn class_bit(self) -> u32 {
        match self {
            EventKind::Expired => EXPIRED,
            EventKind::LeaseExpired => LEASE,
            _ => GENERIC,
        }
    }
}

/// Events in the order the store reported them, gathered under a shard's
/// lock and published after it. Consecutive events of one kind on one pool
/// (a burst of expiries) are one run: its pool name is held once and its
/// tokens sit side by side, so the notifier can encode the run's messages
/// in one pass (see [`Notifier::emit`]).
#[derive(Debug, Default)]
pub struct Events {
    runs: Vec<Run>,
    tokens: Vec<TokenId>,
}

#[derive(Debug)]
struct Run {
    kind: EventKind,
    pool: Bytes,
    /// Where the run's tokens start in [`Events::tokens`] (they end where
    /// the next run's start).
    start: usize,
}

impl Events {
    /// Adds an event; `token` is ignored for [`EventKind::PoolDel`].
    pub fn push(&mut self, kind: EventKind, pool: &[u8], token: TokenId) {
        match self.runs.last() {
            Some(r) if r.kind == kind && r.pool[..] == *pool => {}
            _ => self.runs.push(Run { kind, pool: Bytes::copy_from_slice(pool), start: self.tokens.len() }),
        }
        self.tokens.push(token);
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The runs in order: kind, pool, tokens.
    fn runs(&self) -> impl Iterator<Item = (EventKind, &Bytes, &[TokenId])> {
        self.runs.iter().enumerate().map(|(i, r)| {
            let end = self.runs.get(i + 1).map_or(self.tokens.len(), |next| next.start);
            (r.kind, &r.pool, &self.tokens[r.start..end])
        })
    }
}

const KEYSPACE: u32 = 1;
const KEYEVENT: u32 = 2;
const EXPIRED: u32 = 4;
const LEASE: u32 = 8;
const GENERIC: u32 = 16;

/// Which notification classes are enabled (a bit set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventClasses(u32);

impl EventClasses {
    /// The default: expiry events on both channel kinds, in the canonical
    /// order `CONFIG GET` answers with (see [`EventClasses::to_flags`]).
    pub const DEFAULT: &'static str = "xlKE";

    /// Parses Redis-style flags: `K` keyspace channel, `E` keyevent channel,
    /// `x` expired, `l` leaseexpired, `g` the token commands (tokengen,
    /// tokenacquire, tokenkeepalive, tokenunblock, tokendel), `A` alias for
    /// `xlg`. The empty string disables notifications. As in Redis, at least
    /// one of `K`/`E` must be present for anything to be published.
    pub fn parse(s: &str) -> Result<EventClasses, String> {
        let mut bits = 0;
        for c in s.chars() {
            bits |= match c {
                'K' => KEYSPACE,
                'E' => KEYEVENT,
                'x' => EXPIRED,
                'l' => LEASE,
                'g' => GENERIC,
                'A' => EXPIRED | LEASE | GENERIC,
                other => return Err(format!("invalid notification class '{other}' (use K, E, x, l, g, A)")),
            };
        }
        Ok(EventClasses(bits))
    }

    /// The flags back as a string, in Redis's canonical order (for `CONFIG
    /// GET`): the event classes (`A` when all are on, else `g`, `x`, `l`),
    /// then `K`, then `E`, as Redis's `keyspaceEventsFlagsToString` does.
    pub fn to_flags(self) -> String {
        let mut s = String::new();
        if self.0 & (EXPIRED | LEASE | GENERIC) == (EXPIRED | LEASE | GENERIC) {
            s.push('A');
        } else {
            for (bit, c) in [(GENERIC, 'g'), (EXPIRED, 'x'), (LEASE, 'l')] {
                if self.0 & bit != 0 {
                    s.push(c);
                }
            }
        }
        if self.0 & KEYSPACE != 0 {
            s.push('K');
        }
        if self.0 & KEYEVENT != 0 {
            s.push('E');
        }
        s
    }

    /// True if events of this kind are published at all.
    pub fn wants(self, kind: EventKind) -> bool {
        self.0 & kind.class_bit() != 0 && self.0 & (KEYSPACE | KEYEVENT) != 0
    }
}

/// A sink for events besides the server's own pub/sub (the backing Redis).
pub trait EventSink: Send + Sync {
    /// Publishes `payload` on `channel`; must not block.
    fn publish(&self, channel: Bytes, payload: Bytes);
}

/// Turns store events into keyspace-style messages.
pub struct Notifier {
    classes: AtomicU32,
    pubsub: Arc<PubSub>,
    /// Set once at start-up (lock-free to read).
    sink: std::sync::OnceLock<Arc<dyn EventSink>>,
}

impl Notifier {
    pub fn new(classes: EventClasses, pubsub: Arc<PubSub>) -> Notifier {
        Notifier { classes: AtomicU32::new(classes.0), pubsub, sink: std::sync::OnceLock::new() }
    }

    /// Adds a second destination (the backing Redis).
    pub fn set_sink(&self, sink: Arc<dyn EventSink>) {
        let _ = self.sink.set(sink);
    }

    /// The classes in force.
    pub fn classes(&self) -> EventClasses {
        EventClasses(self.classes.load(Ordering::Relaxed))
    }

    /// Changes the classes (`CONFIG SET notify-keyspace-events`).
    pub fn set_classes(&self, c: EventClasses) {
        self.classes.store(c.0, Ordering::Relaxed);
    }

    /// The shared broker.
    pub fn pubsub(&self) -> &Arc<PubSub> {
        &self.pubsub
    }

    /// True if the store should record events of this kind.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.classes().wants(kind)
    }

    /// Publishes events (called after the store released its lock).
    pub fn emit(&self, events: &Events) {
        if events.is_empty() {
            return;
        }
        let sink = self.sink.get();
        if sink.is_none() && self.pubsub.is_idle() {
            return;
        }
        let classes = self.classes();
        let keyevent = classes.0 & KEYEVENT != 0;
        // Keyspace channels are one per token: built only if a subscriber
        // here may receive them, or the backing Redis's may.
        let keyspace = classes.0 & KEYSPACE != 0 && (sink.is_some() || self.pubsub.keyspace_listened());
        let wanted = || events.runs().filter(move |&(kind, ..)| classes.wants(kind));
        if sink.is_none() && !keyspace {
            // Keyevent messages only: each run is one channel, and the
            // broker writes a run's `<pool>:<token>` payloads straight into
            // each subscriber's encoding.
            if keyevent {
                self.pubsub.publish_bursts(wanted().flat_map(|(kind, pool, tokens)| {
                    let channel = kind.keyevent_channel().as_bytes();
                    // A pool's own event names the pool alone, once per event.
                    let (n, payload) = if kind == EventKind::PoolDel {
                        (tokens.len(), Payload::One(pool))
                    } else {
                        (1, Payload::Tokens { prefix: pool, tokens })
                    };
                    std::iter::repeat_n(Burst { channel, payload }, n)
                }));
            }
            return;
        }
        // One buffer for the burst holds each event's
        // `__keyspace@0__:<pool>:<token>` (`__keyspace@0__:<pool>` for a
        // pool's own event; without its prefix when no keyspace message
        // goes out); the keyevent payload `<pool>:<token>` is a slice of
        // it. The broker encodes each message for its subscribers from
        // these slices: nothing is allocated per event.
        const PREFIX: &[u8] = b"__keyspace@0__:";
        let prefix = if keyspace { PREFIX } else { b"" };
        let each = || wanted().flat_map(|(kind, pool, tokens)| tokens.iter().map(move |&t| (kind, pool, t)));
        let mut buf =
            Vec::with_capacity(each().map(|(_, pool, _)| prefix.len() + pool.len() + 1 + token::TOKEN_TEXT_LEN).sum());
        let mut spans = Vec::with_capacity(events.len());
        for (kind, pool, t) in each() {
            let start = buf.len();
            buf.extend_from_slice(prefix);
            buf.extend_from_slice(pool);
            if kind != EventKind::PoolDel {
                buf.push(b':');
                buf.extend_from_slice(&token::format(t));
            }
            spans.push((kind, start, buf.len()));
        }
        let mut msgs: Vec<(&[u8], &[u8])> = Vec::with_capacity(spans.len() * 2);
        for (kind, start, end) in spans {
            if keyevent {
                msgs.push((kind.keyevent_channel().as_bytes(), &buf[start + prefix.len()..end]));
            }
            if keyspace {
                msgs.push((&buf[start..end], kind.name().as_bytes()));
            }
        }
        // The broker takes the whole burst under one lock.
        self.pubsub.publish_many(&msgs);
        if let Some(s) = sink {
            for (channel, payload) in msgs {
                s.publish(Bytes::copy_from_slice(channel), Bytes::copy_from_slice(payload));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::PubMsg;
    use bytes::BytesMut;

    #[test]
    fn classes_parse_and_print() {
        let d = EventClasses::parse(EventClasses::DEFAULT).unwrap();
        assert!(d.wants(EventKind::Expired) && d.wants(EventKind::LeaseExpired));
        assert!(!d.wants(EventKind::TokenGen));
        assert_eq!(d.to_flags(), EventClasses::DEFAULT, "the default is spelled as CONFIG GET answers it");
        assert_eq!(EventClasses::parse("KExl").unwrap().to_flags(), "xlKE", "any order in, canonical order out");
        let a = EventClasses::parse("AE").unwrap();
        assert!(a.wants(EventKind::TokenDel));
        assert_eq!(a.to_flags(), "AE");
        // Without K or E nothing is published, as in Redis.
        assert!(!EventClasses::parse("x").unwrap().wants(EventKind::Expired));
        assert!(EventClasses::parse("Kq").is_err());
        assert!(!EventClasses::parse("").unwrap().wants(EventKind::Expired));
    }

    /// A notifier of both channel kinds, its broker, and client 1's inbox,
    /// subscribed to `__keyevent@0__:expired`.
    fn notifier() -> (Arc<PubSub>, Notifier, crate::pubsub::Inbox) {
        let ps = Arc::new(PubSub::default());
        let n = Notifier::new(EventClasses::parse("KExl").unwrap(), ps.clone());
        let rx = ps.attach(1, crate::reply::Protocol::Resp2);
        ps.subscribe(1, Bytes::from_static(b"__keyevent@0__:expired"), false);
        (ps, n, rx)
    }

    #[tokio::test]
    async fn keyspace_messages_go_out_once_a_subscription_may_receive_them() {
        let (ps, n, mut rx) = notifier();
        let t = token::from_random([2; 16]);
        let text = String::from_utf8(token::format(t).to_vec()).unwrap();
        let mut ev = Events::default();
        ev.push(EventKind::Expired, b"a", t);
        ev.push(EventKind::Expired, b"bb", t);
        n.emit(&ev);
        let payload = |m: PubMsg| match m {
            PubMsg::Message { channel, payload } => (channel, payload),
            m => panic!("{m:?}"),
        };
        for pool in ["a", "bb"] {
            let (ch, p) = payload(rx.try_recv().unwrap());
            assert_eq!((&ch[..], &p[..]), (&b"__keyevent@0__:expired"[..], format!("{pool}:{text}").as_bytes()));
        }
        assert!(rx.try_recv().is_err(), "no keyspace message: nobody could receive it");
        let keyspace = format!("__keyspace@0__:bb:{text}");
        ps.subscribe(1, Bytes::from(keyspace.clone()), false);
        n.emit(&ev);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(payload).collect();
        let want = [
            ("__keyevent@0__:expired".to_string(), format!("a:{text}")),
            ("__keyevent@0__:expired".to_string(), format!("bb:{text}")),
            (keyspace, "expired".to_string()),
        ];
        let got: Vec<_> = got
            .into_iter()
            .map(|(c, p)| (String::from_utf8(c.to_vec()).unwrap(), String::from_utf8(p.to_vec()).unwrap()))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn emits_both_channel_kinds() {
        let (ps, n, mut rx) = notifier();
        ps.subscribe(1, Bytes::from_static(b"__keyspace@0__:*"), true);
        let t = token::from_random([1; 16]);
        let mut ev = Events::default();
        ev.push(EventKind::Expired, b"a:b", t);
        n.emit(&ev);
        let want = format!("a:b:{}", std::str::from_utf8(&token::format(t)).unwrap());
        match rx.recv().await.unwrap() {
            crate::pubsub::PubMsg::Message { payload, .. } => assert_eq!(payload, want.as_bytes()),
            m => panic!("{m:?}"),
        }
        match rx.recv().await.unwrap() {
            crate::pubsub::PubMsg::PMessage { channel, payload, .. } => {
                assert_eq!(channel, format!("__keyspace@0__:{want}").as_bytes());
                assert_eq!(payload, &b"expired"[..]);
            }
            m => panic!("{m:?}"),
        }
    }

    /// Everything a client's inbox holds, as one buffer.
    fn all_bytes(rx: &mut crate::pubsub::Inbox) -> Vec<u8> {
        std::iter::from_fn(|| rx.try_recv_bytes()).flat_map(|b| b.to_vec()).collect()
    }

    #[tokio::test]
    async fn runs_of_keyevent_messages_are_encoded_as_each_message_alone() {
        use crate::reply::{Protocol, put_push};
        let ps = Arc::new(PubSub::default());
        let n = Notifier::new(EventClasses::parse("AKE").unwrap(), ps.clone());
        let (mut rx2, mut rx3) = (ps.attach(2, Protocol::Resp2), ps.attach(3, Protocol::Resp3));
        for kind in [EventKind::Expired, EventKind::LeaseExpired, EventKind::PoolDel] {
            ps.subscribe(2, Bytes::from_static(kind.keyevent_channel().as_bytes()), false);
        }
        ps.subscribe(3, Bytes::from_static(b"__keyevent@0__:expired"), false);
        assert!(!ps.keyspace_listened(), "the keyevent-only path is taken");
        let t = |i: u8| token::from_random([i; 16]);
        let events = [
            (EventKind::Expired, &b"a"[..], t(1)),
            (EventKind::Expired, b"a", t(2)),
            (EventKind::LeaseExpired, b"a", t(3)),
            (EventKind::Expired, b"bb", t(4)),
            (EventKind::PoolDel, b"c", 0),
            (EventKind::PoolDel, b"c", 0),
            (EventKind::TokenGen, b"c", t(5)),
            (EventKind::Expired, b"a", t(6)),
        ];
        let mut ev = Events::default();
        for &(kind, pool, token) in &events {
            ev.push(kind, pool, token);
        }
        n.emit(&ev);
        // What each would be sent if every event were published alone.
        let alone = |proto: Protocol, only: &[EventKind]| {
            let mut want = BytesMut::new();
            for &(kind, pool, token) in events.iter().filter(|(k, ..)| only.contains(k)) {
                let mut payload = pool.to_vec();
                if kind != EventKind::PoolDel {
                    payload.push(b':');
                    payload.extend_from_slice(&token::format(token));
                }
                put_push(&mut want, proto, &[b"message", kind.keyevent_channel().as_bytes(), &payload]);
            }
            want.to_vec()
        };
        let kinds = [EventKind::Expired, EventKind::LeaseExpired, EventKind::PoolDel];
        assert_eq!(all_bytes(&mut rx2), alone(Protocol::Resp2, &kinds));
        assert_eq!(all_bytes(&mut rx3), alone(Protocol::Resp3, &[EventKind::Expired]));
    }
}

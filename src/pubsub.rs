//! The server's own publish/subscribe broker.
//!
//! Each subscribed connection has one bounded queue: its output buffer for
//! messages, already encoded. Publishing never blocks and never waits on a
//! slow reader: when a subscriber's queue would go over its hard limit
//! ([`SUBSCRIBER_QUEUE_BYTES`] by default), or has stayed over its soft
//! limit for the soft limit's seconds, it is evicted — its queue is closed,
//! and the connection, seeing the close, disconnects the client (Redis does
//! the same with `client-output-buffer-limit pubsub`). Memory is therefore
//! bounded by `subscribers × hard limit`.
//!
//! A message is encoded for its subscriber when it is published, in the
//! protocol the subscriber speaks then, as Redis writes it into the client's
//! output buffer. A burst (one [`PubSub::publish_many`]: a batch of
//! expiries) goes to each subscriber as one piece of bytes: no object, no
//! allocation and no reference count per message, one send and one wake-up
//! per burst. The connection copies the piece into its write buffer.

use crate::glob;
use crate::reply::{Protocol, put_bulk_string, put_push, put_push_header};
use crate::token::{self, TokenId};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// Bytes of encoded messages a subscriber may have queued before it is
/// disconnected: Redis's default hard limit for pub/sub clients
/// (`client-output-buffer-limit pubsub 32mb`), about 350,000 expiry events.
pub const SUBSCRIBER_QUEUE_BYTES: usize = 32 << 20;

/// `client-output-buffer-limit pubsub <hard> <soft> <seconds>`: a
/// subscriber whose queue goes over `hard` bytes, or stays over `soft` bytes
/// for `soft_secs` seconds, is disconnected. 0 turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_secs: u64,
}

impl QueueLimit {
    /// Redis's default for replicas.
    pub const REPLICA: QueueLimit = QueueLimit { hard: 256 << 20, soft: 64 << 20, soft_secs: 60 };
}

impl Default for QueueLimit {
    /// Redis's hard limit; its soft limit (8mb for 60 s) is off.
    fn default() -> Self {
        QueueLimit { hard: SUBSCRIBER_QUEUE_BYTES as u64, soft: 0, soft_secs: 0 }
    }
}

/// The publishing end of a subscriber's queue.
struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes sent and not yet taken off the queue by the [`Inbox`].
    queued: Arc<AtomicUsize>,
    /// The protocol messages are encoded in.
    proto: Protocol,
    /// When the queue went over the soft limit (ms since the broker
    /// started, plus one; 0: it is not over).
    over_soft_since: AtomicU64,
}

/// A subscriber's end of its queue: encoded messages, in order.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    /// Tests: bytes taken and not yet decoded.
    #[cfg(test)]
    pending: BytesMut,
}

impl Inbox {
    /// The next piece of encoded messages, waiting for one; `None` once the
    /// broker dropped this subscriber (evicted or detached) and every piece
    /// sent before was taken.
    pub async fn recv_bytes(&mut self) -> Option<Bytes> {
        let b = self.rx.recv().await?;
        self.queued.fetch_sub(b.len(), Ordering::Relaxed);
        Some(b)
    }

    /// The next piece of encoded messages if one is queued.
    pub fn try_recv_bytes(&mut self) -> Option<Bytes> {
        let b = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(b.len(), Ordering::Relaxed);
        Some(b)
    }
}

/// A message decoded back from what a subscriber was sent (tests).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub enum PubMsg {
    /// From a channel subscription.
    Message { channel: Bytes, payload: Bytes },
    /// From a pattern subscription.
    PMessage { pattern: Bytes, channel: Bytes, payload: Bytes },
}

#[cfg(test)]
impl Inbox {
    /// The next message, decoded, waiting for one.
    pub async fn recv(&mut self) -> Option<PubMsg> {
        loop {
            if let Some(m) = self.decode() {
                return Some(m);
            }
            let b = self.recv_bytes().await?;
            self.pending.extend_from_slice(&b);
        }
    }

    /// The next message, decoded, if one is queued.
    pub fn try_recv(&mut self) -> Result<PubMsg, mpsc::error::TryRecvError> {
        loop {
            if let Some(m) = self.decode() {
                return Ok(m);
            }
            let b = self.rx.try_recv()?;
            self.queued.fetch_sub(b.len(), Ordering::Relaxed);
            self.pending.extend_from_slice(&b);
        }
    }

    fn decode(&mut self) -> Option<PubMsg> {
        use redis_protocol::resp3::decode::complete::decode_bytes_mut;
        use redis_protocol::resp3::types::BytesFrame as F;
        let (frame, _, _) = decode_bytes_mut(&mut self.pending).expect("well-formed messages")?;
        let (F::Push { data, .. } | F::Array { data, .. }) = frame else { panic!("not a message: {frame:?}") };
        let mut parts = data.into_iter().map(|f| match f {
            F::BlobString { data, .. } => data,
            f => panic!("not a bulk string: {f:?}"),
        });
        let mut next = || parts.next().expect("a part");
        Some(match &next()[..] {
            b"message" => PubMsg::Message { channel: next(), payload: next() },
            b"pmessage" => PubMsg::PMessage { pattern: next(), channel: next(), payload: next() },
            k => panic!("unknown kind {k:?}"),
        })
    }
}

#[derive(Default)]
struct Inner {
    clients: HashMap<u64, Outbox>,
    channels: HashMap<Bytes, HashSet<u64>>,
    patterns: HashMap<Bytes, HashSet<u64>>,
}

/// A channel's subscribers, if it has any.
type Subscribers<'a> = Option<&'a HashSet<u64>>;

/// The broker. Shared by every connection and by the notifier.
pub struct PubSub {
    // A std RwLock: held only for map operations, never across `.await`.
    inner: RwLock<Inner>,
    /// Channel + pattern subscriptions in total; lets publishers skip building
    /// messages when nobody listens.
    subscriptions: AtomicUsize,
    /// Subscriptions that may receive a keyspace message: channels that
    /// start with [`KEYSPACE_PREFIX`], and every pattern.
    keyspace: AtomicUsize,
    /// [`QueueLimit`]'s three numbers (CONFIG SET changes them).
    hard: AtomicU64,
    soft: AtomicU64,
    soft_secs: AtomicU64,
    /// The soft limit's clock.
    born: std::time::Instant,
    /// Set when a burst leaves some subscriber's queue past half its hard
    /// limit; cleared by [`PubSub::filling`].
    filling: AtomicBool,
}

impl Default for PubSub {
    fn default() -> Self {
        let l = QueueLimit::default();
        PubSub {
            inner: RwLock::default(),
            subscriptions: AtomicUsize::new(0),
            keyspace: AtomicUsize::new(0),
            hard: AtomicU64::new(l.hard),
            soft: AtomicU64::new(l.soft),
            soft_secs: AtomicU64::new(l.soft_secs),
            born: std::time::Instant::now(),
            filling: AtomicBool::new(false),
        }
    }
}

/// What every keyspace channel starts with.
pub const KEYSPACE_PREFIX: &[u8] = b"__keyspace@";

/// True if a subscription to `name` may receive keyspace messages.
fn reaches_keyspace(name: &[u8], pattern: bool) -> bool {
    pattern || name.starts_with(KEYSPACE_PREFIX)
}

/// One subscriber's share of a burst.
struct Share {
    client: u64,
    proto: Protocol,
    bytes: BytesMut,
    messages: usize,
    /// The encoded start of a `message` up to its payload, and the channel
    /// (address, length) it is for: a burst of expiries is one channel, so
    /// only the payload is encoded per message. (Every slice of a burst
    /// lives as long as the burst, so one address and length are one
    /// channel.)
    head: BytesMut,
    head_of: (usize, usize),
}

impl Share {
    /// Makes [`Share::head`] `channel`'s.
    fn set_head(&mut self, channel: &[u8]) {
        let of = (channel.as_ptr() as usize, channel.len());
        if self.head.is_empty() || self.head_of != of {
            self.head.clear();
            put_push_header(&mut self.head, self.proto, 3);
            put_bulk_string(&mut self.head, b"message");
            put_bulk_string(&mut self.head, channel);
            self.head_of = of;
        }
    }

    fn message(&mut self, channel: &[u8], payload: &[u8]) {
        self.set_head(channel);
        self.bytes.extend_from_slice(&self.head);
        put_bulk_string(&mut self.bytes, payload);
        self.messages += 1;
    }

    /// A `message` per token on `channel`, `<prefix>:<token>` each: the
    /// room for all of them is reserved once, and each is its encoded start
    /// (the same for all) and its token's text.
    fn tokens(&mut self, channel: &[u8], prefix: &[u8], tokens: &[TokenId]) {
        self.set_head(channel);
        let mut lead = Vec::with_capacity(self.head.len() + prefix.len() + 24);
        lead.extend_from_slice(&self.head);
        lead.push(b'$');
        lead.extend_from_slice(itoa::Buffer::new().format(prefix.len() + 1 + token::TOKEN_TEXT_LEN).as_bytes());
        lead.extend_from_slice(b"\r\n");
        lead.extend_from_slice(prefix);
        lead.push(b':');
        self.bytes.reserve(tokens.len() * (lead.len() + token::TOKEN_TEXT_LEN + 2));
        for &t in tokens {
            self.bytes.extend_from_slice(&lead);
            self.bytes.extend_from_slice(&token::format(t));
            self.bytes.extend_from_slice(b"\r\n");
        }
        self.messages += tokens.len();
    }

    fn pmessage(&mut self, pattern: &[u8], channel: &[u8], payload: &[u8]) {
        put_push(&mut self.bytes, self.proto, &[b"pmessage", pattern, channel, payload]);
        self.messages += 1;
    }
}

impl PubSub {
    /// True when nobody is subscribed to anything.
    pub fn is_idle(&self) -> bool {
        self.subscriptions.load(Ordering::Relaxed) == 0
    }

    /// False when no subscription can receive a keyspace message (no
    /// pattern, no channel that starts with [`KEYSPACE_PREFIX`]): the
    /// notifier then builds none.
    pub fn keyspace_listened(&self) -> bool {
        self.keyspace.load(Ordering::Relaxed) > 0
    }

    /// The limits of every subscriber's queue.
    pub fn queue_limit(&self) -> QueueLimit {
        QueueLimit {
            hard: self.hard.load(Ordering::Relaxed),
            soft: self.soft.load(Ordering::Relaxed),
            soft_secs: self.soft_secs.load(Ordering::Relaxed),
        }
    }

    /// `CONFIG SET client-output-buffer-limit`: applies from the next
    /// message on, to every subscriber.
    pub fn set_queue_limit(&self, l: QueueLimit) {
        self.hard.store(l.hard, Ordering::Relaxed);
        self.soft.store(l.soft, Ordering::Relaxed);
        self.soft_secs.store(l.soft_secs, Ordering::Relaxed);
    }

    /// `PUBSUB CHANNELS [pattern]`: the channels with at least one
    /// subscriber (not patterns), those matching `pattern` if given.
    pub fn active_channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let g = self.read();
        let mut v: Vec<Bytes> = g
            .channels
            .iter()
            .filter(|(c, set)| !set.is_empty() && pattern.is_none_or(|p| glob::matches(p, c)))
            .map(|(c, _)| c.clone())
            .collect();
        v.sort_unstable();
        v
    }

    /// `PUBSUB NUMSUB`: subscribers of `channel` (patterns not counted).
    pub fn subscribers_of(&self, channel: &[u8]) -> usize {
        self.read().channels.get(channel).map_or(0, HashSet::len)
    }

    /// `PUBSUB NUMPAT`: distinct patterns subscribed to.
    pub fn patterns_subscribed(&self) -> usize {
        self.read().patterns.values().filter(|set| !set.is_empty()).count()
    }

    /// True if a burst since the last call left some subscriber's queue
    /// past half its hard limit, and one still is. The expiry drivers then
    /// wait (a bounded time, while [`PubSub::past_half`]): on a busy core
    /// they can make events faster than the runtime's thread gets to write
    /// them, and a subscriber that reads as fast as it can would be cut off
    /// for the server's own lag. Only a burst since the last call counts:
    /// a subscriber that stopped reading with its queue past half, and gets
    /// nothing more, is not waited for again and again. One relaxed load
    /// unless a burst passed the half mark.
    pub fn filling(&self) -> bool {
        self.filling.load(Ordering::Relaxed) && self.filling.swap(false, Ordering::Relaxed) && self.past_half()
    }

    /// True while some subscriber's queue holds more than half its hard
    /// limit.
    pub fn past_half(&self) -> bool {
        let half = self.hard.load(Ordering::Relaxed) / 2;
        half > 0 && self.read().clients.values().any(|o| o.queued.load(Ordering::Relaxed) as u64 > half)
    }

    /// Whether a queue now holding `queued` bytes is over its limits.
    fn over_limit(&self, l: &QueueLimit, o: &Outbox, queued: u64) -> bool {
        if l.hard > 0 && queued > l.hard {
            return true;
        }
        if l.hard > 0 && queued > l.hard / 2 {
            self.filling.store(true, Ordering::Relaxed);
        }
        if l.soft == 0 || queued <= l.soft {
            // Load first: with the soft limit off (the default) this is
            // every burst, and a store would dirty the cache line each time.
            if o.over_soft_since.load(Ordering::Relaxed) != 0 {
                o.over_soft_since.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let now = self.born.elapsed().as_millis() as u64 + 1;
        match o.over_soft_since.load(Ordering::Relaxed) {
            0 => {
                o.over_soft_since.store(now, Ordering::Relaxed);
                false
            }
            since => now.saturating_sub(since) >= l.soft_secs.saturating_mul(1000),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client's queue, its messages encoded in `proto`; returns
    /// the receiving end. Called on the client's first subscription.
    pub fn attach(&self, client: u64, proto: Protocol) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.write()
            .clients
            .insert(client, Outbox { tx, queued: queued.clone(), proto, over_soft_since: AtomicU64::new(0) });
        Inbox {
            rx,
            queued,
            #[cfg(test)]
            pending: BytesMut::new(),
        }
    }

    /// A subscribed client switched protocols (`HELLO`): messages
    /// published from now on are encoded in `proto`.
    pub fn set_proto(&self, client: u64, proto: Protocol) {
        if let Some(o) = self.write().clients.get_mut(&client) {
            o.proto = proto;
        }
    }

    /// Removes a client and all its subscriptions.
    pub fn detach(&self, client: u64) {
        let mut g = self.write();
        self.remove_client(&mut g, client);
    }

    fn remove_client(&self, g: &mut Inner, client: u64) {
        g.clients.remove(&client);
        for (map, pattern) in [(&mut g.channels, false), (&mut g.patterns, true)] {
            map.retain(|name, set| {
                if set.remove(&client) {
                    self.counted(name, pattern, -1);
                }
                !set.is_empty()
            });
        }
    }

    /// Counts a subscription in (`by` 1) or out (-1).
    fn counted(&self, name: &[u8], pattern: bool, by: isize) {
        let add = |c: &AtomicUsize| {
            if by > 0 {
                c.fetch_add(1, Ordering::Relaxed)
            } else {
                c.fetch_sub(1, Ordering::Relaxed)
            };
        };
        add(&self.subscriptions);
        if reaches_keyspace(name, pattern) {
            add(&self.keyspace);
        }
    }

    /// Subscribes `client` to a channel (`pattern = false`) or a pattern.
    pub fn subscribe(&self, client: u64, name: Bytes, pattern: bool) {
        let mut g = self.write();
        let map = if pattern { &mut g.patterns } else { &mut g.channels };
        if map.entry(name.clone()).or_default().insert(client) {
            self.counted(&name, pattern, 1);
        }
    }

    /// Unsubscribes `client` from a channel or pattern.
    pub fn unsubscribe(&self, client: u64, name: &[u8], pattern: bool) {
        let mut g = self.write();
        let map = if pattern { &mut g.patterns } else { &mut g.channels };
        if let Some(set) = map.get_mut(name) {
            if set.remove(&client) {
                self.counted(name, pattern, -1);
            }
            if set.is_empty() {
                map.remove(name);
            }
        }
    }

    /// Number of channels with at least one subscriber, and of patterns.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.read();
        (g.channels.len(), g.patterns.len())
    }

    /// Bytes of messages queued for `client` and not yet taken by its
    /// connection (0 if it is not a subscriber): `CLIENT LIST`'s `omem`.
    pub fn queued_bytes(&self, client: u64) -> usize {
        self.read().clients.get(&client).map_or(0, |o| o.queued.load(Ordering::Relaxed))
    }

    /// The largest [`PubSub::queued_bytes`] of any subscriber now.
    pub fn largest_queue(&self) -> usize {
        self.read().clients.values().map(|o| o.queued.load(Ordering::Relaxed)).max().unwrap_or(0)
    }

    /// Delivers `payload` on `channel`; returns how many clients received it.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        self.publish_many(&[(channel, payload)])
    }

    /// Delivers each `(channel, payload)` in order, under one read lock
    /// (see [`PubSub::publish_bursts`]).
    pub fn publish_many(&self, msgs: &[(&[u8], &[u8])]) -> usize {
        self.publish_bursts(msgs.iter().map(|&(channel, payload)| Burst { channel, payload: Payload::One(payload) }))
    }

    /// Delivers each burst's messages in order, under one read lock;
    /// consecutive bursts on one channel look its subscribers up once.
    /// Each subscriber gets its share of all of them encoded, as one piece,
    /// or is evicted if that would overfill its queue. Returns how many
    /// deliveries were made in all.
    pub fn publish_bursts<'m>(&self, bursts: impl IntoIterator<Item = Burst<'m>>) -> usize {
        if self.is_idle() {
            return 0;
        }
        let mut evict = Vec::new();
        let mut receivers = 0;
        let limit = self.queue_limit();
        {
            let g = self.read();
            // Each receiving client's share, in the order they first got one.
            let mut out: Vec<Share> = Vec::new();
            let mut index: HashMap<u64, usize> = HashMap::new();
            // The last two channels looked up: a burst of expiries may
            // alternate its keyevent channel with one keyspace channel per
            // token.
            let mut recent: [Option<(&[u8], Subscribers)>; 2] = [None, None];
            let mut matched: Vec<(&Bytes, &HashSet<u64>)> = Vec::new();
            let mut text = Vec::new();
            for (i, Burst { channel, payload }) in bursts.into_iter().enumerate() {
                let set = match recent.iter().flatten().find(|(c, _)| std::ptr::eq(*c, channel) || *c == channel) {
                    Some(&(_, set)) => set,
                    None => {
                        let set = g.channels.get(channel);
                        recent[i % 2] = Some((channel, set));
                        set
                    }
                };
                matched.clear();
                matched.extend(g.patterns.iter().filter(|(pat, _)| glob::matches(pat, channel)));
                let mut deliver = |payload: &[u8]| {
                    for &c in set.into_iter().flatten() {
                        if let Some(s) = share_of(&mut out, &mut index, &g.clients, c) {
                            s.message(channel, payload);
                        }
                    }
                    for &(pat, set) in &matched {
                        for &c in set {
                            if let Some(s) = share_of(&mut out, &mut index, &g.clients, c) {
                                s.pmessage(pat, channel, payload);
                            }
                        }
                    }
                };
                match payload {
                    Payload::One(payload) => deliver(payload),
                    // Channel subscribers only: each one's messages are
                    // written in one pass. (With a pattern, a client may
                    // get a message and a pmessage for each token, in
                    // turn.)
                    Payload::Tokens { prefix, tokens } if matched.is_empty() => {
                        for &c in set.into_iter().flatten() {
                            if let Some(s) = share_of(&mut out, &mut index, &g.clients, c) {
                                s.tokens(channel, prefix, tokens);
                            }
                        }
                    }
                    Payload::Tokens { prefix, tokens } => {
                        for &t in tokens {
                            text.clear();
                            text.extend_from_slice(prefix);
                            text.push(b':');
                            text.extend_from_slice(&token::format(t));
                            deliver(&text);
                        }
                    }
                }
            }
            for s in out {
                let Some(o) = g.clients.get(&s.client) else { continue };
                let n = s.bytes.len();
                if self.over_limit(&limit, o, (o.queued.fetch_add(n, Ordering::Relaxed) + n) as u64) {
                    o.queued.fetch_sub(n, Ordering::Relaxed);
                    evict.push(s.client);
                } else if o.tx.send(s.bytes.freeze()).is_ok() {
                    receivers += s.messages;
                } else {
                    evict.push(s.client);
                }
            }
        }
        if !evict.is_empty() {
            let mut g = self.write();
            for c in evict {
                tracing::warn!(client = c, "subscriber output queue full; disconnecting it");
                self.remove_client(&mut g, c);
            }
        }
        receivers
    }
}

/// Messages on one channel, for [`PubSub::publish_bursts`].
#[derive(Clone, Copy)]
pub struct Burst<'a> {
    pub channel: &'a [u8],
    pub payload: Payload<'a>,
}

/// The payloads of a [`Burst`].
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// One message.
    One(&'a [u8]),
    /// A message per token, `<prefix>:<token>` (a run of one pool's events).
    Tokens { prefix: &'a [u8], tokens: &'a [TokenId] },
}

/// `client`'s share of a burst, made on its first message; `None` if the
/// client is gone.
fn share_of<'a>(
    out: &'a mut Vec<Share>,
    index: &mut HashMap<u64, usize>,
    clients: &HashMap<u64, Outbox>,
    client: u64,
) -> Option<&'a mut Share> {
    let i = match out.last() {
        Some(s) if s.client == client => out.len() - 1,
        _ => match index.get(&client) {
            Some(&i) => i,
            None => {
                let o = clients.get(&client)?;
                let (bytes, head) = (BytesMut::new(), BytesMut::new());
                out.push(Share { client, proto: o.proto, bytes, messages: 0, head, head_of: (0, 0) });
                index.insert(client, out.len() - 1);
                out.len() - 1
            }
        },
    };
    Some(&mut out[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_and_pattern_delivery() {
        let ps = PubSub::default();
        assert!(ps.is_idle());
        let mut rx = ps.attach(1, Protocol::Resp2);
        ps.subscribe(1, Bytes::from_static(b"a"), false);
        ps.subscribe(1, Bytes::from_static(b"a*"), true);
        assert_eq!(ps.publish(b"a", b"x"), 2);
        assert_eq!(ps.publish(b"b", b"x"), 0);
        assert!(matches!(rx.recv().await, Some(PubMsg::Message { .. })));
        assert!(matches!(rx.recv().await, Some(PubMsg::PMessage { .. })));
        ps.unsubscribe(1, b"a", false);
        assert!(ps.keyspace_listened(), "a pattern may match a keyspace channel");
        ps.unsubscribe(1, b"a*", true);
        assert!(!ps.keyspace_listened());
        ps.subscribe(1, Bytes::from_static(b"__keyspace@0__:p:t"), false);
        assert!(ps.keyspace_listened());
        ps.unsubscribe(1, b"__keyspace@0__:p:t", false);
        assert!(!ps.keyspace_listened());
        ps.subscribe(1, Bytes::from_static(b"__keyspace@0__:p:t"), false);
        ps.subscribe(2, Bytes::from_static(b"__keyspace@0__:p:t"), false);
        ps.detach(2);
        assert!(ps.keyspace_listened(), "one left");
        ps.unsubscribe(1, b"__keyspace@0__:p:t", false);
        assert!(!ps.keyspace_listened());
        assert!(ps.is_idle());
        ps.detach(1);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn messages_are_encoded_in_the_protocol_the_subscriber_speaks_when_published() {
        let ps = PubSub::default();
        let mut rx = ps.attach(1, Protocol::Resp2);
        ps.subscribe(1, Bytes::from_static(b"c"), false);
        ps.publish(b"c", b"one");
        ps.set_proto(1, Protocol::Resp3);
        ps.publish(b"c", b"two");
        let mut want = BytesMut::new();
        put_push(&mut want, Protocol::Resp2, &[b"message", b"c", b"one"]);
        assert!(want.starts_with(b"*3\r\n"));
        assert_eq!(rx.try_recv_bytes().unwrap(), want);
        want.clear();
        put_push(&mut want, Protocol::Resp3, &[b"message", b"c", b"two"]);
        assert!(want.starts_with(b">3\r\n"));
        assert_eq!(rx.try_recv_bytes().unwrap(), want);
    }

    #[tokio::test]
    async fn a_run_of_tokens_is_delivered_as_its_messages_one_by_one() {
        // Two brokers with the same subscribers: one is given runs, the
        // other each run's messages one at a time.
        let (runs, alone) = (PubSub::default(), PubSub::default());
        let mut rx = Vec::new();
        for ps in [&runs, &alone] {
            let (r1, r2) = (ps.attach(1, Protocol::Resp2), ps.attach(2, Protocol::Resp3));
            ps.subscribe(1, Bytes::from_static(b"ev"), false);
            ps.subscribe(2, Bytes::from_static(b"ev"), false);
            ps.subscribe(2, Bytes::from_static(b"other"), false);
            rx.push((r1, r2));
        }
        let tokens: Vec<TokenId> = (1..=5).map(|i| token::from_random([i; 16])).collect();
        let bursts = [
            Burst { channel: b"ev", payload: Payload::Tokens { prefix: b"p", tokens: &tokens[..3] } },
            Burst { channel: b"other", payload: Payload::One(b"x") },
            Burst { channel: b"ev", payload: Payload::Tokens { prefix: b"pool", tokens: &tokens[3..] } },
        ];
        let text = |prefix: &str, t: TokenId| format!("{prefix}:{}", std::str::from_utf8(&token::format(t)).unwrap());
        let one_by_one: Vec<(&[u8], String)> = tokens[..3]
            .iter()
            .map(|&t| (&b"ev"[..], text("p", t)))
            .chain([(&b"other"[..], "x".to_string())])
            .chain(tokens[3..].iter().map(|&t| (&b"ev"[..], text("pool", t))))
            .collect();
        let mut check = |with_pattern: bool| {
            let msgs: Vec<(&[u8], &[u8])> = one_by_one.iter().map(|(c, p)| (*c, p.as_bytes())).collect();
            let (a, b) = (runs.publish_bursts(bursts), alone.publish_many(&msgs));
            assert_eq!(a, b, "deliveries counted alike (pattern: {with_pattern})");
            let [(a1, a2), (b1, b2)] = &mut rx[..] else { unreachable!() };
            for (x, y) in [(a1, b1), (a2, b2)] {
                let (x, y): (Vec<Bytes>, Vec<Bytes>) = (
                    std::iter::from_fn(|| x.try_recv_bytes()).collect(),
                    std::iter::from_fn(|| y.try_recv_bytes()).collect(),
                );
                assert!(!x.is_empty());
                assert_eq!(x.concat(), y.concat(), "pattern: {with_pattern}");
            }
        };
        check(false);
        // A pattern that matches: a client gets each token's message and
        // pmessage in turn.
        for ps in [&runs, &alone] {
            ps.subscribe(1, Bytes::from_static(b"e*"), true);
        }
        check(true);
    }

    #[tokio::test]
    async fn a_burst_is_delivered_in_order_to_channels_and_patterns() {
        let ps = PubSub::default();
        let (mut rx1, mut rx2) = (ps.attach(1, Protocol::Resp2), ps.attach(2, Protocol::Resp3));
        ps.subscribe(1, Bytes::from_static(b"ev"), false);
        ps.subscribe(2, Bytes::from_static(b"ks:*"), true);
        ps.subscribe(2, Bytes::from_static(b"ks:b"), false);
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        // A keyevent channel alternating with keyspace channels, as the
        // notifier sends a burst of expiries.
        let msgs: [(&[u8], &[u8]); 5] = [(b"ev", b"a"), (b"ks:a", b"x"), (b"ev", b"b"), (b"ks:b", b"x"), (b"ev", b"c")];
        assert_eq!(ps.publish_many(&msgs), 3 + 2 + 1);
        let got1: Vec<Bytes> = (0..3)
            .map(|_| match rx1.try_recv() {
                Ok(PubMsg::Message { channel, payload }) if channel == b("ev") => payload,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got1, [b("a"), b("b"), b("c")]);
        assert!(rx1.try_recv().is_err());
        let got2: Vec<(bool, Bytes)> = std::iter::from_fn(|| rx2.try_recv().ok())
            .map(|m| match m {
                PubMsg::Message { channel, .. } => (false, channel),
                PubMsg::PMessage { channel, .. } => (true, channel),
            })
            .collect();
        assert_eq!(got2, [(true, b("ks:a")), (false, b("ks:b")), (true, b("ks:b"))]);
    }

    /// The encoded size of a `message` on `c` with `payload`.
    fn size(payload: &[u8]) -> usize {
        let mut b = BytesMut::new();
        put_push(&mut b, Protocol::Resp2, &[b"message", b"c", payload]);
        b.len()
    }

    #[tokio::test]
    async fn a_subscriber_that_reads_is_never_evicted_and_a_burst_that_overfills_evicts() {
        let ps = PubSub::default();
        let mut rx = ps.attach(1, Protocol::Resp2);
        ps.subscribe(1, Bytes::from_static(b"c"), false);
        let payloads: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
        let burst: Vec<(&[u8], &[u8])> = payloads.iter().map(|p| (&b"c"[..], p.as_bytes())).collect();
        let burst_bytes = burst.len() * size(b"0000");
        // Twice the queue's bound in all, read as it comes.
        for _ in 0..2 * SUBSCRIBER_QUEUE_BYTES / burst_bytes {
            assert_eq!(ps.publish_many(&burst), burst.len());
            for p in &payloads {
                match rx.try_recv() {
                    Ok(PubMsg::Message { payload, .. }) => assert_eq!(payload, p.as_bytes()),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(rx.try_recv().is_err() && !ps.is_idle());
        // Unread: the queue fills burst by burst; the burst that would
        // overfill it is not delivered, and the subscriber is dropped.
        let fit = SUBSCRIBER_QUEUE_BYTES / burst_bytes;
        for _ in 0..fit {
            assert_eq!(ps.publish_many(&burst), burst.len());
        }
        assert_eq!(ps.publish_many(&burst), 0);
        assert!(ps.is_idle(), "evicted");
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, fit * burst.len(), "what was queued before the eviction is still read");
    }

    #[tokio::test]
    async fn slow_subscriber_is_evicted_not_buffered() {
        let ps = PubSub::default();
        let mut rx = ps.attach(9, Protocol::Resp2);
        ps.subscribe(9, Bytes::from_static(b"c"), false);
        let fit = SUBSCRIBER_QUEUE_BYTES / size(b"m");
        for _ in 0..fit + 10 {
            ps.publish(b"c", b"m");
        }
        assert!(ps.is_idle(), "evicted client's subscriptions are gone");
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, fit);
    }

    #[tokio::test]
    async fn limits_set_at_run_time_hard_off_and_soft_after_its_seconds() {
        let ps = PubSub::default();
        let mut rx = ps.attach(1, Protocol::Resp2);
        ps.subscribe(1, Bytes::from_static(b"c"), false);
        let one = size(b"m") as u64;
        // No hard limit: twice the default, unread, is kept.
        ps.set_queue_limit(QueueLimit { hard: 0, soft: 0, soft_secs: 0 });
        for _ in 0..2 * SUBSCRIBER_QUEUE_BYTES as u64 / one {
            assert_eq!(ps.publish(b"c", b"m"), 1);
        }
        assert!(!ps.is_idle());
        while rx.try_recv_bytes().is_some() {}
        // A soft limit of 10 messages for 0 s: the message that goes over
        // starts its clock, the next one past it disconnects.
        ps.set_queue_limit(QueueLimit { hard: 0, soft: 10 * one, soft_secs: 0 });
        for _ in 0..11 {
            assert_eq!(ps.publish(b"c", b"m"), 1);
        }
        // Read below the soft limit: its clock starts over.
        while rx.try_recv_bytes().is_some() {}
        assert_eq!(ps.publish(b"c", b"m"), 1);
        for _ in 0..10 {
            assert_eq!(ps.publish(b"c", b"m"), 1);
        }
        assert_eq!(ps.publish(b"c", b"m"), 0, "over the soft limit a second time in a row");
        assert!(ps.is_idle());
        // A soft limit with seconds to go: over it, still subscribed.
        let mut rx = ps.attach(2, Protocol::Resp2);
        ps.subscribe(2, Bytes::from_static(b"c"), false);
        ps.set_queue_limit(QueueLimit { hard: 20 * one, soft: 5 * one, soft_secs: 60 });
        for _ in 0..20 {
            assert_eq!(ps.publish(b"c", b"m"), 1);
        }
        assert_eq!(ps.publish(b"c", b"m"), 0, "the hard limit still holds");
        // Seconds past any clock: over the soft limit for good, never cut off by it.
        let _rx3 = ps.attach(3, Protocol::Resp2);
        ps.subscribe(3, Bytes::from_static(b"c"), false);
        ps.set_queue_limit(QueueLimit { hard: 0, soft: one, soft_secs: u64::MAX });
        for _ in 0..10 {
            assert_eq!(ps.publish(b"c", b"m"), 1);
        }
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn filling_when_a_burst_leaves_a_queue_past_half_its_hard_limit() {
        let ps = PubSub::default();
        let mut rx = ps.attach(1, Protocol::Resp2);
        let _quiet = ps.attach(2, Protocol::Resp2);
        ps.subscribe(1, Bytes::from_static(b"c"), false);
        ps.subscribe(2, Bytes::from_static(b"d"), false);
        let one = size(b"m") as u64;
        ps.set_queue_limit(QueueLimit { hard: 10 * one, soft: 0, soft_secs: 0 });
        for _ in 0..5 {
            assert_eq!(ps.publish(b"c", b"m"), 1);
        }
        assert!(!ps.filling() && !ps.past_half(), "half full is not past half");
        assert_eq!(ps.publish(b"c", b"m"), 1);
        assert!(ps.filling());
        assert!(!ps.filling(), "no burst since: not again, though still past half");
        assert!(ps.past_half(), "until it is read");
        assert_eq!(ps.publish(b"c", b"m"), 1);
        assert!(ps.filling(), "the next burst");
        // Read after the burst: nothing to wait for.
        assert_eq!(ps.publish(b"c", b"m"), 1);
        while rx.try_recv_bytes().is_some() {}
        assert!(!ps.past_half());
        assert!(!ps.filling(), "back under half");
        assert!(!ps.filling.load(Ordering::Relaxed), "so the next look is one load");
        // Without a hard limit there is no half mark.
        ps.set_queue_limit(QueueLimit { hard: 0, soft: 0, soft_secs: 0 });
        for _ in 0..100 {
            assert_eq!(ps.publish(b"c", b"m"), 1);
        }
        assert!(!ps.filling() && !ps.past_half());
    }
}

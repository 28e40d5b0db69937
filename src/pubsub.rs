//! The server's own publish/subscribe broker.
//!
//! Each subscribed connection has one bounded queue (its output buffer for
//! messages). Publishing never blocks and never waits on a slow reader: when a
//! subscriber's queue is full, it is evicted — its queue is closed, and the
//! connection, seeing the close, disconnects the client (Redis does the same
//! with `client-output-buffer-limit pubsub`). Memory is therefore bounded by
//! `subscribers × SUBSCRIBER_QUEUE`.
//!
//! A burst (one [`PubSub::publish_many`]: a batch of expiries) goes to each
//! subscriber as one item of its queue, a `Vec` of its messages: one send
//! and one wake-up per burst instead of one per message. The bound is kept
//! in messages by a counter the publisher adds to and the [`Inbox`] takes
//! from.

use crate::glob;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// Messages a subscriber may have queued before it is disconnected. 65,536
/// messages of ~100 bytes is ~6.5 MiB, within Redis's default pubsub output
/// limit (32 MiB hard), and enough to absorb a burst of 50k expiries.
pub const SUBSCRIBER_QUEUE: usize = 65_536;

/// A message delivered to a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum PubMsg {
    /// From a channel subscription.
    Message { channel: Bytes, payload: Bytes },
    /// From a pattern subscription.
    PMessage { pattern: Bytes, channel: Bytes, payload: Bytes },
}

/// The publishing end of a subscriber's queue.
struct Outbox {
    tx: mpsc::UnboundedSender<Vec<PubMsg>>,
    /// Messages sent and not yet taken off the queue by the [`Inbox`].
    queued: Arc<AtomicUsize>,
}

/// A subscriber's end of its queue: messages one at a time, in order.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Vec<PubMsg>>,
    queued: Arc<AtomicUsize>,
    /// The burst being handed out.
    batch: std::vec::IntoIter<PubMsg>,
}

impl Inbox {
    /// The next message, waiting for one; `None` once the broker dropped
    /// this subscriber (evicted or detached) and every message sent before
    /// was taken.
    pub async fn recv(&mut self) -> Option<PubMsg> {
        loop {
            if let Some(m) = self.batch.next() {
                return Some(m);
            }
            let b = self.rx.recv().await?;
            self.take(b);
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Result<PubMsg, mpsc::error::TryRecvError> {
        loop {
            if let Some(m) = self.batch.next() {
                return Ok(m);
            }
            let b = self.rx.try_recv()?;
            self.take(b);
        }
    }

    fn take(&mut self, b: Vec<PubMsg>) {
        self.queued.fetch_sub(b.len(), Ordering::Relaxed);
        self.batch = b.into_iter();
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
#[derive(Default)]
pub struct PubSub {
    // A std RwLock: held only for map operations, never across `.await`.
    inner: RwLock<Inner>,
    /// Channel + pattern subscriptions in total; lets publishers skip building
    /// messages when nobody listens.
    subscriptions: AtomicUsize,
    /// Subscriptions that may receive a keyspace message: channels that
    /// start with [`KEYSPACE_PREFIX`], and every pattern.
    keyspace: AtomicUsize,
}

/// What every keyspace channel starts with.
pub const KEYSPACE_PREFIX: &[u8] = b"__keyspace@";

/// True if a subscription to `name` may receive keyspace messages.
fn reaches_keyspace(name: &[u8], pattern: bool) -> bool {
    pattern || name.starts_with(KEYSPACE_PREFIX)
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client's queue; returns the receiving end. Called on the
    /// client's first subscription.
    pub fn attach(&self, client: u64) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.write().clients.insert(client, Outbox { tx, queued: queued.clone() });
        Inbox { rx, queued, batch: Vec::new().into_iter() }
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

    /// Delivers `payload` on `channel`; returns how many clients received it.
    pub fn publish(&self, channel: &[u8], payload: &Bytes) -> usize {
        if self.is_idle() {
            return 0;
        }
        self.publish_bytes(&Bytes::copy_from_slice(channel), payload)
    }

    /// [`PubSub::publish`] with the channel already in a `Bytes` (no copy).
    pub fn publish_bytes(&self, channel: &Bytes, payload: &Bytes) -> usize {
        self.publish_many(std::slice::from_ref(&(channel.clone(), payload.clone())))
    }

    /// Delivers each `(channel, payload)` in order, under one read lock;
    /// consecutive messages on one channel look its subscribers up once (a
    /// burst of expiries is one channel). Each subscriber gets its share of
    /// the burst as one queue item, or is evicted if that would overfill
    /// its queue. Returns how many deliveries were made in all.
    pub fn publish_many(&self, msgs: &[(Bytes, Bytes)]) -> usize {
        if self.is_idle() || msgs.is_empty() {
            return 0;
        }
        let mut evict = Vec::new();
        let mut receivers = 0;
        {
            let g = self.read();
            // Each receiving client's share, in the order they first got one.
            let mut out: Vec<(u64, Vec<PubMsg>)> = Vec::new();
            let mut index: HashMap<u64, usize> = HashMap::new();
            let mut deliver = |client: u64, msg: PubMsg| {
                let i = match out.last() {
                    Some(&(c, _)) if c == client => out.len() - 1,
                    _ => *index.entry(client).or_insert_with(|| {
                        out.push((client, Vec::new()));
                        out.len() - 1
                    }),
                };
                out[i].1.push(msg);
            };
            // The last two channels looked up: a burst of expiries
            // alternates its keyevent channel with one keyspace channel
            // per token.
            let mut recent: [Option<(&Bytes, Subscribers)>; 2] = [None, None];
            for (i, (channel, payload)) in msgs.iter().enumerate() {
                let set = match recent.iter().flatten().find(|(c, _)| *c == channel) {
                    Some(&(_, set)) => set,
                    None => {
                        let set = g.channels.get(channel.as_ref());
                        recent[i % 2] = Some((channel, set));
                        set
                    }
                };
                for &c in set.into_iter().flatten() {
                    deliver(c, PubMsg::Message { channel: channel.clone(), payload: payload.clone() });
                }
                for (pat, set) in &g.patterns {
                    if glob::matches(pat, channel) {
                        for &c in set {
                            deliver(
                                c,
                                PubMsg::PMessage {
                                    pattern: pat.clone(),
                                    channel: channel.clone(),
                                    payload: payload.clone(),
                                },
                            );
                        }
                    }
                }
            }
            for (client, batch) in out {
                let Some(o) = g.clients.get(&client) else { continue };
                let n = batch.len();
                if o.queued.fetch_add(n, Ordering::Relaxed) + n > SUBSCRIBER_QUEUE {
                    o.queued.fetch_sub(n, Ordering::Relaxed);
                    evict.push(client);
                } else if o.tx.send(batch).is_ok() {
                    receivers += n;
                } else {
                    evict.push(client);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_and_pattern_delivery() {
        let ps = PubSub::default();
        assert!(ps.is_idle());
        let mut rx = ps.attach(1);
        ps.subscribe(1, Bytes::from_static(b"a"), false);
        ps.subscribe(1, Bytes::from_static(b"a*"), true);
        assert_eq!(ps.publish(b"a", &Bytes::from_static(b"x")), 2);
        assert_eq!(ps.publish(b"b", &Bytes::from_static(b"x")), 0);
        assert!(matches!(rx.recv().await, Some(PubMsg::Message { .. })));
        assert!(matches!(rx.recv().await, Some(PubMsg::PMessage { .. })));
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
        ps.unsubscribe(1, b"a", false);
        assert!(ps.is_idle());
        ps.detach(1);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_burst_is_delivered_in_order_to_channels_and_patterns() {
        let ps = PubSub::default();
        let (mut rx1, mut rx2) = (ps.attach(1), ps.attach(2));
        ps.subscribe(1, Bytes::from_static(b"ev"), false);
        ps.subscribe(2, Bytes::from_static(b"ks:*"), true);
        ps.subscribe(2, Bytes::from_static(b"ks:b"), false);
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        // A keyevent channel alternating with keyspace channels, as the
        // notifier sends a burst of expiries.
        let msgs = [(b("ev"), b("a")), (b("ks:a"), b("x")), (b("ev"), b("b")), (b("ks:b"), b("x")), (b("ev"), b("c"))];
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

    #[tokio::test]
    async fn a_subscriber_that_reads_is_never_evicted_and_a_burst_that_overfills_evicts() {
        let ps = PubSub::default();
        let mut rx = ps.attach(1);
        ps.subscribe(1, Bytes::from_static(b"c"), false);
        let burst: Vec<(Bytes, Bytes)> =
            (0..1000).map(|i| (Bytes::from_static(b"c"), Bytes::from(format!("{i}")))).collect();
        // Twice the queue's bound in all, read as it comes.
        for _ in 0..2 * SUBSCRIBER_QUEUE / burst.len() {
            assert_eq!(ps.publish_many(&burst), burst.len());
            for (i, _) in burst.iter().enumerate() {
                match rx.try_recv() {
                    Ok(PubMsg::Message { payload, .. }) => assert_eq!(payload, format!("{i}").as_bytes()),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(rx.try_recv().is_err() && !ps.is_idle());
        // Unread: the queue fills burst by burst; the burst that would
        // overfill it is not delivered, and the subscriber is dropped.
        let fit = SUBSCRIBER_QUEUE / burst.len();
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
        let mut rx = ps.attach(9);
        ps.subscribe(9, Bytes::from_static(b"c"), false);
        for _ in 0..SUBSCRIBER_QUEUE + 10 {
            ps.publish(b"c", &Bytes::from_static(b"m"));
        }
        assert!(ps.is_idle(), "evicted client's subscriptions are gone");
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, SUBSCRIBER_QUEUE);
    }
}

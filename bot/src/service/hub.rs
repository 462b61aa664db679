//! Live fan-out of conversation events to the streams open in this process.
//! Stored events are published after their transaction commits, under the
//! conversation's turn lock, so each conversation's events arrive in
//! sequence order. A subscriber that falls behind (the bounded channel
//! overflows) is told so and catches up from the database; nothing is queued
//! without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::store::{Author, Event};

/// Events buffered per conversation for slow subscribers.
pub const CHANNEL_CAPACITY: usize = 64;

// Published once into an `Arc` and never moved again, so the size
// difference between variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// A stored event (replayable by sequence).
    Stored(Event),
    /// A typing indicator: live only.
    Typing {
        conversation_id: String,
        author: Author,
        active: bool,
    },
    /// Where a waiting customer now stands in the queue: live only.
    Position {
        conversation_id: String,
        ticket_id: String,
        position: u32,
        wait_secs: u32,
    },
    /// Another replica stored the event with this sequence: read the store.
    Elsewhere {
        conversation_id: String,
        sequence: u64,
    },
}

/// Carries live events to the other replicas (the NATS relay); what it
/// receives from them is delivered with [`Hub::deliver`].
pub trait Relay: Send + Sync + std::fmt::Debug {
    fn forward(&self, event: &LiveEvent);
}

impl LiveEvent {
    pub fn conversation_id(&self) -> &str {
        match self {
            Self::Stored(e) => &e.conversation_id,
            Self::Typing {
                conversation_id, ..
            }
            | Self::Position {
                conversation_id, ..
            }
            | Self::Elsewhere {
                conversation_id, ..
            } => conversation_id,
        }
    }
}

#[derive(Debug, Default)]
pub struct Hub {
    // One sender per conversation with live subscribers; the receivers are
    // held by the open streams. A sender without receivers is dropped on the
    // next publish to its conversation or when its last subscription ends.
    channels: Channels,
    relay: std::sync::OnceLock<Arc<dyn Relay>>,
}

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Arc<LiveEvent>>>>>;

/// A live subscription; unsubscribes (and frees the channel when it was the
/// last) on drop.
#[derive(Debug)]
pub struct Subscription {
    // `None` only while dropping: the receiver goes first, under the map's
    // lock, so the last subscriber always sees a count of zero.
    rx: Option<broadcast::Receiver<Arc<LiveEvent>>>,
    channels: Channels,
    conversation_id: String,
}

impl Hub {
    pub fn subscribe(&self, conversation_id: &str) -> Subscription {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let tx = map
            .entry(conversation_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0);
        Subscription {
            rx: Some(tx.subscribe()),
            channels: self.channels.clone(),
            conversation_id: conversation_id.to_owned(),
        }
    }

    /// Delivers to this process's streams and, with a relay, to the other
    /// replicas'.
    pub fn publish(&self, event: LiveEvent) {
        if let Some(r) = self.relay.get() {
            r.forward(&event);
        }
        self.deliver(event);
    }

    /// Sends live events to other replicas too from now on.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.relay.set(relay);
    }

    /// Delivers to this process's streams only.
    pub fn deliver(&self, event: LiveEvent) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let id = event.conversation_id().to_owned();
        if let Some(tx) = map.get(&id)
            && tx.send(Arc::new(event)).is_err()
        {
            map.remove(&id);
        }
    }

    /// Conversations with live subscribers.
    pub fn len(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Subscription {
    /// The next live event (see `broadcast::Receiver::recv`).
    pub async fn recv(&mut self) -> Result<Arc<LiveEvent>, broadcast::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        self.rx.take();
        if let Some(tx) = map.get(&self.conversation_id)
            && tx.receiver_count() == 0
        {
            map.remove(&self.conversation_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    fn event(seq: u64) -> LiveEvent {
        LiveEvent::Stored(Event {
            conversation_id: "c".into(),
            sequence: seq,
            created_at: 0,
            kind: EventKind::Ended { reason: "x".into() },
        })
    }

    #[tokio::test]
    async fn subscribers_get_events_and_the_last_one_frees_the_channel() {
        let hub = Hub::default();
        hub.publish(event(1)); // nobody listens: dropped, nothing kept
        assert!(hub.is_empty());
        let mut a = hub.subscribe("c");
        let mut b = hub.subscribe("c");
        hub.publish(event(2));
        assert_eq!(*a.recv().await.unwrap(), event(2));
        assert_eq!(*b.recv().await.unwrap(), event(2));
        drop(a);
        assert_eq!(hub.len(), 1);
        drop(b);
        assert!(hub.is_empty());
        // Concurrent drops still free it.
        let subs: Vec<_> = (0..8).map(|_| hub.subscribe("c")).collect();
        std::thread::scope(|s| {
            for sub in subs {
                s.spawn(move || drop(sub));
            }
        });
        assert!(hub.is_empty());
    }
}

//! A bounded queue from a producer that must never wait to one consumer that may fall behind.
//!
//! The event hub hands each event to the queues of the subscriptions it concerns, and the
//! server's shared views hand each result to the queues of their subscribers: neither may
//! wait for a slow reader, or one slow client would slow the bus and everyone else. A queue
//! that is full when an item comes is not grown: it drops what it held, counts what its
//! consumer missed, and its consumer is told so ([`RecvError::Lagged`]) on its next `recv`,
//! as a `tokio::sync::broadcast` receiver is. The consumer then ends (it resubscribes and
//! refetches): nothing it would read after a gap could be trusted to be complete.
//!
//! One consumer only. The queue allocates nothing until an item comes, and gives its room
//! back when it lags, so an idle subscriber costs a few dozen bytes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Why [`Queue::recv`] has no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The consumer fell behind: this many items were not kept for it.
    Lagged(u64),
    /// The producer closed the queue, and everything in it was read.
    Closed,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Lagged(missed) => write!(f, "lagged: {missed} items missed"),
            RecvError::Closed => f.write_str("closed"),
        }
    }
}

/// A bounded queue that its producer never waits on (see the module docs).
pub struct Queue<T> {
    capacity: usize,
    state: Mutex<State<T>>,
    /// Wakes the consumer. With one consumer, a notification that comes while it is not
    /// waiting is kept for its next wait, so none is lost.
    ready: Notify,
}

struct State<T> {
    items: VecDeque<T>,
    /// How many items the consumer missed; more than 0 once it lagged.
    missed: u64,
    closed: bool,
}

impl<T> Queue<T> {
    /// A queue holding up to `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                items: VecDeque::new(),
                missed: 0,
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        // A push or a pop cannot leave the state half-changed: poisoning says nothing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` for the consumer, without waiting. `false` when it was not queued: the
    /// consumer lagged (now or before), or the queue is closed.
    pub fn push(&self, item: T) -> bool {
        let mut state = self.state();
        if state.closed {
            return false;
        }
        if state.missed > 0 {
            state.missed += 1;
            return false;
        }
        if state.items.len() >= self.capacity {
            // Everything not read yet is missed too: the consumer ends at the gap.
            state.missed = state.items.len() as u64 + 1;
            state.items = VecDeque::new();
            drop(state);
            self.ready.notify_one();
            return false;
        }
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// No more items: the consumer reads what is queued, then [`RecvError::Closed`].
    pub fn close(&self) {
        self.state().closed = true;
        self.ready.notify_one();
    }

    /// The next item, waiting for one; an error once the consumer lagged (from then on), or
    /// once the queue is closed and empty.
    pub async fn recv(&self) -> Result<T, RecvError> {
        loop {
            {
                let mut state = self.state();
                if state.missed > 0 {
                    return Err(RecvError::Lagged(state.missed));
                }
                if let Some(item) = state.items.pop_front() {
                    return Ok(item);
                }
                if state.closed {
                    return Err(RecvError::Closed);
                }
            }
            self.ready.notified().await;
        }
    }

    /// How many items wait to be read.
    pub fn len(&self) -> usize {
        self.state().items.len()
    }

    /// Whether no item waits to be read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_come_in_order_then_closed() {
        let queue = Queue::new(4);
        assert!(queue.push(1));
        assert!(queue.push(2));
        queue.close();
        assert!(!queue.push(3), "nothing is queued after close");
        assert_eq!(queue.recv().await, Ok(1));
        assert_eq!(queue.recv().await, Ok(2));
        assert_eq!(queue.recv().await, Err(RecvError::Closed));
    }

    #[tokio::test]
    async fn a_full_queue_lags_its_consumer_instead_of_growing() {
        let queue = Queue::new(2);
        assert!(queue.push(1));
        assert!(queue.push(2));
        assert!(!queue.push(3), "the third does not fit");
        assert!(!queue.push(4), "nor anything after it");
        assert!(queue.is_empty(), "what it held is given back");
        // The two held, the one that did not fit and the one after it.
        assert_eq!(queue.recv().await, Err(RecvError::Lagged(4)));
        assert_eq!(queue.recv().await, Err(RecvError::Lagged(4)));
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken() {
        let queue = std::sync::Arc::new(Queue::new(1));
        let consumer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.recv().await }
        });
        tokio::task::yield_now().await;
        assert!(queue.push("hello"));
        assert_eq!(consumer.await.unwrap(), Ok("hello"));
    }
}

//! A bounded queue that never blocks its producer: when full, the oldest item is dropped and the
//! caller is told how many were dropped (so it can count and log them). Used where a producer
//! must never wait on a slow consumer.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Bounded drop-oldest queue with close.
#[derive(Debug)]
pub struct DropOldest<T> {
    capacity: usize,
    inner: Mutex<Inner<T>>,
    notify: Notify,
}

impl<T> DropOldest<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner { items: VecDeque::new(), closed: false }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends items; returns `(dropped, len)`.
    pub fn push(&self, items: impl IntoIterator<Item = T>) -> (u64, usize) {
        let mut dropped = 0;
        let len = {
            let mut q = self.lock();
            for it in items {
                if q.items.len() >= self.capacity {
                    q.items.pop_front();
                    dropped += 1;
                }
                q.items.push_back(it);
            }
            q.items.len()
        };
        self.notify.notify_one();
        (dropped, len)
    }

    /// Takes up to `n` items from the front; also says whether the queue is closed.
    pub fn take(&self, n: usize) -> (Vec<T>, bool) {
        let mut q = self.lock();
        let k = n.min(q.items.len());
        (q.items.drain(..k).collect(), q.closed)
    }

    /// Puts items back at the front (after a failed attempt), keeping their order.
    pub fn requeue_front(&self, items: Vec<T>) {
        let mut q = self.lock();
        for it in items.into_iter().rev() {
            q.items.push_front(it);
        }
    }

    /// Current length and closed flag.
    pub fn len(&self) -> (usize, bool) {
        let q = self.lock();
        (q.items.len(), q.closed)
    }

    /// No more items will come.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// Waits until something is pushed or the queue is closed.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_when_full() {
        let q = DropOldest::new(3);
        assert_eq!(q.push([1, 2, 3]), (0, 3));
        assert_eq!(q.push([4, 5]), (2, 3));
        let (items, closed) = q.take(10);
        assert_eq!(items, vec![3, 4, 5]);
        assert!(!closed);
        q.requeue_front(vec![7, 8]);
        q.push([9]);
        q.close();
        assert_eq!(q.take(10), (vec![7, 8, 9], true));
    }
}

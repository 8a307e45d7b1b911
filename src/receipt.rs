//! End-to-end receipts: how a source learns that what it received is safe, so that it can
//! acknowledge it upstream (MQTT PUBACK) only then.
//!
//! A [`Receipt`] travels with the samples of one received message: the source issues it, the
//! rule engine hands a clone to every output queue that got lines from the step (on the step's
//! last line), the output's writer keeps it until those lines are durable (appended to its spool,
//! or accepted by the server when there is no spool) and then drops it. When the last clone is
//! dropped the receipt is *complete*: its [`Board`] records the sequence number and wakes the
//! source, which acknowledges its messages in the order received, up to the first one not yet
//! complete.
//!
//! Invariants:
//! - Completion is dropping: a receipt is complete exactly when no stage holds it any more. A
//!   stage that forgets data (a full queue dropping its oldest lines, a batch quarantined by
//!   the server) completes its receipts too; that loss is counted where it happens.
//! - Nothing ever waits for a receipt except the source that issued it: the engine and the
//!   writers only carry clones (an `Arc`), so alarms never wait on an output.
//! - A [`Board`] holds at most one entry per receipt that is complete but not yet collected by
//!   its source; the source bounds how many receipts it has issued and not collected.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::model::Sample;

/// Where the receipts of one source report completion.
#[derive(Debug, Default)]
pub struct Board {
    done: Mutex<BTreeSet<u64>>,
    notify: Notify,
}

impl Board {
    /// A new board.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Issues the receipt for sequence number `seq`.
    pub fn issue(self: &Arc<Self>, seq: u64) -> Receipt {
        Receipt(Arc::new(Token::One {
            seq,
            board: self.clone(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes and returns whether `seq` is complete.
    pub fn take(&self, seq: u64) -> bool {
        self.lock().remove(&seq)
    }

    /// Forgets completions below `seq` (receipts the source no longer waits for).
    pub fn forget_below(&self, seq: u64) {
        let mut d = self.lock();
        let keep = d.split_off(&seq);
        *d = keep;
    }

    /// Waits until some receipt completes (returns at once if one completed since the last call).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[derive(Debug)]
enum Token {
    /// One received message.
    One { seq: u64, board: Arc<Board> },
    /// Several receipts held as one (an engine step over several messages): each completes
    /// when this one is dropped, unless another stage still holds it.
    All(#[expect(dead_code, reason = "held only to be dropped with the token")] Vec<Receipt>),
}

impl Drop for Token {
    fn drop(&mut self) {
        if let Token::One { seq, board } = self {
            board.lock().insert(*seq);
            board.notify.notify_one();
        }
    }
}

/// A claim on one received message (or on several, see [`Receipt::all`]): complete when the
/// last clone is dropped (see the module docs).
#[derive(Clone, Debug)]
pub struct Receipt(Arc<Token>);

impl Receipt {
    /// The sequence number it was issued with (`None` for a receipt held for several).
    pub fn seq(&self) -> Option<u64> {
        match &*self.0 {
            Token::One { seq, .. } => Some(*seq),
            Token::All(_) => None,
        }
    }

    /// One receipt holding all of `receipts`: a stage that gets lines of several messages at
    /// once holds them with one clone per queue instead of one per message. `None` when there
    /// is none.
    pub fn all(mut receipts: Vec<Receipt>) -> Option<Receipt> {
        match receipts.len() {
            0 => None,
            1 => receipts.pop(),
            _ => Some(Receipt(Arc::new(Token::All(receipts)))),
        }
    }
}

/// The samples of one received message, with the receipt to hold until they are durable.
#[derive(Debug, Default)]
pub struct SampleBatch {
    /// Samples.
    pub samples: Vec<Sample>,
    /// Held by every stage that has not yet made the samples durable; `None` when the source
    /// does not wait for durability.
    pub receipt: Option<Receipt>,
}

impl From<Vec<Sample>> for SampleBatch {
    fn from(samples: Vec<Sample>) -> Self {
        Self {
            samples,
            receipt: None,
        }
    }
}

/// A consumer that takes plain samples completes the receipt on hand-over.
impl From<SampleBatch> for Vec<Sample> {
    fn from(b: SampleBatch) -> Self {
        b.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receipt_completes_when_its_last_clone_is_dropped() {
        let board = Board::new();
        let r = board.issue(7);
        let held = r.clone();
        drop(r);
        assert!(!board.take(7), "one clone is still held");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), board.notified())
            .await
            .expect("completion wakes the source");
        assert!(board.take(7));
        assert!(!board.take(7), "taken once");
        drop(board.issue(3));
        drop(board.issue(9));
        board.forget_below(5);
        assert!(!board.take(3));
        assert!(board.take(9));
    }

    #[test]
    fn a_joined_receipt_completes_its_parts_when_the_last_holder_drops() {
        let board = Board::new();
        let (a, b) = (board.issue(1), board.issue(2));
        let kept = b.clone();
        let all = Receipt::all(vec![a, b]).expect("two receipts");
        assert_eq!(all.seq(), None);
        let held = all.clone();
        drop(all);
        assert!(!board.take(1), "the joined receipt is still held");
        drop(held);
        assert!(board.take(1), "its part completes with it");
        assert!(
            !board.take(2),
            "a part held elsewhere waits for that holder"
        );
        drop(kept);
        assert!(board.take(2));
        assert!(Receipt::all(Vec::new()).is_none());
        let one = Receipt::all(vec![board.issue(5)]).expect("one");
        assert_eq!(one.seq(), Some(5));
    }
}

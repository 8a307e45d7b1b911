//! What the API reads about alarms, and how it asks the engine to act.
//!
//! [`Board`] is a snapshot written only by the engine task after each journaled batch: every
//! alarm's view, the newest events (bounded by `alarms.history_in_memory`; older ones are in the
//! journal), the site mode and the flood flag. [`AlarmsHandle`] carries the command channel to
//! the engine (bounded, 64: a full channel makes the HTTP request wait, within its timeout) and
//! the API tokens (SHA-256 digests only; the tokens themselves are never kept).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::engine::{AlarmView, Command, CommandError};
use super::journal::ModeState;
use crate::config::alarms::Role;
use crate::model::AlarmEvent;
use crate::model::kind_rank;

#[derive(Debug, Default)]
struct Inner {
    alarms: Vec<AlarmView>,
    index: HashMap<Arc<str>, usize>,
    history: VecDeque<AlarmEvent>,
    cap: usize,
    mode: ModeState,
    flood: bool,
}

/// The alarm snapshot the API reads.
#[derive(Debug, Default)]
pub struct Board {
    inner: RwLock<Inner>,
}

/// Filters for the history listing.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// Exact alarm id.
    pub alarm: Option<String>,
    /// Exact channel id.
    pub channel: Option<String>,
    /// Transition name (`raised`, `acknowledged`, …).
    pub transition: Option<String>,
    /// Class name (`process`, `fault`, `system`).
    pub class: Option<String>,
    /// Events at or after.
    pub since: Option<std::time::SystemTime>,
    /// Events before.
    pub until: Option<std::time::SystemTime>,
    /// At most this many (the newest).
    pub limit: usize,
}

/// Sort key for listings: higher priority first, then toxic before combustible, then oldest
/// transition first, then id.
pub fn listing_order(a: &AlarmView, b: &AlarmView) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(kind_rank(&a.kind).cmp(&kind_rank(&b.kind)))
        .then(a.since.cmp(&b.since))
        .then(a.id.cmp(&b.id))
}

impl Board {
    /// A board with every alarm's view and the replayed history.
    pub fn new(
        views: Vec<AlarmView>,
        history: VecDeque<AlarmEvent>,
        cap: usize,
        mode: ModeState,
    ) -> Self {
        let index = views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.clone(), i))
            .collect();
        Self {
            inner: RwLock::new(Inner {
                alarms: views,
                index,
                history,
                cap: cap.max(1),
                mode,
                flood: false,
            }),
        }
    }

    /// Engine only: records a journaled batch.
    pub fn update(
        &self,
        views: Vec<AlarmView>,
        events: &[AlarmEvent],
        mode: &ModeState,
        flood: bool,
    ) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for v in views {
            match g.index.get(&*v.id) {
                Some(&i) => g.alarms[i] = v,
                None => {
                    let n = g.alarms.len();
                    g.index.insert(v.id.clone(), n);
                    g.alarms.push(v);
                }
            }
        }
        for e in events {
            if g.history.len() >= g.cap {
                g.history.pop_front();
            }
            g.history.push_back(e.clone());
        }
        g.mode = mode.clone();
        g.flood = flood;
    }

    /// Engine only, after a configuration reload: the board holds exactly `views` (alarms the
    /// new plan no longer has leave it; their `removed` events stay in the history).
    pub fn replace_views(&self, views: Vec<AlarmView>) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.index = views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.clone(), i))
            .collect();
        g.alarms = views;
    }

    /// Alarms not in the normal state (or all), in listing order.
    pub fn list(&self, all: bool) -> Vec<AlarmView> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<AlarmView> = g
            .alarms
            .iter()
            .filter(|a| all || a.state != crate::model::AlarmState::Normal)
            .cloned()
            .collect();
        v.sort_by(listing_order);
        v
    }

    /// Calls `f` with every alarm not in the normal state (in no particular order), without
    /// copying the views.
    pub fn each_not_normal(&self, mut f: impl FnMut(&AlarmView)) {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        for a in &g.alarms {
            if a.state != crate::model::AlarmState::Normal {
                f(a);
            }
        }
    }

    /// One alarm.
    pub fn get(&self, id: &str) -> Option<AlarmView> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        g.index.get(id).map(|&i| g.alarms[i].clone())
    }

    /// Events matching the filter, oldest first.
    pub fn history(&self, f: &HistoryFilter) -> Vec<AlarmEvent> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<AlarmEvent> = g
            .history
            .iter()
            .rev()
            .filter(|e| f.alarm.as_ref().is_none_or(|a| *a == e.alarm))
            .filter(|e| f.channel.as_ref().is_none_or(|c| c == e.channel.as_str()))
            .filter(|e| {
                f.transition
                    .as_ref()
                    .is_none_or(|t| t == e.transition.as_str())
            })
            .filter(|e| {
                f.class.as_ref().is_none_or(|c| {
                    serde_json::to_value(e.class)
                        .ok()
                        .and_then(|v| v.as_str().map(|s| s == c))
                        .unwrap_or(false)
                })
            })
            .filter(|e| f.since.is_none_or(|s| e.ts >= s))
            .filter(|e| f.until.is_none_or(|u| e.ts < u))
            .take(f.limit.max(1))
            .cloned()
            .collect();
        v.reverse();
        v
    }

    /// The site mode.
    pub fn mode(&self) -> ModeState {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .mode
            .clone()
    }

    /// Whether an alarm flood is in progress.
    pub fn flood(&self) -> bool {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).flood
    }
}

/// A command with its reply channel.
#[derive(Debug)]
pub struct CommandMsg {
    /// What to do.
    pub cmd: Command,
    /// The events it caused (after they were journaled), or why it was refused.
    pub reply: oneshot::Sender<Result<Vec<AlarmEvent>, CommandError>>,
}

/// An API token (digest only).
#[derive(Clone)]
pub struct Token {
    /// Holder, recorded as `by`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token.
    pub digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What the API needs to read alarms and ask the engine to act.
#[derive(Clone, Debug)]
pub struct AlarmsHandle {
    /// The snapshot.
    pub board: Arc<Board>,
    /// Commands to the engine.
    pub commands: mpsc::Sender<CommandMsg>,
    /// Accepted tokens.
    pub tokens: Arc<Vec<Token>>,
    /// Whether reading needs a token (`[api] reads`).
    pub reads: crate::config::ReadAccess,
}

impl AlarmsHandle {
    /// The token holder and role for a presented bearer token.
    pub fn authenticate(&self, bearer: &str) -> Option<(&str, Role)> {
        let d: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        // Compare every digest fully (no early exit on the first differing byte).
        let mut found = None;
        for t in self.tokens.iter() {
            let diff = t
                .digest
                .iter()
                .zip(d.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some((t.name.as_str(), t.role));
            }
        }
        found
    }

    /// Sends a command and waits for the engine's answer.
    pub async fn send(
        &self,
        cmd: Command,
    ) -> Result<Result<Vec<AlarmEvent>, CommandError>, &'static str> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(CommandMsg { cmd, reply: tx })
            .await
            .map_err(|_| "the alarm engine is not running")?;
        rx.await
            .map_err(|_| "the alarm engine stopped before answering")
    }
}

//! What every receiver kind shares: its delivery settings (timeout, expiry, retry cap, fault
//! threshold, queue capacity) and reading its optional secrets.

use std::time::Duration;

use serde::Deserialize;

use crate::check::Problems;
use crate::secret::{Secret, SecretRef};

/// Delivery settings every receiver has.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    /// Per-attempt timeout.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// A notification not delivered this long after it was created expires (reported).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_expire")]
    pub expire_after: Duration,
    /// Cap of the jittered exponential retry backoff (30 s: a receiver that comes back gets its
    /// pending notifications within about this long).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// Every attempt failing for this long (no success in between) makes the receiver a gateway
    /// fault: `/readyz` names it and `gateway:receiver {id}` goes to the other receivers.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_fault_after")]
    pub fault_after: Duration,
    /// Send cleared / fault-cleared / reset notifications to this receiver.
    #[serde(default = "default_true")]
    pub send_clear: bool,
    /// Pending notifications for this receiver; when full the lowest-priority, oldest one is
    /// evicted (counted, logged at ERROR).
    #[serde(default = "default_capacity")]
    pub queue_capacity: usize,
}

impl Delivery {
    /// Checks the delivery settings of the receiver at `path` (`receivers[i]`).
    pub fn check(&self, path: &str, p: &mut Problems) {
        if self.queue_capacity == 0 {
            p.err(format!("{path}.queue_capacity"), "must be at least 1");
        }
        if self.timeout.is_zero() {
            p.err(format!("{path}.timeout"), "must be positive");
        }
        if self.expire_after < self.timeout {
            p.err(
                format!("{path}.expire_after"),
                "must be at least the per-attempt timeout",
            );
        }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            expire_after: default_expire(),
            backoff_max: default_backoff_max(),
            fault_after: default_fault_after(),
            send_clear: true,
            queue_capacity: default_capacity(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_expire() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_fault_after() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}
fn default_capacity() -> usize {
    10_000
}

/// Reads an optional secret at `path`: `None` when it is set and unreadable (reported in `p`),
/// else `Some` of the value (or of `None` when not configured).
pub(super) fn read(
    s: Option<&SecretRef>,
    path: String,
    p: &mut Problems,
) -> Option<Option<Secret>> {
    match s {
        None => Some(None),
        Some(s) => s.resolve_at(&path, p).map(Some),
    }
}

//! Sources: tasks that own a connection and turn what they read into [`Sample`]s.
//!
//! Invariants: a source never returns an error for a runtime I/O failure; it produces Bad samples
//! and keeps trying with backoff. It stops only when its cancellation token fires, and it waits
//! (never drops) when the sample queue is full.
//!
//! [`Sample`]: crate::model::Sample

pub mod modbus;
pub mod mqtt;

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: attempt 0 waits up to `base`, doubling up to `cap`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let ceiling = exp.min(cap);
    let lo = ceiling / 2;
    let jitter = rand::rng().random_range(0.0..=1.0);
    lo + (ceiling - lo).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_grows() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for a in 0..40 {
            let d = backoff(a, base, cap);
            assert!(d <= cap, "{a}: {d:?}");
            assert!(d >= base.saturating_mul(1 << a.min(16)).min(cap) / 2);
        }
    }
}

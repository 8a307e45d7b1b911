//! Retry pacing shared by every component that reconnects or retries (sources, outputs,
//! receivers, the task supervisor).

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

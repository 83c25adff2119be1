//! Retry timing shared by rollout tasks and jobs: exponential backoff with
//! full jitter, and lease expiry.

use std::time::Duration;

use chrono::NaiveDateTime;
use rand::Rng;

/// The longest delay before jitter: `min(max, base * 2^(attempt-1))`, at
/// least 1 ms. `attempt` counts from 1; values outside 1..=30 are clamped.
pub fn ceiling_ms(attempt: i32, base_ms: i64, max_ms: i64) -> i64 {
    base_ms
        .saturating_mul(1i64 << (attempt.clamp(1, 30) - 1) as u32)
        .min(max_ms)
        .max(1)
}

/// Exponential backoff with full jitter: a random delay in
/// `[0, ceiling_ms(attempt, base, max)]`, so retries of many tasks that failed
/// together spread out instead of arriving together.
pub fn backoff(attempt: i32, base_ms: i64, max_ms: i64) -> Duration {
    let ceiling = ceiling_ms(attempt, base_ms, max_ms);
    Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling as u64))
}

/// When a lease taken (or extended) at `now` for `lease` runs out.
pub fn lease_expiry(now: NaiveDateTime, lease: Duration) -> NaiveDateTime {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_maximum() {
        assert_eq!(ceiling_ms(1, 500, 30_000), 500);
        assert_eq!(ceiling_ms(2, 500, 30_000), 1_000);
        assert_eq!(ceiling_ms(4, 500, 30_000), 4_000);
        assert_eq!(ceiling_ms(7, 500, 30_000), 30_000);
        assert_eq!(ceiling_ms(1_000, 500, 30_000), 30_000);
        // Nonsense attempts clamp instead of overflowing or going negative.
        assert_eq!(ceiling_ms(0, 500, 30_000), 500);
        assert_eq!(ceiling_ms(-5, 500, 30_000), 500);
        assert_eq!(ceiling_ms(30, i64::MAX / 2, i64::MAX), i64::MAX);
        assert_eq!(ceiling_ms(3, 0, 10), 1);
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_varies() {
        let delays: Vec<u128> = (0..200)
            .map(|_| backoff(3, 100, 10_000).as_millis())
            .collect();
        assert!(delays.iter().all(|d| *d <= 400));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 20,
            "full jitter spreads retries: {distinct:?}"
        );
    }
}

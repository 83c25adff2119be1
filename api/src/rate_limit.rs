//! Per-key rate limiting of tenant routes: a token bucket per tenant key,
//! in this process's memory (each API replica limits on its own, so the
//! fleet-wide ceiling is the per-process rate × replicas). Over the limit a
//! request answers 429 with `Retry-After`. Operators are not limited.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Requests per second a tenant key may make by default; a burst of twice
/// that is allowed.
pub const DEFAULT_PER_S: u32 = 50;

struct Limiter {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

static LIMITER: OnceLock<Limiter> = OnceLock::new();

fn limiter() -> &'static Limiter {
    LIMITER.get_or_init(|| Limiter::new(DEFAULT_PER_S))
}

impl Limiter {
    fn new(per_s: u32) -> Limiter {
        let per_s = f64::from(per_s.max(1));
        Limiter {
            per_s,
            burst: per_s * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock limits nothing rather than everything.
            return Ok(());
        };
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_s)
            .min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.per_s))
        }
    }
}

/// Sets the rate (requests per second per key) before the server starts;
/// later calls change nothing.
pub fn configure(per_s: u32) {
    let _ = LIMITER.set(Limiter::new(per_s));
}

/// Takes one request from `key`'s budget, or says how long to wait.
pub fn take(key: &str) -> Result<(), Duration> {
    limiter().take(key, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::new(2);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(l.take("k", t0).is_ok());
        }
        let wait = l.take("k", t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(l.take("other", t0).is_ok(), "keys are limited apart");
        assert!(l.take("k", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take("k", t0 + Duration::from_millis(500)).is_err());
    }
}

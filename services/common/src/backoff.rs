//! Exponential backoff with a cap, the one every service retries with: an
//! FTP endpoint that keeps failing (server down, wrong password), a pull
//! request, a parser transaction, a sink commit. Retries slow down instead
//! of hammering what failed, and with jitter, clients that failed together
//! (a server restart) do not all retry in the same instant.

use std::time::Duration;

use rand::Rng;

/// The delays before successive retries: `initial`, `2 × initial`, … up to
/// `max`; with jitter, each scaled by a random factor in `[0.5, 1.0]`
/// ([`Backoff::next_delay`]) or drawn from `[0, delay]`
/// ([`Backoff::full_jitter`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// From the one configuration shape every component uses:
    /// `<what>_backoff_initial_ms` and `<what>_backoff_max_ms`.
    pub fn from_ms(initial_ms: u64, max_ms: u64) -> Self {
        Self::new(
            Duration::from_millis(initial_ms),
            Duration::from_millis(max_ms),
        )
    }

    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The delay before retry number `attempt` (0-based), without jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial
            .checked_mul(1u32 << attempt.min(30))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before the next retry, without jitter, after one more
    /// failure.
    pub fn next_base(&mut self) -> Duration {
        let delay = self.ceiling(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// A random delay in `[0, ceiling(attempt)]` ("full jitter"), for many
    /// clients retrying one struggling server.
    pub fn full_jitter(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    /// The delay before the next retry, with jitter.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_base();
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<u128> = (0..6).map(|_| b.next_base().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.failures(), 6);
        b.reset();
        assert_eq!(b.next_base(), Duration::from_millis(100));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..1000 {
            assert!(b.next_base() <= Duration::from_secs(300));
        }
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn full_jitter_stays_below_the_ceiling_and_spreads() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(200), Duration::from_secs(1));
        let delays: Vec<_> = (0..200).map(|_| b.full_jitter(5)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "jitter spreads the delays"
        );
    }

    #[test]
    fn cap_below_initial_is_raised_to_initial() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.next_base(), Duration::from_secs(5));
        assert_eq!(b.next_base(), Duration::from_secs(5));
    }
}

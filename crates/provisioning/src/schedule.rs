//! When to check next: a sans-IO schedule, fed the time.

use std::time::{Duration, Instant};

use crate::settings::MIN_CHECK_INTERVAL;

/// How soon a failed check is retried: `initial`, doubled after every
/// further failure, at most `max` and never later than the regular
/// interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        }
    }
}

/// The next provisioning check. It reads no clock: every method takes `now`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use provisioning::{RetryPolicy, Schedule};
///
/// let start = Instant::now();
/// let mut schedule = Schedule::new(start, RetryPolicy::default());
/// assert!(schedule.is_due(start)); // the first check is due at once
///
/// let day = Duration::from_secs(86_400);
/// schedule.handle_success(start, day);
/// assert_eq!(schedule.next_check(), start + day);
///
/// // A NOTIFY with Event: check-sync makes a check due now.
/// let later = start + Duration::from_secs(5);
/// schedule.handle_check_sync(later);
/// assert!(schedule.is_due(later));
///
/// // Failures back off: 30 s, 60 s, 120 s, ...
/// schedule.handle_failure(later, day);
/// assert_eq!(schedule.next_check(), later + Duration::from_secs(30));
/// schedule.handle_failure(later, day);
/// assert_eq!(schedule.next_check(), later + Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Instant,
    failures: u32,
    retry: RetryPolicy,
}

impl Schedule {
    /// A schedule whose first check is due at `now`.
    #[must_use]
    pub fn new(now: Instant, retry: RetryPolicy) -> Self {
        Self {
            next: now,
            failures: 0,
            retry,
        }
    }

    /// When the next check is due (absolute).
    #[must_use]
    pub fn next_check(&self) -> Instant {
        self.next
    }

    /// Whether a check is due at `now`.
    #[must_use]
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Consecutive failed checks so far.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A check-sync request (SIP NOTIFY, `Event: check-sync`) arrived: a
    /// check is due now.
    pub fn handle_check_sync(&mut self, now: Instant) {
        self.next = self.next.min(now);
    }

    /// A check finished at `now`; the next is due after `interval` (at
    /// least [`MIN_CHECK_INTERVAL`], at most the longest a document may ask
    /// for, 30 days).
    pub fn handle_success(&mut self, now: Instant, interval: Duration) {
        self.failures = 0;
        self.next = now + bounded(interval);
    }

    /// A check failed at `now`; it is retried with back-off, never later
    /// than `interval`.
    pub fn handle_failure(&mut self, now: Instant, interval: Duration) {
        let doubled = self
            .retry
            .initial
            .saturating_mul(1u32 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        self.next = now + doubled.min(self.retry.max).min(bounded(interval));
    }
}

/// `interval` within [`MIN_CHECK_INTERVAL`] and the longest check interval
/// a document may ask for, so that adding it to an instant cannot
/// overflow.
fn bounded(interval: Duration) -> Duration {
    let longest = Duration::from_secs(u64::from(config_export::MAX_CHECK_INTERVAL));
    interval.clamp(MIN_CHECK_INTERVAL, longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_of_forever_is_thirty_days() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, RetryPolicy::default());
        schedule.handle_success(start, Duration::MAX);
        assert_eq!(
            schedule.next_check() - start,
            Duration::from_secs(30 * 86_400)
        );
        schedule.handle_failure(start, Duration::MAX);
        assert!(schedule.next_check() - start <= Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn back_off_is_capped_and_success_resets_it() {
        let start = Instant::now();
        let day = Duration::from_secs(86_400);
        let mut schedule = Schedule::new(start, RetryPolicy::default());
        let mut now = start;
        let mut delays = Vec::new();
        for _ in 0..10 {
            schedule.handle_failure(now, day);
            delays.push((schedule.next_check() - now).as_secs());
            now = schedule.next_check();
        }
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        schedule.handle_success(now, day);
        assert_eq!(schedule.failures(), 0);
        schedule.handle_failure(now, day);
        assert_eq!(schedule.next_check() - now, Duration::from_secs(30));
    }

    #[test]
    fn retry_never_waits_longer_than_the_interval_and_interval_has_a_floor() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, RetryPolicy::default());
        for _ in 0..8 {
            schedule.handle_failure(start, Duration::from_secs(300));
        }
        assert_eq!(schedule.next_check() - start, Duration::from_secs(300));
        schedule.handle_success(start, Duration::from_secs(1));
        assert_eq!(schedule.next_check() - start, MIN_CHECK_INTERVAL);
    }

    #[test]
    fn check_sync_never_postpones() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, RetryPolicy::default());
        schedule.handle_check_sync(start + Duration::from_secs(10));
        assert_eq!(schedule.next_check(), start);
    }

    #[test]
    fn a_week_of_daily_checks_in_virtual_time() {
        let start = Instant::now();
        let day = Duration::from_secs(86_400);
        let mut schedule = Schedule::new(start, RetryPolicy::default());
        let mut now = start;
        let mut checks = 0;
        while now < start + 7 * day {
            if schedule.is_due(now) {
                checks += 1;
                schedule.handle_success(now, day);
            }
            now = schedule.next_check();
        }
        assert_eq!(checks, 7);
    }
}

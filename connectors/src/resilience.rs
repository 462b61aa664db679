//! Resilience policies for connector calls, as plain state machines so the
//! HTTP client (issue 5) and tests share them: a circuit breaker per
//! connector, and the retry schedule. Time is passed in (`Instant`), never
//! read here, so every transition is testable without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When the breaker opens and how it recovers.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Calls remembered for the ratios.
    pub window: usize,
    /// Fewest calls in the window before the ratios count.
    pub min_calls: usize,
    /// Open when this share of the window failed…
    pub failure_ratio: f64,
    /// …or was slower than `slow_call`.
    pub slow_ratio: f64,
    pub slow_call: Duration,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Successful probes needed to close again.
    pub probes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            min_calls: 10,
            failure_ratio: 0.5,
            slow_ratio: 0.8,
            slow_call: Duration::from_secs(2),
            open_for: Duration::from_secs(10),
            probes: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Failing fast until the instant.
    Open {
        until: Instant,
    },
    /// Letting probes through; `passed` of them succeeded so far.
    HalfOpen {
        in_flight: usize,
        passed: usize,
    },
}

/// How a call ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Success,
    /// The connector failed (5xx, timeout, connection error); a 4xx about
    /// the request itself is a `Success` for the breaker.
    Failure,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// (failed, slow) per recent call, oldest first.
    recent: VecDeque<(bool, bool)>,
}

/// Refused without calling: the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            recent: VecDeque::new(),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Asks to make a call now. `Ok` must be followed by [`Self::record`].
    pub fn admit(&mut self, now: Instant) -> Result<(), Rejected> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } if now < until => Err(Rejected {
                retry_after: until - now,
            }),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen {
                    in_flight: 1,
                    passed: 0,
                };
                Ok(())
            }
            BreakerState::HalfOpen { in_flight, passed } => {
                // One probe at a time, until enough have passed.
                if in_flight + passed >= self.config.probes || in_flight > 0 {
                    Err(Rejected {
                        retry_after: Duration::from_millis(100),
                    })
                } else {
                    self.state = BreakerState::HalfOpen {
                        in_flight: in_flight + 1,
                        passed,
                    };
                    Ok(())
                }
            }
        }
    }

    /// Records how an admitted call ended and how long it took.
    pub fn record(&mut self, now: Instant, result: CallResult, took: Duration) {
        let failed = result == CallResult::Failure;
        let slow = took > self.config.slow_call;
        match self.state {
            BreakerState::HalfOpen { in_flight, passed } => {
                if failed || slow {
                    self.trip(now);
                } else if passed + 1 >= self.config.probes {
                    self.state = BreakerState::Closed;
                    self.recent.clear();
                } else {
                    self.state = BreakerState::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        passed: passed + 1,
                    };
                }
            }
            // A call admitted before the breaker opened: nothing to learn.
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.recent.push_back((failed, slow));
                while self.recent.len() > self.config.window {
                    self.recent.pop_front();
                }
                let n = self.recent.len();
                if n >= self.config.min_calls {
                    let failures = self.recent.iter().filter(|(f, _)| *f).count() as f64 / n as f64;
                    let slows = self.recent.iter().filter(|(_, s)| *s).count() as f64 / n as f64;
                    if failures >= self.config.failure_ratio || slows >= self.config.slow_ratio {
                        self.trip(now);
                    }
                }
            }
        }
    }

    fn trip(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.config.open_for,
        };
        self.recent.clear();
    }
}

/// Whether a call may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// Reads, and writes carrying an idempotency key.
    Yes,
    /// A write without a key: sending it twice could act twice.
    No,
}

/// The retry schedule: at most `max_attempts` calls in all, waits growing
/// exponentially from `base` with full jitter, capped at `max_wait`; a
/// server's `Retry-After` is honoured (up to `max_wait`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            max_wait: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1` (attempts count from
    /// 1), or `None` to give up. `jitter` is uniform in [0, 1).
    pub fn next_wait(
        &self,
        attempt: u32,
        retryable: Retryable,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if retryable == Retryable::No || attempt >= self.max_attempts {
            return None;
        }
        if let Some(server) = retry_after {
            return (server <= self.max_wait).then_some(server);
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_wait);
        Some(ceiling.mul_f64(jitter.clamp(0.0, 1.0)))
    }
}

/// Parses `Retry-After` given in seconds (the HTTP-date form is treated as
/// absent: the client then uses its own backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u64>().ok().map(Duration::from_secs))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            window: 10,
            min_calls: 4,
            failure_ratio: 0.5,
            slow_ratio: 0.75,
            slow_call: Duration::from_millis(500),
            open_for: Duration::from_secs(10),
            probes: 2,
        })
    }

    const FAST: Duration = Duration::from_millis(10);

    #[test]
    fn opens_on_failures_fails_fast_then_probes_and_closes() {
        let t0 = Instant::now();
        let mut b = breaker();
        for r in [
            CallResult::Success,
            CallResult::Failure,
            CallResult::Success,
        ] {
            b.admit(t0).expect("closed");
            b.record(t0, r, FAST);
        }
        assert_eq!(b.state(), BreakerState::Closed, "too few calls to judge");
        b.admit(t0).expect("closed");
        b.record(t0, CallResult::Failure, FAST);
        assert!(
            matches!(b.state(), BreakerState::Open { .. }),
            "2 of 4 failed"
        );
        let refused = b.admit(t0 + Duration::from_secs(3)).expect_err("open");
        assert_eq!(refused.retry_after, Duration::from_secs(7));
        // After the wait, one probe at a time.
        let later = t0 + Duration::from_secs(10);
        b.admit(later).expect("first probe");
        assert!(b.admit(later).is_err(), "second probe waits for the first");
        b.record(later, CallResult::Success, FAST);
        b.admit(later).expect("second probe");
        b.record(later, CallResult::Success, FAST);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_and_slow_calls_trip_it() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..4 {
            b.admit(t0).expect("closed");
            b.record(t0, CallResult::Success, Duration::from_secs(1));
        }
        assert!(matches!(b.state(), BreakerState::Open { .. }), "all slow");
        let later = t0 + Duration::from_secs(10);
        b.admit(later).expect("probe");
        b.record(later, CallResult::Failure, FAST);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: later + Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn retries_only_what_is_safe_and_honours_retry_after() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_wait(1, Retryable::No, None, 0.5), None);
        assert_eq!(
            p.next_wait(3, Retryable::Yes, None, 0.5),
            None,
            "3 attempts at most"
        );
        assert_eq!(
            p.next_wait(1, Retryable::Yes, None, 0.5),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            p.next_wait(2, Retryable::Yes, None, 0.999_999)
                .map(|d| d.as_millis()),
            Some(399)
        );
        assert_eq!(
            p.next_wait(1, Retryable::Yes, Some(Duration::from_secs(1)), 0.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.next_wait(1, Retryable::Yes, Some(Duration::from_secs(60)), 0.0),
            None,
            "too long to wait"
        );
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}

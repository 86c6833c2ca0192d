//! Retries with jittered exponential backoff that honour the server's `Retry-After`. The
//! closure re-sends the bytes it captured, so every attempt carries the identical upload.

use std::time::Duration;

use crate::transport::TransportError;

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First backoff.
    pub base: Duration,
    /// Largest single wait (also caps a server's `Retry-After`).
    pub max: Duration,
    /// Attempts in all before the aggregator counts as unreachable.
    pub attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
            attempts: 12,
        }
    }
}

/// A uniform fraction in [0.5, 1.0) from the OS: "equal jitter", so that sites that failed
/// together do not retry together.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    // Without OS randomness the jitter is only less spread; nothing secret depends on it.
    let _ = getrandom::fill(&mut b);
    0.5 + f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX) / 2.0
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (1-based retry count), given the server's hint.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        let backoff = exp.min(self.max).mul_f64(jitter());
        retry_after
            .map_or(backoff, |h| h.max(backoff))
            .min(self.max)
    }

    /// Runs `f` until it succeeds, fails with anything but [`TransportError::Retry`], or the
    /// attempts are spent (then [`TransportError::Unreachable`]).
    pub fn run<T>(
        &self,
        mut f: impl FnMut() -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(TransportError::Retry { retry_after }) => {
                    attempt += 1;
                    if attempt >= self.attempts {
                        return Err(TransportError::Unreachable(format!(
                            "no answer after {attempt} attempts"
                        )));
                    }
                    std::thread::sleep(self.wait(attempt, retry_after));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_transient_failures_and_gives_up() {
        let p = RetryPolicy {
            base: Duration::from_micros(1),
            max: Duration::from_micros(10),
            attempts: 3,
        };
        let mut sent = Vec::new();
        let r: Result<(), _> = p.run(|| {
            sent.push(b"same".to_vec());
            Err(TransportError::Retry { retry_after: None })
        });
        assert!(matches!(r, Err(TransportError::Unreachable(_))));
        assert_eq!(sent, vec![b"same".to_vec(); 3]);
        let mut n = 0;
        let r: Result<(), _> = p.run(|| {
            n += 1;
            Err(TransportError::Auth("pin".into()))
        });
        assert!(matches!(r, Err(TransportError::Auth(_))));
        assert_eq!(n, 1);
        // The server's hint is honoured but capped.
        assert_eq!(p.wait(1, Some(Duration::from_secs(9))), p.max);
        assert!(p.wait(1, Some(Duration::from_micros(5))) >= Duration::from_micros(5));
    }
}

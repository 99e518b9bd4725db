//! Restart policy arithmetic: whether an ended run is restarted, after
//! which delay, and when a crash loop ends the attempts. Pure functions of
//! the policy, the ending and the recent restart times; no I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::api::{RestartMode, State};
use crate::daemon::store::RestartPolicy;

/// What to do after a run ended by itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Leave it ended.
    Stay,
    /// Relaunch after this delay.
    RestartAfter(Duration),
    /// Too many restarts within the interval: give up.
    CrashLoop,
}

/// Backoff state carried between runs of one process.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Delay used for the previous automatic restart.
    pub last_delay: Option<Duration>,
    /// When the recent automatic restarts happened (within the interval).
    pub recent: VecDeque<Instant>,
}

impl Backoff {
    /// A manual Start/Restart starts the counting over.
    pub fn reset(&mut self) {
        self.last_delay = None;
        self.recent.clear();
    }
}

/// Decides the fate of a run that ended in `state` after running `uptime`.
/// Records the restart in `backoff` when it decides to restart.
pub fn decide(
    policy: &RestartPolicy,
    state: State,
    uptime: Duration,
    now: Instant,
    backoff: &mut Backoff,
) -> Verdict {
    let wanted = match policy.policy {
        RestartMode::Always => matches!(state, State::Exited | State::Failed),
        RestartMode::OnFailure => state == State::Failed,
        RestartMode::No => false,
    };
    if !wanted {
        return Verdict::Stay;
    }
    let interval = Duration::from_secs(policy.limit_interval_sec.into());
    while backoff
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > interval)
    {
        backoff.recent.pop_front();
    }
    if backoff.recent.len() >= policy.limit as usize {
        return Verdict::CrashLoop;
    }
    if uptime >= Duration::from_secs(policy.reset_sec.into()) {
        backoff.last_delay = None;
    }
    let first = Duration::from_millis(policy.delay_ms);
    let max = Duration::from_millis(policy.delay_max_ms);
    let delay = match backoff.last_delay {
        None => first,
        // Saturating: a client may ask for any u64 of milliseconds.
        Some(d) => d.saturating_mul(2).min(max).max(first),
    };
    backoff.last_delay = Some(delay);
    backoff.recent.push_back(now);
    Verdict::RestartAfter(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &str) -> RestartPolicy {
        RestartPolicy {
            policy: RestartMode::parse(p).unwrap_or(RestartMode::No),
            delay_ms: 100,
            delay_max_ms: 1000,
            reset_sec: 60,
            limit: 5,
            limit_interval_sec: 60,
        }
    }

    #[test]
    fn huge_delays_saturate_instead_of_panicking() {
        // Regression (review): RestartDelayMs near u64::MAX overflowed the
        // doubling and panicked a debug build.
        let mut p = policy("always");
        (p.delay_ms, p.delay_max_ms) = (u64::MAX, u64::MAX);
        let mut b = Backoff::default();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(matches!(
                decide(&p, State::Failed, Duration::ZERO, now, &mut b),
                Verdict::RestartAfter(_)
            ));
        }
    }

    #[test]
    fn policy_selects_endings() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(
            decide(&policy("no"), State::Failed, Duration::ZERO, now, &mut b),
            Verdict::Stay
        );
        assert_eq!(
            decide(
                &policy("on-failure"),
                State::Exited,
                Duration::ZERO,
                now,
                &mut b
            ),
            Verdict::Stay
        );
        assert!(matches!(
            decide(
                &policy("on-failure"),
                State::Failed,
                Duration::ZERO,
                now,
                &mut b
            ),
            Verdict::RestartAfter(_)
        ));
        assert!(matches!(
            decide(
                &policy("always"),
                State::Exited,
                Duration::ZERO,
                now,
                &mut b
            ),
            Verdict::RestartAfter(_)
        ));
        assert_eq!(
            decide(
                &policy("always"),
                State::Stopped,
                Duration::ZERO,
                now,
                &mut b
            ),
            Verdict::Stay
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_then_crash_loop() {
        let now = Instant::now();
        let mut b = Backoff::default();
        let p = policy("on-failure");
        let delays: Vec<Verdict> = (0..6)
            .map(|_| decide(&p, State::Failed, Duration::ZERO, now, &mut b))
            .collect();
        let ms = |m| Verdict::RestartAfter(Duration::from_millis(m));
        assert_eq!(
            delays,
            vec![
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                Verdict::CrashLoop
            ]
        );
    }

    #[test]
    fn long_uptime_resets_backoff_and_old_restarts_expire() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let p = policy("always");
        for _ in 0..3 {
            decide(&p, State::Failed, Duration::ZERO, t0, &mut b);
        }
        let later = t0 + Duration::from_secs(120);
        assert_eq!(
            decide(&p, State::Failed, Duration::from_secs(61), later, &mut b),
            Verdict::RestartAfter(Duration::from_millis(100))
        );
        assert_eq!(
            b.recent.len(),
            1,
            "restarts older than the interval no longer count"
        );
    }
}

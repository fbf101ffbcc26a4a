//! Every deadline of a core in one table, in the shape of quinn-proto's
//! `TimerTable`: an array indexed by a [`Timer`], so that
//! [`Core::next_timeout`](crate::Core::next_timeout) is one `min`.
//!
//! Each role arms its own timers and stops them when it ends: a follower
//! or candidate its election (and a follower its probe of a silent
//! leader), a leader its heartbeat (and a transfer's deadline). The
//! deadline of the pending client requests is armed in every role.
//! Hand-written: the table is a dozen lines, and the only crates that
//! offer one are whole timer wheels with their own clocks.

use crate::types::Millis;

/// One deadline a core may be waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Timer {
    /// Follower or candidate: the election timeout, after which it asks
    /// for pre-votes (or, as a learner, waits on).
    Election,
    /// Follower: probe the address of a leader that fell silent
    /// ([`Config::probe_leader`](crate::Config::probe_leader)).
    Probe,
    /// Leader: the next heartbeat round, and the check that a majority
    /// still answers.
    Heartbeat,
    /// Leader: a leadership transfer gives up and the leader leads on.
    Transfer,
    /// The earliest deadline of a pending write or read, or of the oldest
    /// request held while no leader is heard.
    Requests,
}

impl Timer {
    /// Every timer, in table order.
    const ALL: [Timer; 5] = [
        Timer::Election,
        Timer::Probe,
        Timer::Heartbeat,
        Timer::Transfer,
        Timer::Requests,
    ];
}

/// The deadline of each [`Timer`], if armed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct TimerTable([Option<Millis>; Timer::ALL.len()]);

impl TimerTable {
    /// Arm `timer` for `at` (replacing any earlier deadline).
    pub(super) fn set(&mut self, timer: Timer, at: Millis) {
        self.0[timer as usize] = Some(at);
    }

    /// Arm `timer` for `at`, or stop it when `at` is `None`.
    pub(super) fn set_or_stop(&mut self, timer: Timer, at: Option<Millis>) {
        self.0[timer as usize] = at;
    }

    /// Disarm `timer`.
    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// The deadline of `timer`, if armed.
    pub(super) fn get(&self, timer: Timer) -> Option<Millis> {
        self.0[timer as usize]
    }

    /// Whether `timer` is armed and its deadline has come by `now`.
    pub(super) fn expired(&self, timer: Timer, now: Millis) -> bool {
        self.get(timer).is_some_and(|at| now >= at)
    }

    /// The earliest armed deadline.
    pub(super) fn next_timeout(&self) -> Option<Millis> {
        self.0.iter().flatten().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_timeout_is_the_earliest_armed_deadline() {
        let mut timers = TimerTable::default();
        assert_eq!(timers.next_timeout(), None);
        timers.set(Timer::Heartbeat, Millis(50));
        timers.set(Timer::Requests, Millis(30));
        assert_eq!(timers.next_timeout(), Some(Millis(30)));
        assert!(timers.expired(Timer::Requests, Millis(30)));
        assert!(!timers.expired(Timer::Heartbeat, Millis(49)));
        assert!(!timers.expired(Timer::Election, Millis(1000)));
        timers.stop(Timer::Requests);
        assert_eq!(timers.next_timeout(), Some(Millis(50)));
        timers.set_or_stop(Timer::Heartbeat, None);
        timers.set(Timer::Election, Millis(70));
        assert_eq!(timers.get(Timer::Election), Some(Millis(70)));
        assert_eq!(timers.next_timeout(), Some(Millis(70)));
        for timer in Timer::ALL {
            timers.stop(timer);
        }
        assert_eq!(timers.next_timeout(), None);
    }
}

//! The lock-delay rule (Consul's session `LockDelay`): when a session that holds locks is
//! invalidated, none of its keys can be acquired again until the session's lock delay has
//! passed, so a holder that lost its session without knowing it yet has time to stop.
//!
//! Applying a batch only collects which keys were released and with what delay
//! ([`Changes::lock_delays`]), so the apply stays the same on every server whatever its clock.
//! [`LockDelays`] turns them into deadlines as each server applies them, and the leader asks
//! it before proposing an acquire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::apply::Changes;
use crate::model::{Command, LockOp};

/// Keys released by a session invalidation, and until when they stay unlockable.
#[derive(Debug, Default)]
pub(crate) struct LockDelays(Mutex<HashMap<String, Instant>>);

impl LockDelays {
    /// Starts the delay of every key the applied batch's session invalidations released,
    /// forgetting delays that have passed.
    pub(crate) fn record(&self, changes: &Changes) {
        if changes.lock_delays.is_empty() {
            return;
        }
        let mut d = crate::sync::lock(&self.0);
        let now = Instant::now();
        d.retain(|_, until| *until > now);
        for (k, ms) in &changes.lock_delays {
            d.insert(k.clone(), now + Duration::from_millis(*ms));
        }
    }

    /// Whether `cmd` is a lock acquire of a key still in its delay: it fails without being
    /// proposed.
    pub(crate) fn refuses(&self, cmd: &Command) -> bool {
        let Command::KvSet {
            key,
            lock: Some(LockOp::Acquire(_)),
            ..
        } = cmd
        else {
            return false;
        };
        crate::sync::lock(&self.0)
            .get(key)
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, lock: Option<LockOp>) -> Command {
        Command::KvSet {
            key: key.into(),
            value: Vec::new(),
            flags: 0,
            cas: None,
            lock,
        }
    }

    #[test]
    fn only_an_acquire_of_a_released_key_waits_out_its_delay() {
        let delays = LockDelays::default();
        let acquire = |k: &str| set(k, Some(LockOp::Acquire("s2".into())));
        assert!(!delays.refuses(&acquire("held")));
        delays.record(&Changes {
            lock_delays: vec![("held".into(), 60_000), ("brief".into(), 0)],
            ..Changes::default()
        });
        assert!(delays.refuses(&acquire("held")));
        assert!(!delays.refuses(&acquire("brief")));
        assert!(!delays.refuses(&acquire("other")));
        assert!(!delays.refuses(&set("held", None)));
        assert!(!delays.refuses(&set("held", Some(LockOp::Release("s2".into())))));
    }
}

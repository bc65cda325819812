//! A bounded set of recently seen keys: what gossip-carried requests (user events, queries,
//! exec) are deduplicated by, whatever the gossip retransmits.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// The last `cap` keys inserted, oldest forgotten first.
#[derive(Debug)]
pub(crate) struct Recent<K> {
    order: VecDeque<K>,
    set: HashSet<K>,
    cap: usize,
}

impl<K: Clone + Eq + Hash> Recent<K> {
    pub(crate) fn new(cap: usize) -> Self {
        Recent {
            order: VecDeque::with_capacity(cap.min(1024)),
            set: HashSet::new(),
            cap,
        }
    }

    /// Remembers `k`; whether it was new.
    pub(crate) fn insert(&mut self, k: K) -> bool {
        if !self.set.insert(k.clone()) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_remembers_the_last_ones_only() {
        let mut r = Recent::new(2);
        assert!(r.insert(1));
        assert!(!r.insert(1));
        assert!(r.insert(2));
        assert!(r.insert(3));
        assert!(r.insert(1), "1 was forgotten");
        assert!(!r.insert(3));
    }
}

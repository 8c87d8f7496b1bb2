//! What this replica has just written of records it will write again soon, to spare a
//! JetStream operation per task:
//! - the revisions of records its intake has just created, so that the first delivery of their
//!   submissions writes over them without reading them back (one round trip and one decode less
//!   per task; the record itself is rebuilt from the submission, which is what intake built it
//!   from);
//! - the records its dispatcher created with their first write (a fresh delivery ahead of
//!   intake), so that intake does not try a create bound to fail (a KV write and its answer).
//!
//! Hints only: every write is compare-and-swap on the revision, so a stale or wrong entry costs
//! a failed write and a read, never a lost change; a missing one costs the operation it spares.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

/// Entries kept; the oldest go first. At 24 bytes of key and value each, plus the table's
/// overhead and the order queue, this bounds the cache to about 15 MB however long the queues
/// are: enough for intake to run 200,000 tasks ahead of dispatch.
const CAPACITY: usize = 1 << 18;

/// What this replica has just written, by hashed task ID.
pub struct Revisions {
    inner: Mutex<Inner>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Inner {
    /// Task ID (hashed) → (submission's stream sequence, record revision) of intake's creates.
    created: Recent<(u64, u64)>,
    /// Task ID (hashed) → the stream sequence of the submission whose delivery created it.
    dispatched: Recent<u64>,
}

/// Entries by hashed task ID, at most [`CAPACITY`]; the oldest go first.
struct Recent<V> {
    by_id: HashMap<u64, V>,
    order: VecDeque<u64>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            by_id: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Recent<V> {
    fn insert(&mut self, key: u64, value: V) {
        if self.by_id.insert(key, value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// The entry, used up. Its place in `order` goes when it comes round; a re-inserted key is
    /// then dropped early, which only costs the operation the entry would have spared.
    fn take(&mut self, key: u64) -> Option<V> {
        self.by_id.remove(&key)
    }
}

impl Default for Revisions {
    fn default() -> Self {
        Revisions {
            inner: Mutex::new(Inner::default()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Revisions {
    fn key(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Intake created the record of task `id`, from the submission at `seq`, as `revision`.
    pub fn created(&self, id: &str, seq: u64, revision: u64) {
        let key = self.key(id);
        self.inner().created.insert(key, (seq, revision));
    }

    /// The dispatcher created task `id`'s record from the submission at `seq`.
    pub fn dispatched(&self, id: &str, seq: u64) {
        let key = self.key(id);
        self.inner().dispatched.insert(key, seq);
    }

    /// Whether the dispatcher created task `id`'s record from the submission at `seq` (then
    /// intake has nothing to create); the entry is used up.
    pub fn take_dispatched(&self, id: &str, seq: u64) -> bool {
        let key = self.key(id);
        self.inner().dispatched.take(key) == Some(seq)
    }

    /// The revision intake created task `id`'s record at, if it did so from the submission at
    /// `seq`; the entry is used up (a later write has a later revision).
    pub fn take(&self, id: &str, seq: u64) -> Option<u64> {
        let key = self.key(id);
        match self.inner().created.take(key) {
            Some((s, revision)) if s == seq => Some(revision),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_used_once_and_only_for_its_own_submission() {
        let r = Revisions::default();
        r.created("t1", 10, 100);
        assert_eq!(r.take("t1", 11), None, "another submission with the same ID");
        r.created("t1", 10, 100);
        assert_eq!(r.take("t1", 10), Some(100));
        assert_eq!(r.take("t1", 10), None, "used up");
        assert_eq!(r.take("t2", 10), None);
    }

    #[test]
    fn a_dispatcher_creation_is_known_once_and_only_for_its_own_submission() {
        let r = Revisions::default();
        r.dispatched("t1", 10);
        assert!(!r.take_dispatched("t1", 11), "another submission with the same ID");
        r.dispatched("t1", 10);
        assert!(r.take_dispatched("t1", 10));
        assert!(!r.take_dispatched("t1", 10), "used up");
        assert!(!r.take_dispatched("t2", 10));
    }

    #[test]
    fn the_oldest_entries_go_first_past_the_capacity() {
        let r = Revisions::default();
        for n in 0..(CAPACITY as u64 + 10) {
            r.created(&format!("t{n}"), n, n);
        }
        assert!(r.inner.lock().unwrap().created.by_id.len() <= CAPACITY);
        assert_eq!(r.take("t0", 0), None);
        let last = CAPACITY as u64 + 9;
        assert_eq!(r.take(&format!("t{last}"), last), Some(last));
    }
}

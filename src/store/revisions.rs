//! The revisions of records this replica's intake has just created, so that the first delivery
//! of their submissions writes over them without reading them back (one JetStream round trip
//! and one decode less per task). The record itself is rebuilt from the submission, which is
//! what intake built it from. A hint only: every write is compare-and-swap on the revision, so
//! a stale or wrong entry costs a failed write and a read, never a lost change.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

/// Entries kept; the oldest go first. At 24 bytes of key and value each, plus the table's
/// overhead and the order queue, this bounds the cache to about 15 MB however long the queues
/// are: enough for intake to run 200,000 tasks ahead of dispatch.
const CAPACITY: usize = 1 << 18;

/// Task ID (hashed) → (submission's stream sequence, record revision).
pub struct Revisions {
    inner: Mutex<Inner>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<u64, (u64, u64)>,
    order: VecDeque<u64>,
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

    /// Intake created the record of task `id`, from the submission at `seq`, as `revision`.
    pub fn created(&self, id: &str, seq: u64, revision: u64) {
        let key = self.key(id);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.by_id.insert(key, (seq, revision)).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// The revision intake created task `id`'s record at, if it did so from the submission at
    /// `seq`; the entry is used up (a later write has a later revision).
    pub fn take(&self, id: &str, seq: u64) -> Option<u64> {
        let key = self.key(id);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Its place in `order` goes when it comes round; a re-inserted key is then dropped early,
        // which only costs a read.
        match inner.by_id.remove(&key) {
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
    fn the_oldest_entries_go_first_past_the_capacity() {
        let r = Revisions::default();
        for n in 0..(CAPACITY as u64 + 10) {
            r.created(&format!("t{n}"), n, n);
        }
        assert!(r.inner.lock().unwrap().by_id.len() <= CAPACITY);
        assert_eq!(r.take("t0", 0), None);
        let last = CAPACITY as u64 + 9;
        assert_eq!(r.take(&format!("t{last}"), last), Some(last));
    }
}

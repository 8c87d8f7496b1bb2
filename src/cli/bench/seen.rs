//! What the bench learns about its tasks: when each call reached the no-op endpoint and when
//! each final event arrived.

use serde::Deserialize;
use std::time::Instant;

/// What a task's final event tells the bench.
#[derive(Deserialize)]
pub(super) struct Final {
    pub(super) id: String,
    pub(super) queue_ms: Option<u64>,
    pub(super) duration_ms: Option<u64>,
}

#[derive(Clone, Copy)]
pub(super) struct Finish {
    pub(super) at: Instant,
    pub(super) queue_ms: Option<u64>,
    pub(super) duration_ms: Option<u64>,
}

/// What the bench learns per task, indexed by the task's number, so that memory stays small
/// next to the service's (the RSS reported is the whole process's).
pub(super) struct Seen {
    /// Task IDs are `<prefix><n>`.
    pub(super) prefix: String,
    pub(super) called: Vec<Option<Instant>>,
    pub(super) finished: Vec<Option<Finish>>,
    /// Tasks submitted over HTTP that finished.
    pub(super) others: usize,
}

impl Seen {
    /// Notes the first call of task `id` reaching the no-op endpoint.
    pub(super) fn called_at(&mut self, id: &str, at: Instant) {
        if let Some(n) = self.number(id) {
            self.called[n].get_or_insert(at);
        }
    }

    /// Notes a final event; whether it is the first of a task (a redelivered event is not).
    pub(super) fn finished_at(&mut self, f: Final, at: Instant) -> bool {
        let finish = Finish {
            at,
            queue_ms: f.queue_ms,
            duration_ms: f.duration_ms,
        };
        match self.number(&f.id) {
            Some(n) if self.finished[n].is_none() => {
                self.finished[n] = Some(finish);
                true
            }
            Some(_) => false,
            None => {
                self.others += 1;
                true
            }
        }
    }

    fn number(&self, id: &str) -> Option<usize> {
        id.strip_prefix(&self.prefix)?
            .parse()
            .ok()
            .filter(|n| *n < self.called.len())
    }
}

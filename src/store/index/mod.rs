//! The list index: which tasks exist, newest first, with the fields lists filter on. Each replica
//! keeps its own in an SQLite file in a temp dir (memory stays bounded however many tasks there
//! are), fed by a headers-only consumer of the `JETASK_TASKS` bucket: record writes carry their
//! function, status, user and creation time as headers, so no record body is parsed. The index
//! is rebuilt from the bucket at every start; it is a view, never the truth.
//!
//! [`table`] is the SQLite side (schema, changes, queries); [`follower`] feeds it from the bucket;
//! [`scratch`] is its directory, and the clean-up of those left by processes that died.

mod follower;
pub mod header;
mod scratch;
mod stats;
mod table;

pub use stats::{FunctionStats, Outcomes, Percentiles, SERIES_MINUTES};
pub use table::Index;

use crate::core::task::Status;
use crate::core::time::Timestamp;

/// A list query (CONTRACT §4 queries).
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub function: Option<String>,
    pub status: Option<Status>,
    pub user: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only tasks whose ID starts with this (`[A-Za-z0-9_-]{1,128}`, checked by the caller).
    pub id_prefix: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("invalid cursor {0:?}: pass next_cursor from the previous page unchanged")]
    Cursor(String),
    #[error("task index: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("task index: {0}")]
    Io(#[from] std::io::Error),
}

/// One change the follower applies.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Upsert {
        id: String,
        function: String,
        user: String,
        status: Status,
        created: i64,
        updated: i64,
        /// When a waiting task (delayed or backing off) is next due, in ms; 0 when not waiting.
        due: i64,
        /// What the overview counts (start, end, queue and run time, throttling).
        timing: Timing,
    },
    Remove {
        id: String,
    },
}

impl Change {
    pub fn id(&self) -> &str {
        match self {
            Change::Upsert { id, .. } | Change::Remove { id } => id,
        }
    }
}

/// A task's figures for the overview ([`Index::stats`]), from its record write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// First start of an attempt, in ms.
    pub started: Option<i64>,
    /// Final state reached, in ms.
    pub finished: Option<i64>,
    /// From when it was due to its first start.
    pub queue_ms: Option<u64>,
    /// Its last attempt's duration (set once finished).
    pub run_ms: Option<u64>,
    /// Waiting because of a throttle: its endpoint answered 429/503, or a rate limit holds it.
    pub throttled: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub running: usize,
    pub delayed: usize,
}

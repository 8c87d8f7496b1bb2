//! The pure core: what a task is and how its life goes, decided without I/O. Every function here
//! takes `now`, jitter and inputs as arguments and returns its decision as data; the layers above
//! carry the decisions out. Tested without a server or a runtime.
//!
//! May import: nothing of jetask outside `core`, and none of `tokio`, `async_nats`, `reqwest` or
//! `axum` (checked by `tests/layout.rs`). Reading the configuration file is the one I/O here.

pub mod config;
pub mod destination;
pub mod duration;
pub mod egress;
pub mod function;
pub mod header_block;
pub mod hex;
pub mod limits;
pub mod machine;
pub mod outcome;
pub mod retry;
pub mod schedule;
pub mod signing;
pub mod subjects;
pub mod submission;
pub mod task;
pub mod time;
pub mod timeline;
pub mod trace;

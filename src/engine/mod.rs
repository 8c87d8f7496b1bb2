//! The running parts: intake (submissions to records), dispatch (per-function consumption and
//! attempts), result delivery, schedules, stop requests, head starts, the HTTP client and its
//! egress enforcement, metrics, and [`ctx::Ctx`], the context they are all handed. They carry out
//! the core's decisions against the store and never re-decide a transition.
//!
//! May import: `store` and `core`.

pub mod callback;
pub mod control;
pub mod ctx;
pub mod dispatch;
pub mod egress;
pub mod fair;
pub mod intake;
pub mod invoke;
pub mod metrics;
pub mod poison;
pub mod records;
pub mod scheduler;

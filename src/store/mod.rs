//! The JetStream layer: connecting and creating streams, consumers and buckets, the task and
//! function records in KV, bucket followers, and the views every replica keeps from them
//! (functions, replicas, the list index, revisions), and the events published on transitions.
//!
//! May import: `core`. Nothing here knows the engine's context (`engine::ctx::Ctx`): callers
//! pass the handles a function needs.

pub mod events;
pub mod follow;
pub mod index;
pub mod kv;
pub mod registry;
pub mod replicas;
pub mod revisions;
pub mod setup;

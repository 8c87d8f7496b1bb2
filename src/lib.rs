//! # jetask
//!
//! An asynchronous task platform on NATS JetStream: clients submit tasks over NATS or HTTP,
//! dispatchers call each task's function (an HTTP endpoint) with retries, limits and timeouts,
//! and every task's record, with its full history, lives in a JetStream KV bucket.
//!
//! ## Layout
//!
//! The pure core (no I/O, tested without a server):
//! - [`task`]: the task record, states, IDs; [`machine`]: the lifecycle state machine;
//! - [`outcome`]: what an endpoint's answer means; [`retry`]: backoff and `Retry-After`;
//! - [`submission`]: reading a submission's headers; [`header_block`]: a header block read from raw bytes; [`function`]: function policies;
//! - [`schedule`]: recurring schedules, which moment is due; [`limits`]: shares of limits, rate reservations;
//! - [`signing`]: Standard Webhooks signatures; [`trace`]: W3C trace context;
//! - [`duration`], [`time`], [`destination`], [`subjects`] (every JetStream name), [`config`].
//!
//! The shell around it:
//! - [`setup`]: connect, create streams, consumers and buckets;
//! - [`store`]: records and functions in KV; [`follow`]: bucket followers and consumer loops; [`records`]: apply + write + publish events;
//! - [`registry`]: every replica's view of functions; [`replicas`]: who is alive, what each holds; [`index`]: the list index;
//! - [`scheduler`]: fires schedules on every replica, once per moment;
//! - [`intake`]: submissions → records; [`poison`]: submissions that cannot be processed as they are; [`fair`]: head starts for small users; [`dispatch`]: per-function consumption and attempts;
//! - [`callback`]: results out to webhooks, NATS subjects and other functions;
//! - [`invoke`]: one HTTP call; [`egress`]: where HTTP calls may go (policy, resolver, redirects); [`control`]: stop requests across replicas; [`events`];
//! - [`metrics`]: Prometheus metrics;
//! - [`ops`]: task and function operations shared by both APIs; [`api`]: the HTTP API; [`nats_api`]: the NATS micro service; [`service`]: wiring and shutdown; [`cli`], [`dev`], [`demo`], [`bench`].

pub mod api;
pub mod bench;
pub mod callback;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod destination;
pub mod dev;
pub mod dispatch;
pub mod duration;
pub mod egress;
pub mod events;
pub mod fair;
pub mod follow;
pub mod function;
pub mod header_block;
pub mod index;
pub mod intake;
pub mod invoke;
pub mod limits;
pub mod machine;
pub mod metrics;
pub mod nats_api;
pub mod ops;
pub mod outcome;
pub mod poison;
pub mod records;
pub mod registry;
pub mod replicas;
pub mod retry;
pub mod revisions;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod setup;
pub mod signing;
pub mod store;
pub mod subjects;
pub mod submission;
pub mod task;
pub mod time;
pub mod trace;

//! # jetask
//!
//! An asynchronous task platform on NATS JetStream: clients submit tasks over NATS or HTTP,
//! dispatchers call each task's function (an HTTP endpoint) with retries, limits and timeouts,
//! and every task's record, with its full history, lives in a JetStream KV bucket.
//!
//! ## Layout
//!
//! Folders by layer; imports point down only (`core` ← `store` ← `engine` ← `api` ← `service` ←
//! `cli`), checked by `tests/layout.rs`.
//!
//! [`core`] — pure, no I/O, tested without a server:
//! - [`core::task`]: the task record, states, IDs; [`core::machine`]: the lifecycle state machine;
//! - [`core::outcome`]: what an endpoint's answer means; [`core::retry`]: backoff and `Retry-After`;
//! - [`core::submission`]: reading a submission's headers; [`core::header_block`]: a header block
//!   read from raw bytes; [`core::function`]: function policies;
//! - [`core::schedule`]: recurring schedules, which moment is due; [`core::limits`]: shares of
//!   limits, rate reservations;
//! - [`core::signing`]: Standard Webhooks signatures; [`core::trace`]: W3C trace context;
//! - [`core::egress`]: where HTTP calls may go (the policy's rules);
//! - [`core::duration`], [`core::time`], [`core::destination`], [`core::subjects`] (every
//!   JetStream name), [`core::config`].
//!
//! [`store`] — JetStream:
//! - [`store::setup`]: connect, create streams, consumers and buckets;
//! - [`store::kv`]: records and functions in KV; [`store::follow`]: bucket followers and consumer
//!   loops; [`store::revisions`]: what this replica has just written of records (intake's
//!   creates, dispatch's first writes);
//! - [`store::registry`]: every replica's view of functions; [`store::replicas`]: who is alive,
//!   what each holds; [`store::index`]: the list index; [`store::events`]: transition events.
//!
//! [`engine`] — the running parts, all handed an [`engine::ctx::Ctx`]:
//! - [`engine::intake`]: submissions → records; [`engine::poison`]: submissions that cannot be
//!   processed as they are; [`engine::records`]: apply + write + publish events;
//! - [`engine::dispatch`]: per-function consumption (pull loop, attempts, long attempts);
//!   [`engine::fair`]: head starts for small users;
//! - [`engine::callback`]: results out to webhooks, NATS subjects and other functions;
//! - [`engine::scheduler`]: fires schedules on every replica, once per moment;
//! - [`engine::invoke`]: one HTTP call; [`engine::egress`]: the HTTP client bound to the egress
//!   policy (resolver, redirects); [`engine::control`]: stop requests across replicas;
//! - [`engine::metrics`]: Prometheus metrics.
//!
//! [`api`] — the interfaces: the HTTP API (the OpenAPI schemas in `api/openapi.rs`),
//! [`api::nats`] (the NATS micro service) and [`api::ops`] (operations shared by both).
//!
//! [`service`]: wiring and shutdown. [`cli`]: the command line (arguments, HTTP client, output,
//! one module per command group), with [`cli::dev`], [`cli::demo`], [`cli::receiver`] and
//! [`cli::bench`].

pub mod api;
pub mod cli;
pub mod core;
pub mod engine;
pub mod service;
pub mod store;

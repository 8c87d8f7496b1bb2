//! The context every running part is handed: configuration, the JetStream handles and stores,
//! this replica's views (functions, index, replicas), and the shared services (HTTP client,
//! metrics, stop requests, schedules, head starts). Built once by `service::start`, passed in,
//! never global.

use crate::core::config::Config;
use crate::core::function::{Function, FunctionSpec};
use crate::engine::control::Control;
use crate::store::index::Index;
use crate::store::kv::{FunctionStore, TaskStore};
use crate::store::registry::Registry;
use crate::store::setup::{self, Nats};
use std::sync::Arc;

/// Everything a request or a task handler needs, passed in, never global.
pub struct Ctx {
    pub config: Arc<Config>,
    pub nats: Nats,
    pub tasks: TaskStore,
    pub functions: FunctionStore,
    pub registry: Arc<Registry>,
    pub index: Arc<Index>,
    pub control: Arc<Control>,
    pub schedules: Arc<crate::engine::scheduler::Schedules>,
    /// Endpoints and webhooks are called through it: it enforces `[egress]`.
    pub http: crate::engine::egress::Client,
    pub metrics: Arc<crate::engine::metrics::Metrics>,
    pub replicas: Arc<crate::store::replicas::Replicas>,
    pub fair: crate::engine::fair::Fair,
    pub revisions: crate::store::revisions::Revisions,
}

impl Ctx {
    /// A function's spec: this replica's view, or the bucket when the view has not caught up
    /// with a function created a moment ago through another replica.
    pub async fn function(&self, name: &str) -> Option<Arc<FunctionSpec>> {
        if let Some(f) = self.registry.get(name) {
            return Some(f);
        }
        // A name from a subject can hold any byte: one that is no function name is never
        // looked up (a KV read of such a key could wait for an answer that never comes).
        if !crate::core::task::valid_function_name(name) {
            return None;
        }
        match self.functions.get(name).await {
            Ok(Some(f)) => {
                let spec = Arc::new(f.spec.clone());
                self.registry.upsert(f);
                Some(spec)
            }
            _ => None,
        }
    }

    /// Stores a function and makes sure its dispatch consumer exists before anyone submits.
    pub async fn put_function(&self, f: &Function) -> Result<(), String> {
        setup::ensure_dispatch_consumer(&self.nats.submit, &f.name, self.config.dispatch.ack_wait.0)
            .await
            .map_err(|e| e.to_string())?;
        self.functions.put(f).await.map_err(|e| e.to_string())?;
        self.registry.upsert(f.clone());
        Ok(())
    }
}

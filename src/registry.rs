//! Every replica's view of the functions: the `JETASK_FUNCTIONS` bucket, watched, so that a
//! change made through any replica is seen by all within a moment.

use crate::function::{Function, FunctionSpec};
use crate::store::FunctionStore;
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Registry {
    functions: RwLock<HashMap<String, Arc<FunctionSpec>>>,
    changed: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            functions: RwLock::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<FunctionSpec>> {
        self.functions.read().ok()?.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.functions
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Bumped on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn upsert(&self, f: Function) {
        if let Ok(mut m) = self.functions.write() {
            m.insert(f.name, Arc::new(f.spec));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.functions.write() {
            m.remove(name);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Loads every stored function.
    pub async fn load(&self, store: &FunctionStore) -> Result<(), crate::store::StoreError> {
        for f in store.list().await? {
            self.upsert(f);
        }
        Ok(())
    }

    /// Follows the bucket until `shutdown`, resubscribing after errors.
    pub async fn follow(self: Arc<Self>, store: FunctionStore, shutdown: CancellationToken) {
        loop {
            let mut watch = match store.kv().watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch functions; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let entry = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = watch.next() => e,
                };
                match entry {
                    Some(Ok(e)) => match e.operation {
                        kv::Operation::Put => match serde_json::from_slice::<Function>(&e.value) {
                            Ok(f) => self.upsert(f),
                            Err(err) => tracing::warn!(key = %e.key, error = %err, "ignoring unreadable function"),
                        },
                        kv::Operation::Delete | kv::Operation::Purge => self.remove(&e.key),
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "function watch failed; resubscribing");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}

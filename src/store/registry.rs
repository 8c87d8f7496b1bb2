//! Every replica's view of the functions: the `JETASK_FUNCTIONS` bucket, watched, so that a
//! change made through any replica is seen by all within a moment.

use crate::core::function::{Function, FunctionSpec};
use crate::store::follow::Followed;
use crate::store::kv::FunctionStore;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
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
    pub async fn load(&self, store: &FunctionStore) -> Result<(), crate::store::kv::StoreError> {
        for f in store.list().await? {
            self.upsert(f);
        }
        Ok(())
    }

    /// Follows the bucket until `shutdown`, resubscribing after errors.
    pub async fn follow(self: Arc<Self>, store: FunctionStore, shutdown: CancellationToken) {
        crate::store::follow::follow_bucket(store.kv().clone(), "functions", shutdown, |change| match change {
            Followed::Put(f) => self.upsert(f),
            Followed::Removed(name) => self.remove(&name),
        })
        .await;
    }
}

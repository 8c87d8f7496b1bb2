//! Reaching a running attempt from any replica: every replica keeps a cancellation token per
//! attempt it holds and listens on one core-NATS subject for stop requests naming a task.

use crate::subjects;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Control {
    inflight: Mutex<HashMap<String, CancellationToken>>,
}

/// Removes its attempt from the in-flight table when dropped.
pub struct AttemptGuard {
    control: Arc<Control>,
    id: String,
    pub token: CancellationToken,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.control.inflight.lock() {
            m.remove(&self.id);
        }
    }
}

impl Control {
    /// Registers the attempt of task `id` held by this replica.
    pub fn register(self: &Arc<Self>, id: &str) -> AttemptGuard {
        let token = CancellationToken::new();
        if let Ok(mut m) = self.inflight.lock() {
            m.insert(id.to_string(), token.clone());
        }
        AttemptGuard {
            control: self.clone(),
            id: id.to_string(),
            token,
        }
    }

    /// Aborts the attempt of `id` if this replica holds it.
    pub fn cancel(&self, id: &str) -> bool {
        match self.inflight.lock().ok().and_then(|m| m.get(id).cloned()) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Asks every replica to abort the attempt of `id`.
    pub async fn broadcast_stop(client: &async_nats::Client, id: &str) -> Result<(), async_nats::PublishError> {
        client.publish(subjects::CONTROL_STOP, id.to_string().into()).await
    }

    /// Listens for stop requests until `shutdown`.
    pub async fn listen(
        self: Arc<Self>,
        client: async_nats::Client,
        ready: tokio::sync::oneshot::Sender<()>,
        shutdown: CancellationToken,
    ) {
        let mut sub = match client.subscribe(subjects::CONTROL_STOP).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to stop requests");
                return;
            }
        };
        let _ = client.flush().await;
        let _ = ready.send(());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                m = sub.next() => match m {
                    Some(m) => {
                        let id = String::from_utf8_lossy(&m.payload).to_string();
                        if self.cancel(&id) {
                            tracing::info!(task_id = %id, "aborting attempt on stop request");
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

//! Reaching an attempt in flight from any replica: every replica keeps a handle per attempt it
//! holds and listens on core-NATS control subjects naming a task — `stop` aborts the attempt,
//! `wake` makes its holder read the record again (a long task completed elsewhere).

use crate::core::subjects;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Handle {
    stop: CancellationToken,
    wake: Arc<Notify>,
}

#[derive(Default)]
pub struct Control {
    inflight: Mutex<HashMap<String, Handle>>,
}

/// Removes its attempt from the in-flight table when dropped.
pub struct AttemptGuard {
    control: Arc<Control>,
    id: String,
    /// Cancelled when the task is stopped.
    pub token: CancellationToken,
    /// Notified when the task's record changed elsewhere.
    pub wake: Arc<Notify>,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.control.inflight.lock() {
            // Only its own handle: a claim that lost must not unregister the attempt that won.
            if m.get(&self.id).is_some_and(|h| Arc::ptr_eq(&h.wake, &self.wake)) {
                m.remove(&self.id);
            }
        }
    }
}

/// What a control message asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Wake,
}

impl Signal {
    fn subject(self) -> &'static str {
        match self {
            Signal::Stop => subjects::CONTROL_STOP,
            Signal::Wake => subjects::CONTROL_WAKE,
        }
    }
}

impl Control {
    /// Claims the next attempt of task `id` for this replica, before the write that starts it:
    /// from then on a delivery of the same task here sees it held (and waits) instead of
    /// taking the record's `Running` for a lost attempt. `None`: this replica already holds or
    /// is starting an attempt of `id`.
    pub fn claim(self: &Arc<Self>, id: &str) -> Option<AttemptGuard> {
        let h = Handle {
            stop: CancellationToken::new(),
            wake: Arc::new(Notify::new()),
        };
        let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(id) {
            return None;
        }
        m.insert(id.to_string(), h.clone());
        drop(m);
        Some(AttemptGuard {
            control: self.clone(),
            id: id.to_string(),
            token: h.stop,
            wake: h.wake,
        })
    }

    /// Delivers `signal` to the attempt of `id` if this replica holds it.
    pub fn deliver(&self, id: &str, signal: Signal) -> bool {
        match self.inflight.lock().ok().and_then(|m| m.get(id).cloned()) {
            Some(h) => {
                match signal {
                    Signal::Stop => h.stop.cancel(),
                    Signal::Wake => h.wake.notify_one(),
                }
                true
            }
            None => false,
        }
    }

    /// Whether this replica holds an attempt of task `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.inflight.lock().is_ok_and(|m| m.contains_key(id))
    }

    pub fn inflight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Delivers `signal` here when this replica holds the attempt, else to every replica.
    pub async fn signal(
        &self,
        client: &async_nats::Client,
        id: &str,
        signal: Signal,
    ) -> Result<(), async_nats::PublishError> {
        if self.deliver(id, signal) {
            return Ok(());
        }
        client.publish(signal.subject(), id.to_string().into()).await
    }

    /// Listens for control messages until `shutdown`.
    pub async fn listen(
        self: Arc<Self>,
        client: async_nats::Client,
        ready: tokio::sync::oneshot::Sender<()>,
        shutdown: CancellationToken,
    ) {
        let mut sub = match client.subscribe(subjects::CONTROL_ALL).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to control messages");
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
                        let signal = if m.subject.as_str() == subjects::CONTROL_STOP { Signal::Stop } else { Signal::Wake };
                        if self.deliver(&id, signal) && signal == Signal::Stop {
                            tracing::info!(task_id = %id, "aborting attempt on stop request");
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

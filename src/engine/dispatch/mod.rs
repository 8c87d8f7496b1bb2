//! Dispatch: one loop per function and replica over the function's durable consumer, so that a
//! slow or failing function never holds up another. A loop pulls only as many submissions as it
//! has free concurrency slots (messages held back would time out while waiting), and each task
//! is acknowledged only once its outcome is recorded: a crash at any point loses nothing.
//!
//! - `pull`: the loop of one function (slots, rate tokens, parking);
//! - `delivery`: one delivery of a submission, from its record to what JetStream is told;
//! - `attempt`: one attempt (call, classify, commit);
//! - `long`: long attempts (heartbeats, completion).

mod attempt;
mod delivery;
mod long;
mod pull;

use crate::core::subjects;
use crate::engine::ctx::Ctx;
use futures::StreamExt;
use pull::function_loop;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest pull request of one loop.
const MAX_BATCH: usize = 256;

/// Starts and stops function loops as functions come and go, until `shutdown`. In-flight
/// attempts run on `attempts`, which the caller drains within the grace period.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken, attempts: TaskTracker) {
    let mut loops: HashMap<String, CancellationToken> = HashMap::new();
    let mut changed = ctx.registry.subscribe();
    loop {
        let mut wanted: Vec<String> = ctx.registry.names();
        // Consumers of deleted functions are drained too: their tasks become Invalid.
        if let Ok(names) = consumer_functions(&ctx).await {
            wanted.extend(names);
        }
        for name in wanted {
            if loops.contains_key(&name) {
                continue;
            }
            let stop = shutdown.child_token();
            loops.insert(name.clone(), stop.clone());
            tokio::spawn(function_loop(ctx.clone(), name, stop, attempts.clone()));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

async fn consumer_functions(ctx: &Ctx) -> Result<Vec<String>, String> {
    let mut names = ctx.nats.submit.consumer_names();
    let mut out = Vec::new();
    while let Some(n) = names.next().await {
        let n = n.map_err(|e| e.to_string())?;
        if let Some(f) = subjects::function_of_consumer(&n) {
            out.push(f.to_string());
        }
    }
    Ok(out)
}

//! The bench's publisher: pipelined JetStream publishes, acknowledged on one inbox.

use anyhow::Context as _;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::Deserialize;
use std::time::Duration;

/// JetStream publishes as a fast client sends them: plain publishes whose acknowledgements all
/// come back on one inbox, at most `window` awaited at once, counted on a progress bar.
/// async-nats' `jetstream::Context::publish` gives each publish a reply subject, a channel and a
/// timer, and parses its acknowledgement through an untagged enum: on a shared 2-core box that
/// client's CPU (a tenth of all of it during a burst) was taken from the server being measured.
pub(super) struct Pipeline {
    client: async_nats::Client,
    inbox: async_nats::Subject,
    acks: async_nats::Subscriber,
    out: usize,
    window: usize,
    bar: ProgressBar,
}

/// A JetStream publish acknowledgement, as far as the bench reads it.
#[derive(Deserialize)]
struct PubAck {
    #[serde(default)]
    error: Option<PubAckError>,
}

#[derive(Deserialize)]
struct PubAckError {
    #[serde(default)]
    description: String,
    #[serde(default)]
    err_code: u64,
}

/// How long the bench waits for any acknowledgement before it gives up.
const ACK_WAIT: Duration = Duration::from_secs(30);

impl Pipeline {
    pub(super) async fn new(client: &async_nats::Client, window: usize, bar: ProgressBar) -> anyhow::Result<Pipeline> {
        let inbox = async_nats::Subject::from(client.new_inbox());
        let acks = client.subscribe(inbox.clone()).await?;
        Ok(Pipeline {
            client: client.clone(),
            inbox,
            acks,
            out: 0,
            window: window.max(1),
            bar,
        })
    }

    pub(super) async fn publish(
        &mut self,
        subject: &async_nats::Subject,
        headers: async_nats::HeaderMap,
        payload: &bytes::Bytes,
    ) -> anyhow::Result<()> {
        self.client
            .publish_with_reply_and_headers(subject.clone(), self.inbox.clone(), headers, payload.clone())
            .await?;
        self.out += 1;
        while self.out >= self.window {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn settle_one(&mut self) -> anyhow::Result<()> {
        let m = tokio::time::timeout(ACK_WAIT, self.acks.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no JetStream acknowledgement for {ACK_WAIT:?} with {} publishes outstanding",
                    self.out
                )
            })?
            .ok_or_else(|| anyhow::anyhow!("the NATS connection closed the acknowledgement subscription"))?;
        if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            anyhow::bail!("no JetStream stream takes the bench's subject (no responders)");
        }
        let ack: PubAck = serde_json::from_slice(&m.payload).with_context(|| {
            format!(
                "unreadable JetStream acknowledgement {:?}",
                String::from_utf8_lossy(&m.payload)
            )
        })?;
        if let Some(e) = ack.error {
            anyhow::bail!(
                "JetStream refused a publish: {} (err_code {})",
                e.description,
                e.err_code
            );
        }
        self.out -= 1;
        self.bar.inc(1);
        Ok(())
    }

    /// Awaits the acknowledgements still out.
    pub(super) async fn finish(mut self) -> anyhow::Result<()> {
        while self.out > 0 {
            self.settle_one().await?;
        }
        self.bar.finish_and_clear();
        Ok(())
    }
}

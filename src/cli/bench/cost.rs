//! What a task costs the processes: CPU time from `/proc` and NATS messages from `/varz`.

use serde::Deserialize;
use serde_json::json;

/// The server's `in_msgs` and `out_msgs` counters (`/varz`): `None` without a monitoring URL
/// or when it cannot be read.
pub(super) async fn varz(http: &reqwest::Client, url: Option<&str>) -> Option<(u64, u64)> {
    #[derive(Deserialize)]
    struct Varz {
        in_msgs: u64,
        out_msgs: u64,
    }
    let v: Varz = http.get(url?).send().await.ok()?.json().await.ok()?;
    Some((v.in_msgs, v.out_msgs))
}

/// CPU time so far of nats-server, jetask and the bench process, in microseconds.
#[derive(Clone, Copy)]
pub(super) struct Cpu {
    nats_server: Option<f64>,
    jetask: Option<f64>,
    client: Option<f64>,
}

impl Cpu {
    pub(super) fn now(nats: &[u32], jetask: &[u32]) -> Cpu {
        Cpu {
            nats_server: super::proc_cpu::sum_us(nats),
            jetask: super::proc_cpu::sum_us(jetask),
            client: super::proc_cpu::sum_us(&[std::process::id()]),
        }
    }

    /// Microseconds per task between two readings, rounded to 0.1 µs.
    pub(super) fn per_task(self, end: Cpu, tasks: usize) -> serde_json::Value {
        let per = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .filter(|_| tasks > 0)
                .map(|(a, b)| ((b - a) / tasks as f64 * 10.0).round() / 10.0)
        };
        json!({
            "nats_server": per(self.nats_server, end.nats_server),
            "jetask": per(self.jetask, end.jetask),
            "client": per(self.client, end.client),
        })
    }
}

//! The bench's report: latency summaries, memory, progress bars and the readable table.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({"p50": r(pct(&v, 0.5)), "p99": r(pct(&v, 0.99)), "max": r(pct(&v, 1.0))})
}

/// This process's resident memory now and at its peak, in MB (Linux; 0 elsewhere).
pub(super) fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

pub(super) fn bar(total: usize, what: &str, hidden: bool) -> ProgressBar {
    let pb = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub(super) fn print_table(r: &serde_json::Value) {
    let n = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
    say!(
        "tasks                {} ({} finished), {} B payload, task mode on{}",
        r["tasks"],
        r["finished"],
        r["payload_bytes"],
        r["rate"]
            .as_f64()
            .map(|x| format!(", paced at {x}/s"))
            .unwrap_or_default()
    );
    say!("submissions/s NATS   {}", n(&r["submit_per_s"]));
    say!("submissions/s HTTP   {}", n(&r["http_submit_per_s"]));
    say!("end-to-end tasks/s   {}", n(&r["e2e_per_s"]));
    say!(
        "raw JetStream/s      {}  (publish {}, consume {})",
        n(&r["raw_per_s"]),
        n(&r["raw_publish_per_s"]),
        n(&r["raw_consume_per_s"])
    );
    say!(
        "ratio to raw         {}",
        r["ratio"].as_f64().map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
    );
    say!("latency ms           p50        p99        max");
    for k in ["queue", "run", "e2e"] {
        let l = &r["latency_ms"][k];
        say!(
            "  {k:<18} {:<10} {:<10} {}",
            l["p50"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0)
        );
    }
    let in_process = r["in_process"].as_bool().unwrap_or(false);
    say!(
        "peak RSS MB          {}  (the bench process: {}client and no-op endpoint)",
        n(&r["rss_mb"]),
        if in_process { "jetask, " } else { "" }
    );
    let cpu = &r["cpu_us_per_task"];
    let us = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    let msgs = &r["nats_msgs_per_task"];
    say!(
        "NATS msgs per task   {}",
        if msgs.is_null() {
            "-".to_string()
        } else {
            format!("{} in, {} out (nats-server /varz)", msgs["in"], msgs["out"])
        }
    );
    say!("CPU µs per task");
    say!("  nats-server        {}", us(&cpu["nats_server"]));
    say!(
        "  jetask             {}",
        if in_process {
            "- (in the bench process)".to_string()
        } else {
            us(&cpu["jetask"])
        }
    );
    say!(
        "  client             {}  (the bench process: {}publisher and no-op endpoint)",
        us(&cpu["client"]),
        if in_process { "jetask, " } else { "" }
    );
}

//! Prometheus metrics (CONTRACT §9), served at `GET /metrics`. Counters and histograms are this
//! replica's (sum them across replicas); the queue gauges are the cluster's, read at scrape time
//! from JetStream's consumer state and the list index (take their `max` across replicas).

use crate::core::task::{Status, TaskRecord};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Seconds, from a millisecond call to a task that ran for a day.
const BUCKETS: [f64; 24] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
    3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub function: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub function: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub function: String,
    /// `endpoint` (it answered 429/503), `function` or `user` (a jetask limit).
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `webhook`, `nats` or `function`.
    pub kind: String,
    /// `delivered`, `retrying` or `failed`.
    pub outcome: String,
}

type Hist = Family<FunctionLabel, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    submitted: Family<FunctionLabel, Counter>,
    dequeued: Family<FunctionLabel, Counter>,
    finished: Family<StateLabels, Counter>,
    expired: Family<FunctionLabel, Counter>,
    attempts: Family<OutcomeLabels, Counter>,
    throttled: Family<ScopeLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    expedited: Family<FunctionLabel, Counter>,
    poison: Counter,
    queue_time: Hist,
    run_time: Hist,
    end_to_end: Hist,
    in_flight: Family<FunctionLabel, Gauge>,
    concurrency_limit: Family<FunctionLabel, Gauge>,
    queued: Family<FunctionLabel, Gauge>,
    delayed: Family<FunctionLabel, Gauge>,
    running: Family<FunctionLabel, Gauge>,
    consumer_pending: Family<FunctionLabel, Gauge>,
    consumer_ack_pending: Family<FunctionLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn label(function: &str) -> FunctionLabel {
    FunctionLabel {
        function: function.to_string(),
    }
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    (to.0 - from.0).max(0) as f64 / 1000.0
}

/// When a task was meant to start: its creation, or later its not-before.
fn due(r: &TaskRecord) -> Timestamp {
    r.not_before
        .map_or(r.created_at, |nb| Timestamp(nb.0.max(r.created_at.0)))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            submitted: Family::default(),
            dequeued: Family::default(),
            finished: Family::default(),
            expired: Family::default(),
            attempts: Family::default(),
            throttled: Family::default(),
            deliveries: Family::default(),
            expedited: Family::default(),
            poison: Counter::default(),
            queue_time: Family::new_with_constructor(histogram),
            run_time: Family::new_with_constructor(histogram),
            end_to_end: Family::new_with_constructor(histogram),
            in_flight: Family::default(),
            concurrency_limit: Family::default(),
            queued: Family::default(),
            delayed: Family::default(),
            running: Family::default(),
            consumer_pending: Family::default(),
            consumer_ack_pending: Family::default(),
            registry: Registry::default(),
        };
        m.register_counters(&mut registry);
        m.register_durations(&mut registry);
        m.register_slots(&mut registry);
        m.register_queue(&mut registry);
        Metrics { registry, ..m }
    }

    /// Counts of tasks, calls and deliveries, this replica's since it started.
    fn register_counters(&self, registry: &mut Registry) {
        // Counters get `_total` appended by the encoder.
        registry.register(
            "jetask_tasks_submitted",
            "Tasks recorded (Enqueued), by this replica",
            self.submitted.clone(),
        );
        registry.register(
            "jetask_tasks_dequeued",
            "Tasks taken by a dispatcher (Dequeued)",
            self.dequeued.clone(),
        );
        registry.register(
            "jetask_tasks_finished",
            "Tasks that reached a final state",
            self.finished.clone(),
        );
        registry.register(
            "jetask_tasks_expired_dropped",
            "Tasks dropped unrun or unfinished for being older than max_event_age",
            self.expired.clone(),
        );
        registry.register(
            "jetask_attempts",
            "Function calls by outcome: success, async (202), throttled, stopped, or the error type",
            self.attempts.clone(),
        );
        registry.register(
            "jetask_throttled",
            "Times a task waited for a limit: endpoint (429/503), function or user",
            self.throttled.clone(),
        );
        registry.register(
            "jetask_callback_deliveries",
            "Result deliveries by destination kind and outcome",
            self.deliveries.clone(),
        );
        registry.register(
            "jetask_tasks_expedited",
            "Tasks of users with few queued tasks named for a head start on a long queue",
            self.expedited.clone(),
        );
        registry.register(
            "jetask_poison",
            "Submissions jetask could not process as they were (unreadable headers, records that cannot be read or written), terminated after a bounded number of deliveries",
            self.poison.clone(),
        );
    }

    /// How long tasks wait, run and take in all, as histograms.
    fn register_durations(&self, registry: &mut Registry) {
        registry.register(
            "jetask_queue_time_seconds",
            "From when a task was due (submission or not-before) to its first call",
            self.queue_time.clone(),
        );
        registry.register(
            "jetask_run_time_seconds",
            "Duration of one attempt, call to outcome (completion for long tasks)",
            self.run_time.clone(),
        );
        registry.register(
            "jetask_end_to_end_seconds",
            "From when a task was due to its final state",
            self.end_to_end.clone(),
        );
    }

    /// What this replica runs now and may run at once.
    fn register_slots(&self, registry: &mut Registry) {
        registry.register(
            "jetask_attempts_in_flight",
            "Attempts this replica is running now",
            self.in_flight.clone(),
        );
        registry.register(
            "jetask_concurrency_limit",
            "Attempts this replica may run at once for a function",
            self.concurrency_limit.clone(),
        );
    }

    /// The cluster's queue, read at scrape time (take their `max` across replicas).
    fn register_queue(&self, registry: &mut Registry) {
        registry.register(
            "jetask_tasks_queued",
            "Tasks due and waiting for a slot (consumer pending + ack pending - running - delayed)",
            self.queued.clone(),
        );
        // The autoscaling signal (docs/scaling.md), under the name an autoscaler is pointed
        // at: the same figure, since it is exactly what a new instance could start on.
        registry.register(
            "jetask_tasks_runnable",
            "Tasks due and waiting for a slot: not delayed, not backing off, not running (for autoscalers)",
            self.queued.clone(),
        );
        registry.register(
            "jetask_tasks_delayed",
            "Tasks waiting for their not-before or their next retry",
            self.delayed.clone(),
        );
        registry.register(
            "jetask_tasks_running",
            "Tasks Running or Stopping, cluster-wide",
            self.running.clone(),
        );
        registry.register(
            "jetask_consumer_pending",
            "Submissions not yet delivered to any dispatcher (JetStream num_pending)",
            self.consumer_pending.clone(),
        );
        registry.register(
            "jetask_consumer_ack_pending",
            "Submissions delivered and not yet settled (JetStream num_ack_pending)",
            self.consumer_ack_pending.clone(),
        );
    }

    /// Counts a transition that has been written (one per published event).
    pub fn transition(&self, record: &TaskRecord, status: Status, now: Timestamp) {
        let f = label(&record.function);
        match status {
            Status::Enqueued => {
                self.submitted.get_or_create(&f).inc();
            }
            Status::Dequeued => {
                self.dequeued.get_or_create(&f).inc();
            }
            // The first start only (a throttled call does not use up an attempt, so the
            // attempt number cannot tell).
            Status::Running if record.started_at.is_some() && record.started_at == record.attempt_started_at => {
                let queued = record
                    .queue_ms
                    .map_or_else(|| seconds(due(record), now), |ms| ms as f64 / 1000.0);
                self.queue_time.get_or_create(&f).observe(queued);
            }
            s if s.is_terminal() => {
                self.finished
                    .get_or_create(&StateLabels {
                        function: record.function.clone(),
                        state: s.as_str().to_string(),
                    })
                    .inc();
                if s == Status::Expired {
                    self.expired.get_or_create(&f).inc();
                }
                if s != Status::Invalid {
                    self.end_to_end.get_or_create(&f).observe(seconds(due(record), now));
                }
            }
            _ => {}
        }
    }

    /// Counts one attempt's outcome and duration.
    pub fn attempt(&self, function: &str, outcome: &str, took: Duration) {
        self.attempts
            .get_or_create(&OutcomeLabels {
                function: function.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.run_time
            .get_or_create(&label(function))
            .observe(took.as_secs_f64());
    }

    pub fn throttled(&self, function: &str, scope: &str) {
        self.throttled
            .get_or_create(&ScopeLabels {
                function: function.to_string(),
                scope: scope.to_string(),
            })
            .inc();
    }

    /// A message terminated as poison (see [`crate::engine::poison`]).
    pub fn poison(&self) {
        self.poison.inc();
    }

    pub fn expedited(&self, function: &str) {
        self.expedited.get_or_create(&label(function)).inc();
    }

    pub fn delivery(&self, kind: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn set_concurrency_limit(&self, function: &str, limit: usize) {
        self.concurrency_limit
            .get_or_create(&label(function))
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Counts an attempt in flight until the guard drops.
    pub fn in_flight(&self, function: &str) -> InFlight {
        let g = self.in_flight.get_or_create(&label(function)).clone();
        g.inc();
        InFlight(g)
    }

    /// Refreshes the queue gauges, then encodes everything.
    pub async fn render(&self, ctx: &Ctx) -> String {
        self.refresh_queues(ctx).await;
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    async fn refresh_queues(&self, ctx: &Ctx) {
        let mut names = ctx.registry.names();
        names.sort();
        for fam in [
            &self.queued,
            &self.delayed,
            &self.running,
            &self.consumer_pending,
            &self.consumer_ack_pending,
        ] {
            fam.clear();
        }
        for name in names {
            let Some(q) = queues(ctx, &name).await else { continue };
            let f = label(&name);
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.consumer_pending.get_or_create(&f).set(n(q.pending));
            self.consumer_ack_pending.get_or_create(&f).set(n(q.ack_pending));
            self.running.get_or_create(&f).set(n(q.running));
            self.delayed.get_or_create(&f).set(n(q.delayed));
            self.queued.get_or_create(&f).set(n(q.queued));
        }
    }
}

/// A function's queue, cluster-wide: JetStream's state of its dispatch consumer, split with the
/// list index into tasks running, waiting for a moment (delayed or backing off) and queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queues {
    /// Submissions not yet delivered to any dispatcher.
    pub pending: u64,
    /// Delivered and not settled: running, parked, backing off.
    pub ack_pending: u64,
    pub running: u64,
    pub delayed: u64,
    /// Due and waiting for a slot: `pending + ack_pending − running − delayed`.
    pub queued: u64,
}

/// The queue of `function`; `None` when JetStream cannot be asked.
pub async fn queues(ctx: &Ctx, function: &str) -> Option<Queues> {
    let info = ctx
        .nats
        .submit
        .consumer_info(crate::core::subjects::dispatch_consumer(function))
        .await
        .ok()?;
    let counts = ctx.index.queue_counts(function, Timestamp::now());
    let (running, delayed) = (counts.running as u64, counts.delayed as u64);
    let (pending, ack_pending) = (info.num_pending, info.num_ack_pending as u64);
    Some(Queues {
        pending,
        ack_pending,
        running,
        delayed,
        queued: (pending + ack_pending).saturating_sub(running + delayed),
    })
}

/// An attempt counted in `jetask_attempts_in_flight` while it lives.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A label for an attempt's outcome.
pub fn outcome_label(o: Option<&crate::core::outcome::Outcome>) -> String {
    use crate::core::outcome::Outcome;
    match o {
        None => "stopped".into(),
        Some(Outcome::Success { .. }) => "success".into(),
        Some(Outcome::Accepted) => "async".into(),
        Some(Outcome::Throttled { .. }) => "throttled".into(),
        Some(Outcome::Retryable(e)) | Some(Outcome::Fatal(e)) => format!("{:?}", e.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::machine::{create, NewTask};

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        out
    }

    #[test]
    fn transitions_count_by_function_and_state_and_time_from_the_due_moment() {
        let m = Metrics::new();
        let mut r = create(NewTask::new("t1", "resize", "u", 1, vec![]), None, Timestamp(1_000)).record;
        r.not_before = Some(Timestamp(5_000));
        m.transition(&r, Status::Enqueued, Timestamp(1_000));
        r = crate::core::machine::apply(&r, crate::core::machine::Event::Dequeue, Timestamp(5_000))
            .unwrap()
            .record;
        r = crate::core::machine::apply(&r, crate::core::machine::Event::Start { attempt: 1 }, Timestamp(5_250))
            .unwrap()
            .record;
        m.transition(&r, Status::Running, Timestamp(5_250));
        m.transition(&r, Status::Succeeded, Timestamp(7_000));
        let t = text(&m);
        assert!(t.contains("jetask_tasks_submitted_total{function=\"resize\"} 1"), "{t}");
        assert!(
            t.contains("jetask_tasks_finished_total{function=\"resize\",state=\"Succeeded\"} 1"),
            "{t}"
        );
        // 0.25 s late: in the 0.25 bucket, not the 0.1 one.
        assert!(
            t.contains("jetask_queue_time_seconds_bucket{le=\"0.1\",function=\"resize\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("jetask_queue_time_seconds_bucket{le=\"0.25\",function=\"resize\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("jetask_end_to_end_seconds_sum{function=\"resize\"} 2.0"),
            "{t}"
        );
    }

    #[test]
    fn a_retry_does_not_count_queue_time_again() {
        let m = Metrics::new();
        let mut r = create(NewTask::new("t1", "f", "u", 1, vec![]), None, Timestamp(0)).record;
        r.started_at = Some(Timestamp(10));
        r.attempt_started_at = Some(Timestamp(9_000));
        r.attempts = 2;
        m.transition(&r, Status::Running, Timestamp(9_000));
        assert!(!text(&m).contains("jetask_queue_time_seconds_count{function=\"f\"}"));
    }

    #[test]
    fn in_flight_goes_back_down_when_the_attempt_ends() {
        let m = Metrics::new();
        let a = m.in_flight("f");
        let b = m.in_flight("f");
        assert!(text(&m).contains("jetask_attempts_in_flight{function=\"f\"} 2"));
        drop(a);
        drop(b);
        assert!(text(&m).contains("jetask_attempts_in_flight{function=\"f\"} 0"));
    }
}

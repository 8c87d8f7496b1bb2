//! How the list index holds up with many tasks: fills a fresh index with TASKS entries (default
//! 1,000,000) the way the follower does (an insert when submitted, an update when started and
//! one when finished, in transactions of 1,024), then times the first page of each list the
//! console asks for and the overview's figures of every function.
//!
//! ```text
//! cargo run --release --example index_load -- [TASKS]
//! ```
//!
//! The tasks were created over the last two hours, by 20 functions and 1,000 users, one of
//! whom has half of them; 90% succeeded, 5% failed, 1% were stopped, 2% are queued, 1% running
//! and 1% backing off. IDs are time-ordered like jetask's own (UUIDv7, simple form). Each query
//! is run 5 times; the slowest is shown.

use jetask::core::task::Status;
use jetask::core::time::Timestamp;
use jetask::store::index::{Change, Index, Query, Timing};
use std::time::{Duration, Instant};

const FUNCTIONS: usize = 20;
const USERS: usize = 1_000;
const BATCH: usize = 1_024;
const SPAN_MS: i64 = 2 * 3_600_000;

struct Task {
    id: String,
    function: String,
    user: String,
    created: i64,
    end: Status,
}

fn id_at(ms: i64, n: u64) -> String {
    // 48 bits of milliseconds, then version 7 and 76 bits that differ per task.
    let m = mix(n ^ 0x5555);
    format!("{:012x}7{:03x}{:016x}", ms, (m >> 52) & 0xfff, m)
}

/// splitmix64: independent-looking figures from a task's number.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn tasks(n: usize, now: i64) -> Vec<Task> {
    (0..n)
        .map(|i| {
            let created = now - SPAN_MS + (i as i64 * SPAN_MS) / n as i64;
            let m = mix(i as u64);
            let r = m % 100;
            let end = match r {
                0..=89 => Status::Succeeded,
                90..=94 => Status::Failed,
                95 => Status::Stopped,
                96 | 97 => Status::Enqueued,
                98 => Status::Running,
                _ => Status::Retrying,
            };
            let user = if (m >> 8).is_multiple_of(2) {
                "big".to_string()
            } else {
                format!("u{}", (m >> 16) % (USERS as u64 - 1))
            };
            Task {
                id: id_at(created, i as u64),
                function: format!("f{}", (m >> 32) % FUNCTIONS as u64),
                user,
                created,
                end,
            }
        })
        .collect()
}

fn change(t: &Task, status: Status, timing: Timing, due: i64) -> Change {
    Change::Upsert {
        id: t.id.clone(),
        function: t.function.clone(),
        user: t.user.clone(),
        status,
        created: t.created,
        updated: t.created,
        due,
        timing,
    }
}

fn apply(index: &Index, what: &str, changes: impl Iterator<Item = Change>, now: Timestamp) {
    let started = Instant::now();
    let mut n = 0usize;
    let mut batch = Vec::with_capacity(BATCH);
    for c in changes {
        batch.push(c);
        if batch.len() == BATCH {
            n += batch.len();
            index.apply_at(&batch, now).expect("apply");
            batch.clear();
        }
    }
    n += batch.len();
    index.apply_at(&batch, now).expect("apply");
    let took = started.elapsed();
    println!(
        "{what:<32} {n:>9} writes in {:>6.2} s  ({:>7.0} writes/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

fn slowest(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut worst = Duration::ZERO;
    let mut rows = 0;
    for _ in 0..runs {
        let t = Instant::now();
        rows = f();
        worst = worst.max(t.elapsed());
    }
    (worst, rows)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("TASKS is a number"))
        .unwrap_or(1_000_000);
    let now = Timestamp::now();
    let t = now.millis();
    let all = tasks(n, t);
    let index = Index::open_temp().expect("index");

    println!("filling an index with {n} tasks");
    apply(
        &index,
        "submitted (insert)",
        all.iter().map(|x| change(x, Status::Enqueued, Timing::default(), 0)),
        now,
    );
    let start_of = |x: &Task| x.created + 50;
    let started = |x: &Task| Timing {
        started: Some(start_of(x)),
        queue_ms: Some(50),
        ..Default::default()
    };
    apply(
        &index,
        "started (update)",
        all.iter()
            .filter(|x| x.end != Status::Enqueued)
            .map(|x| change(x, Status::Running, started(x), 0)),
        now,
    );
    apply(
        &index,
        "finished or backing off (update)",
        all.iter()
            .filter(|x| !matches!(x.end, Status::Enqueued | Status::Running))
            .map(|x| {
                if x.end == Status::Retrying {
                    let timing = Timing {
                        throttled: x.created.rem_euclid(3) == 0,
                        ..started(x)
                    };
                    change(x, Status::Retrying, timing, t + 60_000)
                } else {
                    let run = 20 + (x.created % 500) as u64;
                    let timing = Timing {
                        finished: Some(start_of(x) + run as i64),
                        run_ms: Some(run),
                        ..started(x)
                    };
                    change(x, x.end, timing, 0)
                }
            }),
        now,
    );
    println!("index entries: {}\n", index.len());

    let page = 50;
    let q = Query {
        limit: page,
        ..Default::default()
    };
    let newest = &all[n - 1].id;
    let hour_ago = Timestamp(t - 3_600_000);
    let cases: Vec<(String, Query)> = vec![
        ("no filter".into(), q.clone()),
        (
            "function".into(),
            Query {
                function: Some("f3".into()),
                ..q.clone()
            },
        ),
        (
            "status=Failed".into(),
            Query {
                status: Some(Status::Failed),
                ..q.clone()
            },
        ),
        (
            "status=Enqueued".into(),
            Query {
                status: Some(Status::Enqueued),
                ..q.clone()
            },
        ),
        (
            "function + status=Failed".into(),
            Query {
                function: Some("f3".into()),
                status: Some(Status::Failed),
                ..q.clone()
            },
        ),
        (
            "user (half of all tasks)".into(),
            Query {
                user: Some("big".into()),
                ..q.clone()
            },
        ),
        (
            "user (one of 999 small)".into(),
            Query {
                user: Some("u17".into()),
                ..q.clone()
            },
        ),
        (
            "small user + status=Failed".into(),
            Query {
                user: Some("u17".into()),
                status: Some(Status::Failed),
                ..q.clone()
            },
        ),
        (
            "small user + function".into(),
            Query {
                user: Some("u17".into()),
                function: Some("f3".into()),
                ..q.clone()
            },
        ),
        (
            "user + function + status".into(),
            Query {
                user: Some("big".into()),
                function: Some("f4".into()),
                status: Some(Status::Failed),
                ..q.clone()
            },
        ),
        (
            "time range (10 min, 1 h ago)".into(),
            Query {
                since: Some(Timestamp(hour_ago.millis() - 600_000)),
                until: Some(hour_ago),
                ..q.clone()
            },
        ),
        (
            "function + status + time range".into(),
            Query {
                function: Some("f3".into()),
                status: Some(Status::Failed),
                since: Some(Timestamp(hour_ago.millis() - 600_000)),
                until: Some(hour_ago),
                ..q.clone()
            },
        ),
        (
            "id_prefix: a whole ID".into(),
            Query {
                id_prefix: Some(newest.clone()),
                ..q.clone()
            },
        ),
        (
            "id_prefix: 9 chars (~4 s of tasks)".into(),
            Query {
                id_prefix: Some(all[n / 2].id[..9].to_string()),
                ..q.clone()
            },
        ),
        (
            "id_prefix: 8 chars (~1 min)".into(),
            Query {
                id_prefix: Some(all[n / 4].id[..8].to_string()),
                ..q.clone()
            },
        ),
        (
            "id_prefix: 7 chars (~17 min, old)".into(),
            Query {
                id_prefix: Some(all[n / 10].id[..7].to_string()),
                ..q.clone()
            },
        ),
        (
            "id_prefix: 1 char (every task)".into(),
            Query {
                id_prefix: Some(newest[..1].to_string()),
                ..q.clone()
            },
        ),
        (
            "id_prefix with no match".into(),
            Query {
                id_prefix: Some("zzzz".into()),
                ..q.clone()
            },
        ),
    ];
    println!("first page of {page}, slowest of 5 runs:");
    for (what, query) in &cases {
        let (took, rows) = slowest(5, || index.query(query).expect("query").0.len());
        println!("  {what:<36} {:>8.2} ms  ({rows} rows)", took.as_secs_f64() * 1e3);
    }
    let (_, next) = index.query(&cases[0].1).expect("query");
    let second = Query {
        cursor: next,
        ..q.clone()
    };
    let (took, rows) = slowest(5, || index.query(&second).expect("query").0.len());
    println!(
        "  {:<36} {:>8.2} ms  ({rows} rows)",
        "second page",
        took.as_secs_f64() * 1e3
    );

    println!("\noverview ({FUNCTIONS} functions), slowest of 5 runs:");
    for (what, user) in [
        ("every user", None),
        ("the big user", Some("big")),
        ("a small user", Some("u17")),
    ] {
        let mut finished = 0;
        let (took, _) = slowest(5, || {
            finished = 0;
            for f in 0..FUNCTIONS {
                let s = index.stats(&format!("f{f}"), user, now).expect("stats");
                finished += s.last_hour.total();
            }
            FUNCTIONS
        });
        println!(
            "  {what:<36} {:>8.2} ms  ({finished} finished in the last hour)",
            took.as_secs_f64() * 1e3
        );
    }
}

//! The pure code on every task's path, measured without I/O: `cargo bench`.
//! Per task, dispatch runs one submission parse, four transitions, three record encodings (one
//! per write), one decoding (the dispatcher's read) and four event encodings.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use jetask::core::machine::{self, Event, NewTask};
use jetask::core::task::{Status, TaskRecord};
use jetask::core::time::Timestamp;
use std::hint::black_box;
use std::time::Duration;

const INPUT: &[u8] = &[b'x'; 256];

fn created() -> TaskRecord {
    machine::create(
        NewTask::new(
            "0190b7c4-6c58-7d0e-a3a4-11f9c6a1d1e2",
            "resize",
            "ann",
            42,
            INPUT.to_vec(),
        ),
        None,
        Timestamp(1_700_000_000_000),
    )
    .record
}

fn succeeded() -> TaskRecord {
    let mut r = created();
    for (ev, at) in [
        (Event::Dequeue, 1),
        (Event::Start { attempt: 1 }, 2),
        (
            Event::Succeed {
                result: Default::default(),
                detail: "200".into(),
            },
            30,
        ),
    ] {
        r = machine::apply(&r, ev, Timestamp(1_700_000_000_000 + at))
            .unwrap()
            .record;
    }
    r
}

fn lifecycle(c: &mut Criterion) {
    c.bench_function("machine: create, dequeue, start, succeed", |b| {
        b.iter(|| {
            let mut r = created();
            r = machine::apply(&r, Event::Dequeue, Timestamp(1)).unwrap().record;
            r = machine::apply(&r, Event::Start { attempt: 1 }, Timestamp(2))
                .unwrap()
                .record;
            let t = machine::apply(
                &r,
                Event::Succeed {
                    result: Default::default(),
                    detail: "200".into(),
                },
                Timestamp(3),
            )
            .unwrap();
            black_box(t)
        })
    });
    c.bench_function("submission: parse headers and input", |b| {
        let headers = [
            ("Nats-Msg-Id", "job-42"),
            ("Jetask-User", "ann"),
            ("Jetask-Delay", "30s"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ];
        let egress = jetask::core::egress::Policy::default();
        let rules = jetask::core::destination::Rules {
            nats_allow: &[],
            egress: &egress,
        };
        b.iter(|| {
            black_box(jetask::core::submission::from_message(
                "resize",
                |k| headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(k)).map(|(_, v)| *v),
                INPUT,
                42,
                Timestamp(1_700_000_000_000),
                Duration::from_secs(7 * 86_400),
                1 << 20,
                &rules,
            ))
        })
    });
}

fn encoding(c: &mut Criterion) {
    let r = succeeded();
    let bytes = serde_json::to_vec(&r).unwrap();
    c.bench_function("record: encode (KV write)", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&r)).unwrap()))
    });
    c.bench_function("record: decode (KV read)", |b| {
        b.iter(|| black_box(serde_json::from_slice::<TaskRecord>(black_box(&bytes)).unwrap()))
    });
    c.bench_function("record: event body", |b| {
        b.iter(|| black_box(r.serialized().event(Status::Succeeded)))
    });
    c.bench_function("record: a write's value and its event (one serialization)", |b| {
        b.iter(|| {
            let s = black_box(&r).serialized();
            black_box((s.record(), s.event(Status::Succeeded)))
        })
    });
    c.bench_function("signing: Standard Webhooks signature of a result", |b| {
        b.iter(|| {
            black_box(
                jetask::core::signing::sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", 1_700_000_000, &bytes)
                    .unwrap(),
            )
        })
    });
}

criterion_group!(benches, lifecycle, encoding);
criterion_main!(benches);

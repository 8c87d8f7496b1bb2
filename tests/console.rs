//! The web console (CONTRACT §12, issue 19): served by the binary at `/` and `/ui/...`, drawn
//! from the public API only. The API it adds (`GET /v1/overview`, `GET /v1/tasks/{id}/timeline`,
//! `id_prefix`) is checked over HTTP; the pages are driven in a real headless Chromium through
//! chromedriver against a running jetask with real tasks, and every run saves a screenshot of
//! each page under `target/console-screenshots/` (copies are in `docs/console/`).

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::webdriver::Browser;
use support::{
    config, start_app, start_app_for_alice_and_bob, wait_for, App, NatsServer, Receiver, Reply, ALICE_TOKEN,
};

/// One browser at a time: two Chromiums at once are heavy on a small machine.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(20);

/// A function endpoint answering by input: `hang` never answers, `fail` is a 500, `flaky`
/// fails its first two attempts, anything else succeeds with a JSON result.
async fn endpoint() -> Receiver {
    Receiver::start(|call, _| {
        let body = String::from_utf8_lossy(&call.body).to_string();
        match body.as_str() {
            "hang" => Reply::Hang,
            "fail" => Reply::code(500),
            "flaky" if call.attempt() < 3 => Reply::code(500),
            _ => Reply::ok(&json!({"echo": body, "ok": true}).to_string())
                .with_header("Content-Type", "application/json"),
        }
    })
    .await
}

async fn put_work(app: &App, rx: &Receiver, name: &str, max_attempts: u32) {
    app.put_fn(
        name,
        json!({
            "endpoint": rx.url(),
            "max_attempts": max_attempts,
            "backoff": {"initial": "200ms", "jitter": false},
            "timeout": "60s",
        }),
    )
    .await;
}

async fn terminal(app: &App, id: &str) -> Value {
    app.wait_status_in(id, &["Succeeded", "Failed", "Stopped", "Expired", "Invalid"], WAIT)
        .await
}

/// Opens the policy editor of the function in row `frow`, waits for its policy (with
/// `max_attempts` at `shown`), and sets `max_attempts` to `to` in the editor, unsaved.
async fn edit_max_attempts(b: &Browser, frow: &str, shown: u32, to: u32) {
    b.click(&format!("{frow} button.edit")).await;
    let expected = format!("\"max_attempts\": {shown}");
    b.wait_until(
        "the policy in the editor",
        WAIT,
        || b.value("#editor-text"),
        |t| t.as_deref().is_some_and(|t| t.contains(&expected)),
    )
    .await;
    b.js(
        "const t = document.querySelector('#editor-text'); const v = JSON.parse(t.value); v.max_attempts = arguments[0]; t.value = JSON.stringify(v, null, 2);",
        json!([to]),
    )
    .await;
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_without_a_token() {
    let nats = NatsServer::start();
    let mut c = config(&nats);
    c.auth.tokens.insert(ALICE_TOKEN.into(), "alice".into());
    let app = start_app(c).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/tasks/anything", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = app.http.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}: {h:?}");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        let etag = h["etag"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        assert!(!body.is_empty());
        if kind == "text/html" {
            assert!(
                body.contains("/ui/app.js") && !body.contains("http"),
                "{path}: no outside address"
            );
        }
        // Unchanged since: 304 and no body.
        let again = app
            .http
            .get(format!("{}{path}", app.base))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    // The page loads without a token; the API it calls does not.
    assert_eq!(app.get("/v1/overview").await.status, 401);
    assert_eq!(app.get("/nothing-here").await.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn the_overview_timeline_and_id_prefix_answer_the_callers_own_tasks() {
    let nats = NatsServer::start();
    let (app, alice, bob) = start_app_for_alice_and_bob(&nats).await;
    let rx = endpoint().await;
    put_work(&alice, &rx, "work", 3).await;
    let a_ok = alice.submit("work", "hello", &[]).await;
    let a_flaky = alice.submit("work", "flaky", &[]).await;
    let b_fail = bob.submit("work", "fail", &[]).await;
    for (who, id) in [(&alice, &a_ok), (&alice, &a_flaky), (&bob, &b_fail)] {
        terminal(who, id).await;
    }

    // The overview follows the index, which follows record writes within milliseconds.
    let hour = |a: &Value| {
        (
            a["functions"][0]["last_hour"]["succeeded"].clone(),
            a["functions"][0]["last_hour"]["failed"].clone(),
        )
    };
    wait_for("alice's overview", WAIT, || async {
        hour(&alice.get("/v1/overview").await.body) == (json!(2), json!(0))
    })
    .await;
    wait_for("bob's overview", WAIT, || async {
        hour(&bob.get("/v1/overview").await.body) == (json!(0), json!(1))
    })
    .await;
    let o = alice.get("/v1/overview?function=work").await.body;
    assert_eq!(o["user"], "alice");
    let f = &o["functions"][0];
    assert_eq!(f["name"], "work");
    assert_eq!(f["run_ms"]["count"], 2);
    assert!(f["queue_ms"]["p50"].is_u64() && f["run_ms"]["p99"].is_u64(), "{f}");
    assert_eq!(f["concurrency"]["max"], 100);
    assert_eq!(f["series"]["finished"].as_array().unwrap().len(), 60);
    assert_eq!(
        f["series"]["finished"][59].as_u64().unwrap() + f["series"]["finished"][58].as_u64().unwrap(),
        2
    );
    for (path, code) in [
        ("/v1/overview?function=nope", 404),
        ("/v1/overview?function=a.b", 400),
        ("/v1/overview?user=bob", 400),
    ] {
        assert_eq!(alice.get(path).await.status, code, "{path}");
    }

    // The timeline: three attempts, two backoffs between them.
    let t = alice.get(&format!("/v1/tasks/{a_flaky}/timeline")).await.body;
    let kinds: Vec<&str> = t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "attempt").count(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "backoff").count(), 2, "{kinds:?}");
    let last = t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s["kind"] == "attempt")
        .unwrap();
    assert_eq!(
        (last["attempt"].clone(), last["outcome"].clone()),
        (json!(3), json!("Succeeded"))
    );
    assert!(t["spans"][0]["duration_ms"].is_u64());
    // Someone else's task is no one's to see.
    assert_eq!(bob.get(&format!("/v1/tasks/{a_flaky}/timeline")).await.status, 404);
    assert_eq!(alice.get("/v1/tasks/bad.id/timeline").await.status, 400);

    // ID prefixes: a range of IDs, never a pattern; the caller's tasks only.
    let listed = |a: &Value| -> Vec<String> {
        a["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = alice.get(&format!("/v1/tasks?id_prefix={}", &a_ok[..24])).await;
    assert_eq!(listed(&r.body), vec![a_ok.clone()]);
    assert!(listed(&bob.get(&format!("/v1/tasks?id_prefix={}", &a_ok[..24])).await.body).is_empty());
    assert_eq!(
        listed(&bob.get(&format!("/v1/tasks?id_prefix={b_fail}")).await.body),
        vec![b_fail.clone()]
    );
    let long = "a".repeat(129);
    for bad in ["%25", "_%25", "a%27%20OR%201=1--", "", long.as_str(), "%C3%A9"] {
        let r = alice.get(&format!("/v1/tasks?id_prefix={bad}")).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].clone()),
            (400, json!("invalid_query")),
            "{bad}: {}",
            r.body
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_console_shows_live_figures_timelines_and_acts_on_tasks_in_a_real_browser() {
    let _one = BROWSER.lock().await;
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = endpoint().await;
    put_work(&app, &rx, "work", 3).await;
    put_work(&app, &rx, "reports", 1).await;
    let s = app
        .send(
            app.http
                .put(format!("{}/v1/schedules/hourly-digest", app.base))
                .json(&json!({"function": "work", "every": "1h", "input": {"digest": true}})),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.body);
    let b = Browser::start(1280, 900).await;

    // Overview: live counts, no reload.
    b.goto(&format!("{}/", app.base)).await;
    let row = "#overview tr[data-function=work]";
    let cell = |col: &str| format!("{row} [data-col={col}]");
    b.wait_text(&cell("succeeded_hour"), WAIT, |t| t == "0").await;
    let mut ok = Vec::new();
    for i in 0..3 {
        ok.push(app.submit("work", &format!("{{\"n\": {i}}}"), &[]).await);
    }
    let hang = app.submit("work", "hang", &[]).await;
    b.wait_text(&cell("succeeded_hour"), WAIT, |t| t == "3").await;
    b.wait_text(&cell("running"), WAIT, |t| t == "1").await;
    assert_eq!(b.text(&cell("failed_hour")).await.as_deref(), Some("0"));
    b.screenshot("overview").await;

    // "Tasks" from the overview: the function's list, newest first.
    b.click(&format!("{row} a[data-tasks=work]")).await;
    b.wait_until(
        "the tasks page",
        WAIT,
        || b.hash(),
        |h| h.starts_with("#/tasks?function=work"),
    )
    .await;
    b.wait_count("#tasks tbody tr[data-id]", 4, WAIT).await;
    assert_eq!(
        b.attr("#tasks tbody tr[data-id]", "data-id").await.as_deref(),
        Some(hang.as_str())
    );
    b.screenshot("tasks").await;
    // Search by ID prefix, typed.
    b.type_into("#f-id", &format!("{}\u{E007}", &ok[1][..24])).await;
    b.wait_until(
        "only the searched task",
        WAIT,
        || async {
            (
                b.count("#tasks tbody tr[data-id]").await,
                b.attr("#tasks tbody tr[data-id]", "data-id").await,
            )
        },
        |(n, id)| *n == 1 && id.as_deref() == Some(ok[1].as_str()),
    )
    .await;

    // A task's timeline, attempt by attempt, live while it runs.
    let flaky = app.submit("work", "flaky", &[]).await;
    b.goto(&format!("{}/#/task/{flaky}", app.base)).await;
    b.wait_count(".timeline .span[data-kind=attempt]", 3, WAIT).await;
    b.wait_until(
        "Succeeded",
        WAIT,
        || b.attr("#task-status", "data-status"),
        |s| s.as_deref() == Some("Succeeded"),
    )
    .await;
    assert_eq!(b.count(".timeline .span[data-kind=backoff]").await, 2);
    b.wait_text("[data-name=result] pre", WAIT, |t| t.contains("\"echo\": \"flaky\""))
        .await;
    assert_eq!(
        b.attr("[data-name=result] pre", "data-mode").await.as_deref(),
        Some("JSON")
    );
    b.screenshot("task").await;

    // The stop button stops a running task.
    b.goto(&format!("{}/#/task/{hang}", app.base)).await;
    b.wait_until(
        "Running",
        WAIT,
        || b.attr("#task-status", "data-status"),
        |s| s.as_deref() == Some("Running"),
    )
    .await;
    assert_eq!(b.count(".timeline .span[data-kind=attempt][data-open='1']").await, 1);
    b.click("#stop").await;
    b.click("#confirm-ok").await;
    b.wait_until(
        "Stopped",
        WAIT,
        || b.attr("#task-status", "data-status"),
        |s| s.as_deref() == Some("Stopped"),
    )
    .await;
    assert_eq!(app.task(&hang).await.unwrap()["status"], "Stopped");
    wait_for("the call aborted", WAIT, || async { rx.aborted() == 1 }).await;

    // Bulk replay of every Failed task of a function: exactly those.
    let mut failed = Vec::new();
    let mut succeeded = Vec::new();
    for i in 0..5 {
        if i % 2 == 0 {
            failed.push(app.submit("reports", "fail", &[]).await);
        } else {
            succeeded.push(app.submit("reports", "fine", &[]).await);
        }
    }
    for id in failed.iter().chain(&succeeded) {
        terminal(&app, id).await;
    }
    b.goto(&format!("{}/#/tasks?function=reports", app.base)).await;
    b.wait_count("#tasks tbody tr[data-id]", 5, WAIT).await;
    b.type_into("#f-status", "Failed").await;
    b.wait_until("the Failed filter", WAIT, || b.hash(), |h| h.contains("status=Failed"))
        .await;
    b.wait_until(
        "only failed rows",
        WAIT,
        || async {
            (
                b.count("#tasks tbody tr[data-id]").await,
                b.count("#tasks tbody tr[data-status=Failed]").await,
            )
        },
        |(all, f)| *all == 3 && *f == 3,
    )
    .await;
    b.click("#bulk-replay").await;
    b.wait_text("#confirm-body", WAIT, |t| t.contains("Failed tasks of reports"))
        .await;
    b.screenshot("bulk-replay-confirm").await;
    b.click("#confirm-ok").await;
    b.wait_until(
        "the bulk answer",
        WAIT,
        || b.attr("#bulk-result [data-acted]", "data-acted"),
        |a| a.as_deref() == Some("3"),
    )
    .await;
    assert_eq!(
        b.attr("#bulk-result [data-matched]", "data-matched").await.as_deref(),
        Some("3")
    );
    b.screenshot("bulk-replay").await;
    let all = app.get("/v1/tasks?function=reports&limit=100").await.body;
    let mut replayed: Vec<String> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["replay_of"].as_str().map(str::to_string))
        .collect();
    replayed.sort();
    failed.sort();
    assert_eq!(replayed, failed, "replays of exactly the failed tasks");

    // Functions: disable one, edit a policy.
    b.goto(&format!("{}/#/functions", app.base)).await;
    let frow = "#functions tr[data-function=reports]";
    b.wait_count(frow, 1, WAIT).await;
    b.screenshot("functions").await;
    b.click(&format!("{frow} button.switch")).await;
    wait_for("reports disabled", WAIT, || async {
        app.get("/v1/functions/reports").await.body["enabled"] == false
    })
    .await;
    let switch = format!("{frow} button.switch");
    b.wait_until(
        "the switch off",
        WAIT,
        || b.attr(&switch, "aria-checked"),
        |v| v.as_deref() == Some("false"),
    )
    .await;
    edit_max_attempts(&b, frow, 1, 5).await;
    b.screenshot("function-edit").await;
    b.click("#editor-save").await;
    wait_for("the edited policy", WAIT, || async {
        app.get("/v1/functions/reports").await.body["max_attempts"] == 5
    })
    .await;
    // A refused policy keeps the editor open with the reason.
    edit_max_attempts(&b, frow, 5, 0).await;
    b.click("#editor-save").await;
    b.wait_text("#editor-error", WAIT, |t| t.contains("max_attempts")).await;
    b.click("#editor-cancel").await;

    // Schedules: view, disable.
    b.goto(&format!("{}/#/schedules", app.base)).await;
    let srow = "#schedules tr[data-schedule=hourly-digest]";
    b.wait_text(&format!("{srow} td:nth-child(4)"), WAIT, |t| t == "every 1h")
        .await;
    b.screenshot("schedules").await;
    b.click(&format!("{srow} button.switch")).await;
    wait_for("the schedule disabled", WAIT, || async {
        app.get("/v1/schedules/hourly-digest").await.body["enabled"] == false
    })
    .await;

    // Keyboard: g t goes to the tasks, / to the ID search.
    b.goto(&format!("{}/#/", app.base)).await;
    b.wait_count(row, 1, WAIT).await;
    b.keys("gt").await;
    b.wait_until("the tasks page by keyboard", WAIT, || b.hash(), |h| h == "#/tasks")
        .await;
    b.keys("/").await;
    b.wait_until(
        "the search focused",
        WAIT,
        || b.js("return document.activeElement.id;", json!([])),
        |v| v == "f-id",
    )
    .await;

    // A phone.
    b.resize(390, 844).await;
    b.goto(&format!("{}/#/", app.base)).await;
    b.wait_text(&cell("succeeded_hour"), WAIT, |t| t == "4").await;
    b.screenshot("overview-phone").await;
    b.goto(&format!("{}/#/task/{flaky}", app.base)).await;
    b.wait_count(".timeline .span[data-kind=attempt]", 3, WAIT).await;
    b.screenshot("task-phone").await;
    b.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn with_tokens_the_console_asks_for_one_and_shows_only_that_users_tasks() {
    let _one = BROWSER.lock().await;
    let nats = NatsServer::start();
    let (app, alice, bob) = start_app_for_alice_and_bob(&nats).await;
    let rx = endpoint().await;
    put_work(&alice, &rx, "work", 1).await;
    let mine = [
        alice.submit("work", "a1", &[]).await,
        alice.submit("work", "fail", &[]).await,
    ];
    let theirs = [
        bob.submit("work", "b1", &[]).await,
        bob.submit("work", "b2", &[]).await,
        bob.submit("work", "fail", &[]).await,
    ];
    for id in &mine {
        terminal(&alice, id).await;
    }
    for id in &theirs {
        terminal(&bob, id).await;
    }

    let b = Browser::start(1280, 900).await;
    b.goto(&format!("{}/", app.base)).await;
    b.wait_until("the sign-in dialog", WAIT, || b.attr("#login", "open"), |o| o.is_some())
        .await;
    b.screenshot("sign-in").await;
    b.type_into("#login-token", "wrong-token-000").await;
    b.click("#login-ok").await;
    b.wait_text("#login-error", WAIT, |t| t.contains("not known")).await;
    b.type_into("#login-token", ALICE_TOKEN).await;
    b.click("#login-ok").await;
    let row = "#overview tr[data-function=work]";
    b.wait_text(&format!("{row} [data-col=succeeded_hour]"), WAIT, |t| t == "1")
        .await;
    assert_eq!(
        b.text(&format!("{row} [data-col=failed_hour]")).await.as_deref(),
        Some("1")
    );
    assert_eq!(b.text("#who").await.as_deref(), Some("user alice"));

    b.goto(&format!("{}/#/tasks", app.base)).await;
    b.wait_count("#tasks tbody tr[data-id]", 2, WAIT).await;
    let shown = b
        .js(
            "return Array.from(document.querySelectorAll('#tasks tbody tr[data-id]')).map(r => r.dataset.id).sort();",
            json!([]),
        )
        .await;
    let mut expect = mine.to_vec();
    expect.sort();
    assert_eq!(shown, json!(expect));
    // Even a search for one of bob's IDs finds nothing.
    b.type_into("#f-id", &format!("{}\u{E007}", theirs[0])).await;
    b.wait_text("#tasks tbody td.empty", WAIT, |t| t.contains("No task matches"))
        .await;
    b.screenshot("tasks-signed-in").await;
    // A bulk replay from alice's console replays alice's failed task only.
    b.goto(&format!("{}/#/tasks?function=work&status=Failed", app.base))
        .await;
    b.wait_count("#tasks tbody tr[data-status=Failed]", 1, WAIT).await;
    b.click("#bulk-replay").await;
    b.click("#confirm-ok").await;
    b.wait_until(
        "the bulk answer",
        WAIT,
        || b.attr("#bulk-result [data-acted]", "data-acted"),
        |a| a.as_deref() == Some("1"),
    )
    .await;
    // Signing out forgets the token.
    b.click("#signout").await;
    b.wait_until(
        "the sign-in dialog again",
        WAIT,
        || b.attr("#login", "open"),
        |o| o.is_some(),
    )
    .await;
    b.quit().await;
    app.stop().await;
}

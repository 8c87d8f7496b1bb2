//! The README's tour, run as written (issue 17): the shell blocks of "A five-minute tour" are
//! taken from README.md itself, so the README cannot drift from what this test runs. It starts
//! `jetask dev` (the built binary, which starts its own real nats-server) in a temp dir, then
//! feeds the tour's commands one by one to a single `bash` with `set -euo pipefail` and
//! `jetask` on PATH: shell variables such as `ID=$(jetask submit … --print-id)` carry from one
//! step to the next, and a command that fails stops the run, naming its README line.
//!
//! What each step must do is written in the README: a command's trailing `# prints: TEXT` must
//! be found in its standard output (`…` stands for anything, `$NAME` for that shell variable's
//! value), and a comment line `# jetask dev prints: TEXT` must show up on `jetask dev`'s
//! output. The only changes made to the commands: the fixed addresses of the README are moved
//! to free ports (another `jetask dev` may be running on this machine), benches run with a
//! hundred tasks (the `--cluster` one only with `JETASK_TOUR_CLUSTER=1`: starting a 3-node
//! cluster takes most of a minute on a busy box), and `nats` (the NATS CLI) lines are skipped
//! when that CLI is not installed.
//! The README's addresses are checked to be the defaults of `jetask dev` and the configuration.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead as _, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const README: &str = include_str!("../README.md");

/// The whole run's limit; it takes about half of it.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// How long a list may take to show a change (the list index follows the records).
const LIST_PATIENCE: Duration = Duration::from_secs(10);

/// One command of the tour, with what the README says it does.
#[derive(Debug)]
struct Step {
    /// 1-based line of README.md where the command starts.
    line: usize,
    command: String,
    prints: Option<String>,
    dev_prints: Vec<String>,
}

/// Splits a shell line into its code and its trailing comment (a `#` outside quotes that starts
/// a word).
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let (mut single, mut double, mut prev_space) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return (line[..i].trim_end(), Some(line[i + 1..].trim())),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    (line.trim_end(), None)
}

/// The commands of the `sh` blocks between "## A five-minute tour" and the next section.
fn tour_steps(readme: &str) -> Vec<Step> {
    let start = readme.find("## A five-minute tour").expect("README has the tour");
    let offset = readme[..start].lines().count();
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let (mut steps, mut in_block, mut pending): (Vec<Step>, bool, Option<Step>) = (Vec::new(), false, None);
    for (n, raw) in section.lines().enumerate() {
        let line = offset + n + 1;
        if raw.starts_with("```") {
            in_block = raw.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let trimmed = raw.trim();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            if let Some(expected) = trimmed.strip_prefix("# jetask dev prints:") {
                let last = steps
                    .last_mut()
                    .unwrap_or_else(|| panic!("README line {line}: no command before it"));
                last.dev_prints.push(expected.trim().to_string());
            }
            continue;
        }
        let (code, comment) = split_comment(raw);
        let step = pending.get_or_insert_with(|| Step {
            line,
            command: String::new(),
            prints: None,
            dev_prints: Vec::new(),
        });
        match code.strip_suffix('\\') {
            Some(first) if comment.is_none() => {
                step.command.push_str(first.trim());
                step.command.push(' ');
            }
            _ => {
                step.command.push_str(code.trim());
                step.prints = comment
                    .and_then(|c| c.strip_prefix("prints:"))
                    .map(|p| p.trim().to_string());
                steps.extend(pending.take());
            }
        }
    }
    assert!(pending.is_none(), "the tour ends inside a continued command");
    steps
}

/// Whether `text` holds the parts of `pattern` between its `…`, in order.
fn matches(text: &str, pattern: &str) -> bool {
    let mut rest = text;
    for part in pattern.split('…').map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The names of the shell variables a pattern uses (`$ID`).
fn variables(pattern: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, c) in pattern.char_indices() {
        if c != '$' {
            continue;
        }
        let name: String = pattern[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
            names.push(name);
        }
    }
    names
}

/// Lines of a child's output, read on a thread (the pipe blocks).
fn lines_of(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `jetask dev`: its output so far, and the means to stop it and the nats-server it started.
struct Dev {
    child: Child,
    lines: Receiver<String>,
    output: String,
    pid_file: std::path::PathBuf,
}

impl Dev {
    /// Reads its output until `pattern` shows up (true) or `deadline` passes (false).
    fn wait_for(&mut self, pattern: &str, deadline: Instant) -> bool {
        loop {
            if matches(&self.output, pattern) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push_str(&line);
                    self.output.push('\n');
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return matches(&self.output, pattern)
                }
            }
        }
    }
}

/// Stops a child: SIGTERM, then a kill if it has not exited within `grace`.
fn stop(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    if support::exited_within(child, grace).is_some() {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SIGTERM: jetask dev stops the service, then its nats-server.
        stop(&mut self.child, Duration::from_secs(20));
        // Had it to be killed, its nats-server would be left: stop that one by its PID too.
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if alive {
                let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        }
    }
}

/// The `bash` that runs the tour, one step at a time.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    steps: std::path::PathBuf,
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a step left: its exit (None: it ran, the shell goes on) and its output.
struct Ran {
    failed: Option<String>,
    stdout: String,
    stderr: String,
}

impl Shell {
    fn send(&mut self, text: &str) {
        self.stdin.write_all(text.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Runs step `n`'s command in the shell, its output in files, and waits for its end.
    fn run(&mut self, n: usize, command: &str, deadline: Instant) -> Ran {
        let (out, err) = (self.steps.join(format!("{n}.out")), self.steps.join(format!("{n}.err")));
        let _ = (std::fs::remove_file(&out), std::fs::remove_file(&err));
        self.send(&format!(
            "{{\n{command}\n}} </dev/null >{out:?} 2>{err:?}\necho \"::done {n}\"\n",
            out = out.display().to_string(),
            err = err.display().to_string()
        ));
        let failed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == format!("::done {n}") => break None,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    break Some("did not finish in time".to_string());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    break Some(format!("failed, and `set -e` ended the shell ({status})"));
                }
            }
        };
        Ran {
            failed,
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    /// The shell variable `name`'s value.
    fn variable(&mut self, name: &str, deadline: Instant) -> String {
        self.send(&format!("printf '::var %s\\n' \"${{{name}-}}\"\n"));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("the shell answers");
            if let Some(v) = line.strip_prefix("::var ") {
                return v.to_string();
            }
        }
    }

    /// `pattern` with its `$NAME`s replaced by the shell's values.
    fn expand(&mut self, pattern: &str, deadline: Instant) -> String {
        let mut names = variables(pattern);
        // Longest first, so that `$ID` does not eat the start of `$IDS`.
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut out = pattern.to_string();
        for name in names {
            let value = self.variable(&name, deadline);
            out = out.replace(&format!("${name}"), &value);
        }
        out
    }
}

/// `jetask bench` with a hundred tasks, and a `--due-in` of 2 s: the tour's figures are
/// for a person's patience, not a test's.
fn small_bench(command: &str) -> String {
    let mut words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    for i in 1..words.len() {
        match words[i - 1].as_str() {
            "--tasks" => words[i] = "100".into(),
            "--due-in" => words[i] = "2s".into(),
            _ => {}
        }
    }
    words.join(" ")
}

#[test]
fn the_readme_tour_parses_into_commands_with_expectations() {
    let (code, comment) = split_comment(r##"curl -d '{"a": "#x"}' "b # c" x  # prints: {"a"}"##);
    assert_eq!(code, r##"curl -d '{"a": "#x"}' "b # c" x"##);
    assert_eq!(comment, Some(r#"prints: {"a"}"#));
    assert!(matches("task 0191 is Stopped\n", "task … is Stopped"));
    assert!(!matches("task 0191 is Stopping\n", "task … is Stopped\n"));
    assert!(!matches("b a", "a … b"));
    assert_eq!(variables("task $ID and $NEW_1, $5 $"), ["ID", "NEW_1"]);
    assert_eq!(
        small_bench("jetask bench --tasks 20000 --due-in 10s"),
        "jetask bench --tasks 100 --due-in 2s"
    );

    let steps = tour_steps(README);
    assert!(steps.len() > 30, "{steps:#?}");
    let put = steps
        .iter()
        .find(|s| s.command.starts_with("jetask fn put resize"))
        .unwrap();
    assert!(
        put.command.contains(" --policy '{"),
        "a continued line is one command: {put:?}"
    );
    assert!(steps.iter().any(|s| !s.dev_prints.is_empty()));
    for s in &steps {
        assert!(
            !s.command.contains("cargo run"),
            "README line {}: the tour uses jetask itself",
            s.line
        );
    }
    let setup = &README[README.find("## Set up").unwrap()..README.find("## A five-minute tour").unwrap()];
    assert!(
        setup.contains("cargo install --path ."),
        "the README says how jetask gets on PATH"
    );
    assert!(!README.contains("alias jetask"), "no alias: jetask is installed");
}

#[test]
fn the_readme_tour_works_as_written() {
    let began = Instant::now();
    let deadline = began + RUN_LIMIT;
    // The README's fixed addresses are jetask's defaults; this run moves them to free ports.
    let defaults = jetask::core::config::Config::from_toml("").unwrap();
    assert_eq!(defaults.http.listen, "127.0.0.1:8080");
    assert_eq!(defaults.nats.url, "nats://127.0.0.1:4222");
    assert_eq!(jetask::cli::dev::DEMO_LISTEN, "127.0.0.1:9100");
    assert_eq!(jetask::cli::dev::RECEIVER_LISTEN, "127.0.0.1:9190");
    let ports = support::cluster::free_ports(4);
    let (http, nats, demo, receiver) = (ports[0], ports[1], ports[2], ports[3]);
    let moves = [
        ("127.0.0.1:8080", format!("127.0.0.1:{http}")),
        ("localhost:8080", format!("127.0.0.1:{http}")),
        ("127.0.0.1:4222", format!("127.0.0.1:{nats}")),
        ("127.0.0.1:9100", format!("127.0.0.1:{demo}")),
        ("127.0.0.1:9190", format!("127.0.0.1:{receiver}")),
    ];
    let moved = |s: &str| moves.iter().fold(s.to_string(), |s, (from, to)| s.replace(from, to));

    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_jetask"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path),
        ("JETASK_HTTP_LISTEN", format!("127.0.0.1:{http}")),
        ("JETASK_NATS_URL", format!("nats://127.0.0.1:{nats}")),
        ("JETASK_DEV_DEMO_LISTEN", format!("127.0.0.1:{demo}")),
        ("JETASK_DEV_RECEIVER_LISTEN", format!("127.0.0.1:{receiver}")),
    ];

    let mut child = Command::new(bin)
        .arg("dev")
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("dev.log")).unwrap())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let mut dev = Dev {
        child,
        lines,
        output: String::new(),
        pid_file: dir.path().join(".jetask-dev/nats-server.pid"),
    };
    let up = dev.wait_for("jetask is running … try:", began + Duration::from_secs(60));
    let log = || std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default();
    assert!(
        up,
        "jetask dev did not come up:\n{}\n--- its log:\n{}",
        dev.output,
        log()
    );
    for (name, path) in [
        ("demo", "/echo"),
        ("flaky", "/flaky"),
        ("slow", "/slow"),
        ("long", "/long"),
        ("notify", "/echo"),
    ] {
        let shown = format!("{name} … http://127.0.0.1:{demo}{path}");
        assert!(
            matches(&dev.output, &shown),
            "jetask dev lists {shown}:\n{}",
            dev.output
        );
    }
    for address in [
        format!("http://127.0.0.1:{http}"),
        format!("nats://127.0.0.1:{nats}"),
        format!("http://127.0.0.1:{receiver}/hook"),
    ] {
        assert!(
            dev.output.contains(&address),
            "jetask dev prints {address}:\n{}",
            dev.output
        );
    }

    let steps_dir = dir.path().join(".tour-steps");
    std::fs::create_dir_all(&steps_dir).unwrap();
    let mut child = Command::new("bash")
        .args(["--noprofile", "--norc"])
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let mut shell = Shell {
        child,
        stdin,
        lines,
        steps: steps_dir,
    };
    shell.send("set -euo pipefail\n");
    let has_nats_cli = Command::new("nats")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());

    let steps = tour_steps(README);
    let mut skipped = Vec::new();
    let mut timings = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let mut command = moved(&step.command);
        if command.starts_with("nats ") && !has_nats_cli {
            skipped.push(format!(
                "README line {}: {} (no `nats` CLI here)",
                step.line, step.command
            ));
            continue;
        }
        if command.starts_with("jetask bench") {
            // A 3-node cluster with R3 streams and two replicas takes 10 to 30 s to start and
            // stop on a shared 2-core box, whatever the task count: run it only when asked.
            if command.contains("--cluster") && std::env::var_os("JETASK_TOUR_CLUSTER").is_none() {
                skipped.push(format!(
                    "README line {}: {} (set JETASK_TOUR_CLUSTER=1 to run it)",
                    step.line, step.command
                ));
                continue;
            }
            command = small_bench(&command);
        }
        let said = |what: &str, ran: &Ran| {
            format!(
                "README line {}: `{}` {what}\n--- stdout:\n{}\n--- stderr:\n{}\n--- jetask dev:\n{}\n--- its log:\n{}",
                step.line,
                command,
                ran.stdout,
                ran.stderr,
                dev.output,
                log()
            )
        };
        let list_began = Instant::now();
        let step_began = Instant::now();
        loop {
            let ran = shell.run(n, &command, deadline);
            if let Some(how) = &ran.failed {
                panic!("{}", said(how, &ran));
            }
            let Some(expected) = &step.prints else { break };
            let expected = moved(&shell.expand(expected, deadline));
            if matches(&ran.stdout, &expected) {
                break;
            }
            // A list is read from an index that follows the records: give it a moment.
            let is_list = command.starts_with("jetask task list");
            if !is_list || list_began.elapsed() > LIST_PATIENCE {
                panic!("{}", said(&format!("should print: {expected}"), &ran));
            }
        }
        timings.push((step_began.elapsed(), step.line));
        for expected in &step.dev_prints {
            let expected = moved(&shell.expand(expected, deadline));
            let seen = dev.wait_for(&expected, (Instant::now() + Duration::from_secs(20)).min(deadline));
            assert!(
                seen,
                "README line {}: after `{command}`, jetask dev should print: {expected}\n--- jetask dev:\n{}",
                step.line, dev.output
            );
        }
    }
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    timings.sort();
    let slowest: Vec<String> = timings
        .iter()
        .rev()
        .take(5)
        .map(|(d, line)| format!("line {line} {:.1}s", d.as_secs_f64()))
        .collect();
    eprintln!(
        "the tour's {} commands ran as the README says in {:.1}s (slowest: {})",
        steps.len() - skipped.len(),
        began.elapsed().as_secs_f64(),
        slowest.join(", ")
    );
    drop(shell);
    // jetask dev stops cleanly on SIGTERM, its nats-server with it.
    let dev_pid_file = dev.pid_file.clone();
    let nats_pid: Option<u32> = std::fs::read_to_string(&dev_pid_file)
        .ok()
        .and_then(|p| p.trim().parse().ok());
    stop(&mut dev.child, Duration::from_secs(20));
    let status = dev.child.wait().unwrap();
    assert!(status.success(), "jetask dev exits 0 on SIGTERM: {status}");
    if let Some(pid) = nats_pid {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "jetask dev stopped its nats-server"
        );
    }
}

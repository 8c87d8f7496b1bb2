//! The index's SQLite table: its schema, the changes applied to it and the queries on it.

use super::stats::{self, FunctionStats, Outcomes, ALL_USERS, HORIZON_MS, MINUTE_MS, SERIES_MINUTES, SLOT_MS};
use super::{Change, IndexError, Query, QueueCounts};
use crate::core::task::Status;
use crate::core::time::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub struct Index {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    is_ready: AtomicBool,
    _dir: super::scratch::Scratch,
}

const SCHEMA: &str = "
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    user TEXT NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    due INTEGER NOT NULL,
    -- Held back by a throttle now (for the overview).
    throttled INTEGER NOT NULL DEFAULT 0,
    -- What the overview has counted of this task (1: its start, 2: its end).
    seen INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX by_created ON tasks (created, id);
-- `user` last: under auth every list names its user, filtered in the index without a lookup.
CREATE INDEX by_function ON tasks (function, created, id, user);
CREATE INDEX by_function_status ON tasks (function, status, created, id, user);
CREATE INDEX by_status ON tasks (status, created, id, user);
CREATE INDEX by_user ON tasks (user, created, id);
CREATE INDEX by_due ON tasks (function, due, user) WHERE due > 0;
CREATE INDEX by_throttled ON tasks (function, user) WHERE throttled = 1;

-- Outcomes per 10-second slot and durations per minute (kind 0: queue, 1: run) in buckets,
-- for every user together (user '*') and per user: added to per transaction.
CREATE TABLE outcomes (
    user TEXT NOT NULL,
    function TEXT NOT NULL,
    slot INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    stopped INTEGER NOT NULL,
    expired INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    PRIMARY KEY (user, function, slot)
) WITHOUT ROWID;
CREATE TABLE durations (
    user TEXT NOT NULL,
    function TEXT NOT NULL,
    kind INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (user, function, kind, minute, bucket)
) WITHOUT ROWID;
";

/// `seen` bits.
const SEEN_START: i64 = 1;
const SEEN_END: i64 = 2;

/// What one transaction adds to the overview's tables, summed before it writes them: a batch
/// of a thousand writes touches a handful of rows.
#[derive(Default)]
struct Tally {
    outcomes: HashMap<(String, String, i64), Outcomes>,
    durations: HashMap<(String, String, i64, i64, i64), i64>,
}

impl Tally {
    fn each_user(&mut self, user: &str, mut add: impl FnMut(&mut Tally, &str)) {
        add(self, ALL_USERS);
        add(self, user);
    }

    fn outcome(&mut self, function: &str, user: &str, at: i64, status: Status) {
        self.each_user(user, |t, u| {
            let o = t
                .outcomes
                .entry((u.to_string(), function.to_string(), at / SLOT_MS))
                .or_default();
            match status {
                Status::Succeeded => o.succeeded += 1,
                Status::Failed => o.failed += 1,
                Status::Stopped => o.stopped += 1,
                Status::Expired => o.expired += 1,
                _ => o.invalid += 1,
            }
        });
    }

    fn duration(&mut self, function: &str, user: &str, kind: i64, at: i64, ms: u64) {
        self.each_user(user, |t, u| {
            let key = (
                u.to_string(),
                function.to_string(),
                kind,
                at / MINUTE_MS,
                stats::bucket(ms),
            );
            *t.durations.entry(key).or_default() += 1;
        });
    }

    fn write(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let mut o = tx.prepare_cached(
            "INSERT INTO outcomes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT DO UPDATE SET succeeded = succeeded + excluded.succeeded,
             failed = failed + excluded.failed, stopped = stopped + excluded.stopped,
             expired = expired + excluded.expired, invalid = invalid + excluded.invalid",
        )?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for ((user, function, slot), c) in &self.outcomes {
            o.execute(params![
                user,
                function,
                slot,
                n(c.succeeded),
                n(c.failed),
                n(c.stopped),
                n(c.expired),
                n(c.invalid)
            ])?;
        }
        let mut d = tx.prepare_cached(
            "INSERT INTO durations VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO UPDATE SET n = n + excluded.n",
        )?;
        for ((user, function, kind, minute, bucket), count) in &self.durations {
            d.execute(params![user, function, kind, minute, bucket, count])?;
        }
        Ok(())
    }
}

/// ID prefixes matching at most this many tasks are listed from the ID order and sorted; more
/// common ones are filtered from the creation order.
const PREFIX_SORT_MAX: i64 = 10_000;

fn connect(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    // A view rebuilt at every start: durability is not wanted, speed and bounded memory are.
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -8000; PRAGMA temp_store = FILE;",
    )?;
    Ok(c)
}

type Args = Vec<Box<dyn rusqlite::ToSql>>;

/// The list query of `q` from position `start` (exclusive), reading an ID prefix's range from
/// the primary key when `sparse`.
fn list_sql(q: &Query, sparse: bool, start: Option<(i64, String)>) -> (String, Args) {
    let col = |name: &str| if sparse { format!("+{name}") } else { name.to_string() };
    let mut sql = String::from("SELECT id, created FROM tasks WHERE 1 = 1");
    let mut args: Args = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql>| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(f) = &q.function {
        arg(&mut sql, &format!(" AND {} = ?", col("function")), Box::new(f.clone()));
    }
    if let Some(s) = q.status {
        arg(&mut sql, &format!(" AND {} = ?", col("status")), Box::new(s.as_str()));
    }
    if let Some(u) = &q.user {
        arg(&mut sql, &format!(" AND {} = ?", col("user")), Box::new(u.clone()));
    }
    if let Some(s) = q.since {
        arg(&mut sql, &format!(" AND {} >= ?", col("created")), Box::new(s.millis()));
    }
    if let Some(u) = q.until {
        arg(&mut sql, &format!(" AND {} <= ?", col("created")), Box::new(u.millis()));
    }
    if let Some(p) = &q.id_prefix {
        let id = if sparse { "id" } else { "+id" };
        arg(&mut sql, &format!(" AND {id} >= ?"), Box::new(p.clone()));
        arg(&mut sql, &format!(" AND {id} < ?"), Box::new(prefix_end(p)));
    }
    if let Some((created, id)) = start {
        // A row value: one range of the index (an `OR` of two would be read twice and sorted).
        let (c, i) = if sparse { ("+created", "+id") } else { ("created", "id") };
        arg(&mut sql, &format!(" AND ({c}, {i}) < (?"), Box::new(created));
        arg(&mut sql, ", ?)", Box::new(id));
    }
    sql.push_str(&format!(" ORDER BY created DESC, id DESC LIMIT {}", q.limit + 1));
    (sql, args)
}

/// The first text after every ID starting with `prefix`: IDs are ASCII letters, digits, `_`
/// and `-`, all below DEL.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{7f}")
}

/// Encodes a position as an opaque, URL-safe cursor.
fn cursor_of(created: i64, id: &str) -> String {
    format!("{created}_{id}")
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (ms, id) = c.split_once('_')?;
    Some((ms.parse().ok()?, id.to_string()))
}

impl Index {
    /// A fresh, empty index in its own temp dir (see [`super::scratch`]).
    pub fn open_temp() -> Result<Index, IndexError> {
        let dir = super::scratch::Scratch::create()?;
        let path = dir.path().join("tasks.sqlite");
        let writer = connect(&path)?;
        writer.execute_batch(SCHEMA)?;
        let reader = connect(&path)?;
        Ok(Index {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            is_ready: AtomicBool::new(false),
            _dir: dir,
        })
    }

    /// Applies changes in one transaction.
    pub fn apply_all(&self, changes: &[Change]) -> Result<(), IndexError> {
        self.apply_at(changes, Timestamp::now())
    }

    /// Applies changes as of `now`: starts and ends before the stats horizon are not counted.
    pub fn apply_at(&self, changes: &[Change], now: Timestamp) -> Result<(), IndexError> {
        let horizon = now.millis() - HORIZON_MS;
        let recent = |t: Option<i64>| t.filter(|t| *t >= horizon);
        let mut w = self
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("index lock poisoned"))?;
        let tx = w.transaction()?;
        let mut tally = Tally::default();
        {
            // A task's function, user and creation time never change: an update rewrites only
            // the entries of the indexes on status, due and throttling.
            let mut up = tx.prepare_cached(
                "INSERT INTO tasks (id, function, user, status, created, updated, due, throttled, seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, updated = excluded.updated,
                 due = excluded.due, throttled = excluded.throttled, seen = seen | excluded.seen",
            )?;
            // What was counted already, read only for a write that has something to count (a
            // point read of the page the upsert then writes; `RETURNING` made inserts 3x slower).
            let mut counted = tx.prepare_cached("SELECT seen FROM tasks WHERE id = ?1")?;
            let mut rm = tx.prepare_cached("DELETE FROM tasks WHERE id = ?1")?;
            for c in changes {
                match c {
                    Change::Upsert {
                        id,
                        function,
                        user,
                        status,
                        created,
                        updated,
                        due,
                        timing,
                    } => {
                        let started = recent(timing.started).zip(timing.queue_ms);
                        let finished = recent(timing.finished).filter(|_| status.is_terminal());
                        let seen = if started.is_some() { SEEN_START } else { 0 }
                            | if finished.is_some() { SEEN_END } else { 0 };
                        let before: i64 = if seen == 0 {
                            0
                        } else {
                            counted
                                .query_row(params![id], |row| row.get(0))
                                .optional()?
                                .unwrap_or(0)
                        };
                        let fresh = seen & !before;
                        up.execute(params![
                            id,
                            function,
                            user,
                            status.as_str(),
                            created,
                            updated,
                            due,
                            timing.throttled && !status.is_terminal(),
                            seen,
                        ])?;
                        if let (true, Some((at, ms))) = (fresh & SEEN_START != 0, started) {
                            tally.duration(function, user, 0, at, ms);
                        }
                        if let (true, Some(at)) = (fresh & SEEN_END != 0, finished) {
                            tally.outcome(function, user, at, *status);
                            if let Some(ms) = timing.run_ms {
                                tally.duration(function, user, 1, at, ms);
                            }
                        }
                    }
                    Change::Remove { id } => {
                        rm.execute(params![id])?;
                    }
                }
            }
        }
        tally.write(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Records that task `id` now has these fields.
    pub fn upsert(&self, id: &str, function: &str, user: &str, status: Status, created: i64, updated: i64) {
        let change = Change::Upsert {
            id: id.into(),
            function: function.into(),
            user: user.into(),
            status,
            created,
            updated,
            due: 0,
            timing: Default::default(),
        };
        if let Err(e) = self.apply_all(&[change]) {
            tracing::warn!(error = %e, "cannot update the task index");
        }
    }

    /// Drops entries whose record has expired from the bucket (unchanged for `retention`).
    pub fn prune(&self, now: Timestamp, retention: Duration) -> Result<usize, IndexError> {
        let cutoff = now.millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let w = self
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("index lock poisoned"))?;
        let pruned = w.execute("DELETE FROM tasks WHERE updated < ?1", params![cutoff])?;
        let horizon = now.millis() - HORIZON_MS;
        w.execute("DELETE FROM outcomes WHERE slot < ?1", params![horizon / SLOT_MS])?;
        w.execute("DELETE FROM durations WHERE minute < ?1", params![horizon / MINUTE_MS])?;
        Ok(pruned)
    }

    pub fn len(&self) -> usize {
        self.scalar("SELECT COUNT(*) FROM tasks", &[])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many tasks of `function` are in `status`.
    pub fn count(&self, function: &str, status: Status) -> usize {
        self.scalar(
            "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND status = ?2",
            &[&function, &status.as_str()],
        )
    }

    /// Tasks of `function` running (or stopping), and waiting for a moment after `now`.
    pub fn queue_counts(&self, function: &str, now: Timestamp) -> QueueCounts {
        QueueCounts {
            running: self.scalar(
                "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND status IN (?2, ?3)",
                &[&function, &Status::Running.as_str(), &Status::Stopping.as_str()],
            ),
            delayed: self.scalar(
                "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND due > 0 AND due > ?2",
                &[&function, &now.millis()],
            ),
        }
    }

    fn scalar(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> usize {
        let Ok(r) = self.reader.lock() else { return 0 };
        r.query_row(sql, args, |row| row.get::<_, i64>(0))
            .optional()
            .ok()
            .flatten()
            .unwrap_or(0) as usize
    }

    /// IDs matching `q`, newest first, and the cursor of the next page.
    pub fn query(&self, q: &Query) -> Result<(Vec<String>, Option<String>), IndexError> {
        let start = match &q.cursor {
            Some(c) => Some(parse_cursor(c).ok_or_else(|| IndexError::Cursor(c.clone()))?),
            None => None,
        };
        let r = self
            .reader
            .lock()
            .map_err(|_| std::io::Error::other("index lock poisoned"))?;
        // An ID prefix is a range of the primary key. Matching few tasks, that range is read
        // and sorted (the other filters kept off the indexes with `+`); matching many, the
        // creation order is read and the range filters it (`+id`), as for any other filter.
        let sparse = match &q.id_prefix {
            Some(low) => {
                let high = prefix_end(low);
                let n: i64 = r.query_row(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE id >= ?1 AND id < ?2 LIMIT ?3)",
                    params![low, high, PREFIX_SORT_MAX + 1],
                    |row| row.get(0),
                )?;
                n <= PREFIX_SORT_MAX
            }
            None => false,
        };
        let (sql, args) = list_sql(q, sparse, start);
        let mut stmt = r.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        let mut page: Vec<(String, i64)> = rows.collect::<Result<_, _>>()?;
        let next = if page.len() > q.limit {
            page.truncate(q.limit);
            page.last().map(|(id, created)| cursor_of(*created, id))
        } else {
            None
        };
        Ok((page.into_iter().map(|(id, _)| id).collect(), next))
    }

    /// The overview's figures of `function` at `now`, for `user` or for every user.
    pub fn stats(&self, function: &str, user: Option<&str>, now: Timestamp) -> Result<FunctionStats, IndexError> {
        let r = self
            .reader
            .lock()
            .map_err(|_| std::io::Error::other("index lock poisoned"))?;
        let count = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<u64, IndexError> {
            let n: i64 = r.prepare_cached(sql)?.query_row(args, |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let (e, d, rt, ru, st) = (
            Status::Enqueued.as_str(),
            Status::Dequeued.as_str(),
            Status::Retrying.as_str(),
            Status::Running.as_str(),
            Status::Stopping.as_str(),
        );
        let t = now.millis();
        let (waiting, delayed, running, throttled) = match user {
            None => (
                count(
                    "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND status IN (?2, ?3, ?4)",
                    &[&function, &e, &d, &rt],
                )?,
                count(
                    "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND due > 0 AND due > ?2",
                    &[&function, &t],
                )?,
                count(
                    "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND status IN (?2, ?3)",
                    &[&function, &ru, &st],
                )?,
                count(
                    "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND throttled = 1",
                    &[&function],
                )?,
            ),
            Some(u) => (
                count(
                    "SELECT COUNT(*) FROM tasks WHERE user = ?1 AND function = ?2 AND status IN (?3, ?4, ?5)",
                    &[&u, &function, &e, &d, &rt],
                )?,
                count(
                    "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND due > 0 AND due > ?2 AND user = ?3",
                    &[&function, &t, &u],
                )?,
                count(
                    "SELECT COUNT(*) FROM tasks WHERE user = ?1 AND function = ?2 AND status IN (?3, ?4)",
                    &[&u, &function, &ru, &st],
                )?,
                count(
                    "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND throttled = 1 AND user = ?2",
                    &[&function, &u],
                )?,
            ),
        };
        let key = user.unwrap_or(ALL_USERS);
        let now_slot = t / SLOT_MS;
        let now_minute = t / MINUTE_MS;
        let first_minute = now_minute - SERIES_MINUTES as i64 + 1;
        let mut out = FunctionStats {
            queued: waiting.saturating_sub(delayed),
            delayed,
            running,
            throttled,
            series: vec![Outcomes::default(); SERIES_MINUTES],
            series_start: first_minute * MINUTE_MS,
            ..Default::default()
        };
        let mut stmt = r.prepare_cached(
            "SELECT slot, succeeded, failed, stopped, expired, invalid FROM outcomes
             WHERE user = ?1 AND function = ?2 AND slot >= ?3 AND slot <= ?4",
        )?;
        let first_slot = first_minute * MINUTE_MS / SLOT_MS;
        let rows = stmt.query_map(params![key, function, first_slot, now_slot], |row| {
            let n = |i: usize| row.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            Ok((
                row.get::<_, i64>(0)?,
                Outcomes {
                    succeeded: n(1)?,
                    failed: n(2)?,
                    stopped: n(3)?,
                    expired: n(4)?,
                    invalid: n(5)?,
                },
            ))
        })?;
        for row in rows {
            let (slot, o) = row?;
            if slot > now_slot - 6 {
                out.last_minute.add(&o);
            }
            out.last_hour.add(&o);
            let m = usize::try_from(slot * SLOT_MS / MINUTE_MS - first_minute).unwrap_or(0);
            if let Some(cell) = out.series.get_mut(m) {
                cell.add(&o);
            }
        }
        let mut stmt = r.prepare_cached(
            "SELECT bucket, SUM(n) FROM durations
             WHERE user = ?1 AND function = ?2 AND kind = ?3 AND minute >= ?4 GROUP BY bucket",
        )?;
        for kind in [0, 1] {
            let rows = stmt.query_map(params![key, function, kind, first_minute], |row| {
                Ok((row.get::<_, i64>(0)?, u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0)))
            })?;
            let p = stats::percentiles(rows.collect::<Result<_, _>>()?);
            if kind == 0 {
                out.queue_ms = p;
            } else {
                out.run_ms = p;
            }
        }
        Ok(out)
    }

    /// Deletes the index's files: called at shutdown, since the process may exit without
    /// running destructors (the index is rebuilt at every start anyway).
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(self._dir.path());
    }

    /// Whether the first replay of the bucket has been applied.
    pub fn ready(&self) -> bool {
        self.is_ready.load(Ordering::Acquire)
    }

    pub(super) fn mark_ready(&self) {
        self.is_ready.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: usize) -> Query {
        Query {
            limit,
            ..Default::default()
        }
    }

    fn index() -> Index {
        let i = Index::open_temp().unwrap();
        for n in 0..10i64 {
            let status = if n % 2 == 0 { Status::Succeeded } else { Status::Failed };
            let f = if n < 5 { "a" } else { "b" };
            i.upsert(&format!("t{n}"), f, "u", status, 1000 + n, 1000 + n);
        }
        i
    }

    #[test]
    fn lists_newest_first_in_pages() {
        let i = index();
        let (page, next) = i.query(&q(4)).unwrap();
        assert_eq!(page, vec!["t9", "t8", "t7", "t6"]);
        let (page, next) = i.query(&Query { cursor: next, ..q(4) }).unwrap();
        assert_eq!(page, vec!["t5", "t4", "t3", "t2"]);
        let (page, next) = i.query(&Query { cursor: next, ..q(4) }).unwrap();
        assert_eq!(page, vec!["t1", "t0"]);
        assert_eq!(next, None);
    }

    #[test]
    fn ties_on_creation_time_page_by_id() {
        let i = Index::open_temp().unwrap();
        for id in ["a", "b", "c"] {
            i.upsert(id, "f", "u", Status::Enqueued, 5, 5);
        }
        let (page, next) = i.query(&q(2)).unwrap();
        assert_eq!(page, vec!["c", "b"]);
        assert_eq!(i.query(&Query { cursor: next, ..q(2) }).unwrap().0, vec!["a"]);
    }

    #[test]
    fn filters_combine() {
        let i = index();
        let (page, _) = i
            .query(&Query {
                function: Some("a".into()),
                status: Some(Status::Failed),
                ..q(10)
            })
            .unwrap();
        assert_eq!(page, vec!["t3", "t1"]);
        let (page, _) = i
            .query(&Query {
                since: Some(Timestamp(1003)),
                until: Some(Timestamp(1005)),
                ..q(10)
            })
            .unwrap();
        assert_eq!(page, vec!["t5", "t4", "t3"]);
        let (page, _) = i
            .query(&Query {
                user: Some("nobody".into()),
                ..q(10)
            })
            .unwrap();
        assert!(page.is_empty());
        assert_eq!(i.count("a", Status::Failed), 2);
    }

    #[test]
    fn a_status_change_moves_no_position() {
        let i = index();
        i.upsert("t0", "a", "u", Status::Stopped, 1000, 5000);
        let (page, _) = i
            .query(&Query {
                status: Some(Status::Stopped),
                ..q(10)
            })
            .unwrap();
        assert_eq!(page, vec!["t0"]);
        assert_eq!(i.len(), 10);
    }

    #[test]
    fn old_entries_are_pruned_removed_ones_vanish_and_bad_cursors_are_refused() {
        let i = index();
        assert_eq!(i.prune(Timestamp(1005 + 60_000), Duration::from_secs(60)).unwrap(), 5);
        assert_eq!(i.len(), 5);
        i.apply_all(&[Change::Remove { id: "t9".into() }]).unwrap();
        assert_eq!(i.len(), 4);
        assert!(matches!(
            i.query(&Query {
                cursor: Some("garbage".into()),
                ..q(1)
            }),
            Err(IndexError::Cursor(_))
        ));
    }

    fn timed(id: &str, user: &str, status: Status, created: i64, timing: super::super::Timing) -> Change {
        Change::Upsert {
            id: id.into(),
            function: "f".into(),
            user: user.into(),
            status,
            created,
            updated: created,
            due: 0,
            timing,
        }
    }

    #[test]
    fn id_prefixes_select_a_range_of_ids_common_or_rare() {
        let i = Index::open_temp().unwrap();
        let mut changes = Vec::new();
        // 10,050 tasks under "a" (more than are sorted), three under "b_", one "b%".
        for n in 0..10_050i64 {
            changes.push(timed(
                &format!("a{n:05}"),
                "u",
                Status::Succeeded,
                n,
                Default::default(),
            ));
        }
        for (n, id) in ["b_1", "b_2", "bx3", "b%"].iter().enumerate() {
            changes.push(timed(id, "u", Status::Failed, 20_000 + n as i64, Default::default()));
        }
        i.apply_at(&changes, Timestamp(0)).unwrap();
        let prefix = |p: &str, limit| Query {
            id_prefix: Some(p.into()),
            ..q(limit)
        };
        // `_` is no wildcard: "b_" is not "bx3".
        assert_eq!(i.query(&prefix("b_", 10)).unwrap().0, vec!["b_2", "b_1"]);
        assert_eq!(i.query(&prefix("b", 10)).unwrap().0, vec!["b%", "bx3", "b_2", "b_1"]);
        let (page, next) = i.query(&prefix("a", 3)).unwrap();
        assert_eq!(page, vec!["a10049", "a10048", "a10047"]);
        let (page, _) = i
            .query(&Query {
                cursor: next,
                ..prefix("a", 2)
            })
            .unwrap();
        assert_eq!(page, vec!["a10046", "a10045"]);
        assert_eq!(i.query(&prefix("a0999", 20)).unwrap().0.len(), 10);
        assert!(i.query(&prefix("c", 5)).unwrap().0.is_empty());
        let failed = Query {
            status: Some(Status::Failed),
            ..prefix("b", 10)
        };
        assert_eq!(i.query(&failed).unwrap().0, vec!["b%", "bx3", "b_2", "b_1"]);
        let succeeded = Query {
            status: Some(Status::Succeeded),
            ..prefix("b", 10)
        };
        assert!(i.query(&succeeded).unwrap().0.is_empty());
    }

    #[test]
    fn stats_count_starts_and_ends_once_per_user_and_in_total() {
        use super::super::Timing;
        let i = Index::open_temp().unwrap();
        let now = Timestamp(100 * 3_600_000 + 30_000);
        let t = now.millis();
        let started = |at: i64, q: u64| Timing {
            started: Some(at),
            queue_ms: Some(q),
            ..Default::default()
        };
        let done = |at: i64, q: u64, f: i64, r: u64| Timing {
            finished: Some(f),
            run_ms: Some(r),
            ..started(at, q)
        };
        // Alice: one running, one succeeded now, one failed 30 minutes ago; Bob: one throttled
        // and delayed, one queued, one succeeded two minutes ago.
        i.apply_at(
            &[
                timed("a1", "alice", Status::Running, t - 1_000, started(t - 900, 100)),
                timed("a2", "alice", Status::Running, t - 5_000, started(t - 4_000, 1_000)),
                timed(
                    "a3",
                    "alice",
                    Status::Failed,
                    t - 1_900_000,
                    done(t - 1_850_000, 50_000, t - 1_800_000, 20),
                ),
                timed("b2", "bob", Status::Enqueued, t - 10, Default::default()),
                timed(
                    "b3",
                    "bob",
                    Status::Succeeded,
                    t - 130_000,
                    done(t - 125_000, 5_000, t - 120_000, 200),
                ),
                // Finished before the horizon: not counted.
                timed(
                    "old",
                    "bob",
                    Status::Succeeded,
                    t - 9_000_000,
                    done(t - 9_000_000, 1, t - 9_000_000, 1),
                ),
            ],
            now,
        )
        .unwrap();
        i.apply_at(
            &[
                // a2 finishes: counted once, however often it is written after.
                timed(
                    "a2",
                    "alice",
                    Status::Succeeded,
                    t - 5_000,
                    done(t - 4_000, 1_000, t - 2_000, 2_000),
                ),
                Change::Upsert {
                    id: "b1".into(),
                    function: "f".into(),
                    user: "bob".into(),
                    status: Status::Retrying,
                    created: t - 50_000,
                    updated: t - 100,
                    due: t + 5_000,
                    timing: Timing {
                        throttled: true,
                        ..started(t - 40_000, 10)
                    },
                },
            ],
            now,
        )
        .unwrap();
        i.apply_at(
            &[timed(
                "a2",
                "alice",
                Status::Succeeded,
                t - 5_000,
                done(t - 4_000, 1_000, t - 2_000, 2_000),
            )],
            now,
        )
        .unwrap();
        let all = i.stats("f", None, now).unwrap();
        assert_eq!((all.queued, all.delayed, all.running, all.throttled), (1, 1, 1, 1));
        assert_eq!(all.last_minute.succeeded, 1);
        assert_eq!(all.last_minute.failed, 0);
        assert_eq!((all.last_hour.succeeded, all.last_hour.failed), (2, 1));
        assert_eq!(all.queue_ms.count, 5);
        assert_eq!(all.run_ms.count, 3);
        assert_eq!(all.run_ms.p50, Some(stats::bucket_value(stats::bucket(200))));
        assert_eq!(all.series.len(), 60);
        assert_eq!(all.series[59].succeeded, 1);
        assert_eq!(all.series[57].succeeded, 1);
        assert_eq!(all.series[29].failed, 1);
        assert_eq!(all.series.iter().map(Outcomes::total).sum::<u64>(), 3);
        let alice = i.stats("f", Some("alice"), now).unwrap();
        assert_eq!(
            (alice.queued, alice.delayed, alice.running, alice.throttled),
            (0, 0, 1, 0)
        );
        assert_eq!((alice.last_hour.succeeded, alice.last_hour.failed), (1, 1));
        assert_eq!(alice.run_ms.count, 2);
        let bob = i.stats("f", Some("bob"), now).unwrap();
        assert_eq!((bob.queued, bob.delayed, bob.throttled), (1, 1, 1));
        assert_eq!(bob.last_hour.succeeded, 1);
        assert_eq!(i.stats("f", Some("nobody"), now).unwrap().last_hour.total(), 0);
        assert_eq!(
            i.stats("g", None, now).unwrap(),
            FunctionStats {
                series: vec![Outcomes::default(); 60],
                series_start: all.series_start,
                ..Default::default()
            }
        );
        // An hour later the figures are gone from the window, and pruned in time.
        let later = Timestamp(t + 3 * 3_600_000);
        assert_eq!(i.stats("f", None, later).unwrap().last_hour.total(), 0);
        i.prune(later, Duration::from_secs(30 * 86_400)).unwrap();
        assert_eq!(i.scalar("SELECT COUNT(*) FROM outcomes", &[]), 0);
        assert_eq!(i.scalar("SELECT COUNT(*) FROM durations", &[]), 0);
    }

    fn plan(i: &Index, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Vec<String> {
        let r = i.reader.lock().unwrap();
        let mut st = r.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        st.query_map(args, |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Every combination of list filters is an index range read in order (no sort, no scan of
    /// the table); a rare ID prefix is the one read in ID order and sorted.
    #[test]
    fn every_list_and_count_is_an_index_search() {
        let i = index();
        for mask in 0..32u32 {
            let q = Query {
                function: (mask & 1 != 0).then(|| "a".into()),
                status: (mask & 2 != 0).then_some(Status::Failed),
                user: (mask & 4 != 0).then(|| "u".into()),
                since: (mask & 8 != 0).then_some(Timestamp(1)),
                until: (mask & 16 != 0).then_some(Timestamp(2)),
                ..q(20)
            };
            for (prefix, sparse) in [(None, false), (Some("x"), false), (Some("x"), true)] {
                let q = Query {
                    id_prefix: prefix.map(str::to_string),
                    ..q.clone()
                };
                let (sql, args) = list_sql(&q, sparse, Some((5, "t".into())));
                let args: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref()).collect();
                let p = plan(&i, &sql, &args).join("; ");
                assert!(
                    p.starts_with("SEARCH")
                        || (p.starts_with("SCAN tasks USING")
                            && !p.contains("SCAN tasks USING PRIMARY")
                            && q.function.is_none()
                            && q.user.is_none()
                            && q.status.is_none()),
                    "{sql}: {p}"
                );
                assert_eq!(p.contains("TEMP B-TREE"), sparse, "{sql}: {p}");
            }
        }
        let one: &dyn rusqlite::ToSql = &1;
        for sql in [
            "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND status IN (?2, ?3, ?4)",
            "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND due > 0 AND due > ?2",
            "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND due > 0 AND due > ?2 AND user = ?3",
            "SELECT COUNT(*) FROM tasks WHERE user = ?1 AND function = ?2 AND status IN (?3, ?4, ?5)",
            "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND throttled = 1 AND user = ?2",
        ] {
            let n = sql.matches('?').count();
            let p = plan(&i, sql, &vec![one; n]).join("; ");
            assert!(p.starts_with("SEARCH tasks USING COVERING INDEX"), "{sql}: {p}");
        }
    }
}

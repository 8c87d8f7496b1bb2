//! The index's SQLite table: its schema, the changes applied to it and the queries on it.

use super::{Change, IndexError, Query, QueueCounts};
use crate::core::task::Status;
use crate::core::time::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub struct Index {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    is_ready: AtomicBool,
    _dir: tempfile::TempDir,
}

const SCHEMA: &str = "
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    user TEXT NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    due INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX by_created ON tasks (created, id);
CREATE INDEX by_function ON tasks (function, created, id);
CREATE INDEX by_function_status ON tasks (function, status, created, id);
CREATE INDEX by_status ON tasks (status, created, id);
CREATE INDEX by_user ON tasks (user, created, id);
CREATE INDEX by_due ON tasks (function, due) WHERE due > 0;
";

fn connect(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    // A view rebuilt at every start: durability is not wanted, speed and bounded memory are.
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -8000; PRAGMA temp_store = FILE;",
    )?;
    Ok(c)
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
    /// A fresh, empty index in its own temp dir.
    pub fn open_temp() -> Result<Index, IndexError> {
        let dir = tempfile::Builder::new().prefix("jetask-index-").tempdir()?;
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
        let mut w = self
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("index lock poisoned"))?;
        let tx = w.transaction()?;
        {
            // A task's function, user and creation time never change: an update rewrites only
            // the entries of the indexes on status and due.
            let mut up = tx.prepare_cached(
                "INSERT INTO tasks (id, function, user, status, created, updated, due) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, updated = excluded.updated,
                 due = excluded.due",
            )?;
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
                    } => {
                        up.execute(params![id, function, user, status.as_str(), created, updated, due])?;
                    }
                    Change::Remove { id } => {
                        rm.execute(params![id])?;
                    }
                }
            }
        }
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
        Ok(w.execute("DELETE FROM tasks WHERE updated < ?1", params![cutoff])?)
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
                "SELECT COUNT(*) FROM tasks WHERE function = ?1 AND due > ?2",
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
        let mut sql = String::from("SELECT id, created FROM tasks WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(f) = &q.function {
            arg(&mut sql, " AND function = ?", Box::new(f.clone()));
        }
        if let Some(s) = q.status {
            arg(&mut sql, " AND status = ?", Box::new(s.as_str()));
        }
        if let Some(u) = &q.user {
            arg(&mut sql, " AND user = ?", Box::new(u.clone()));
        }
        if let Some(s) = q.since {
            arg(&mut sql, " AND created >= ?", Box::new(s.millis()));
        }
        if let Some(u) = q.until {
            arg(&mut sql, " AND created <= ?", Box::new(u.millis()));
        }
        if let Some((created, id)) = start {
            arg(&mut sql, " AND (created < ?", Box::new(created));
            arg(&mut sql, " OR (created = ?", Box::new(created));
            arg(&mut sql, " AND id < ?))", Box::new(id));
        }
        sql.push_str(&format!(" ORDER BY created DESC, id DESC LIMIT {}", q.limit + 1));
        let r = self
            .reader
            .lock()
            .map_err(|_| std::io::Error::other("index lock poisoned"))?;
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
}

//! The durable outbox, and the alert state beside it, in `data_dir/alerts.sqlite3`.
//!
//! A notification is written here, in the same transaction as the alert state that caused it,
//! before anything is sent. The sender takes due rows, delivers them, and marks each one
//! delivered as soon as its channel accepted it. A crash therefore never loses a
//! notification, and a delivered one is not sent again (only a crash in the instant between
//! the channel's answer and the mark could repeat one). A separate file from the journal keeps
//! alert writes off the webhook's commit path.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::alerts::silence::Silence;
use crate::alerts::{HealthSample, Notification, StoredAlert};

/// How long delivered or given-up notifications and ended silences are kept, for
/// `GET /api/v1/alerts` and inspection; older ones are deleted as new ones are written.
pub const KEEP_MS: i64 = 30 * 86_400_000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS alert_state (
    rule  TEXT NOT NULL,
    key   TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (rule, key)
);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    created_ms      INTEGER NOT NULL,
    channel         TEXT NOT NULL,
    notification    TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    delivered_ms    INTEGER,
    failed_ms       INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_ms) WHERE delivered_ms IS NULL AND failed_ms IS NULL;
CREATE TABLE IF NOT EXISTS silences (
    id         INTEGER PRIMARY KEY,
    silence    TEXT NOT NULL,
    until_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    sample TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slack_messages (
    rule    TEXT NOT NULL,
    key     TEXT NOT NULL,
    channel TEXT NOT NULL,
    ts      TEXT NOT NULL,
    PRIMARY KEY (rule, key)
);
"#;

/// One row to deliver.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub channel: String,
    pub notification: Notification,
    pub attempts: u32,
    pub created_ms: i64,
}

/// Where a Slack message about an alert was posted, to thread its resolution under it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackRef {
    pub channel: String,
    pub ts: String,
}

pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    pub fn open(dir: &Path) -> rusqlite::Result<Outbox> {
        let conn = Connection::open(dir.join("alerts.sqlite3"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Outbox { conn })
    }

    /// The alerts a previous run left pending or firing.
    pub fn load_alerts(&self) -> rusqlite::Result<Vec<StoredAlert>> {
        let mut stmt = self.conn.prepare("SELECT state FROM alert_state")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            match serde_json::from_str(&row?) {
                Ok(a) => out.push(a),
                Err(e) => tracing::warn!(error = %e, "unreadable alert state row skipped"),
            }
        }
        Ok(out)
    }

    /// The receiver's health samples of the last day, oldest first, for the webhook rules.
    pub fn load_health(&self) -> rusqlite::Result<Vec<HealthSample>> {
        let mut stmt = self.conn.prepare("SELECT sample FROM health ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            match serde_json::from_str(&row?) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(error = %e, "unreadable health sample skipped"),
            }
        }
        Ok(out)
    }

    /// Stores a health sample, and forgets those older than `keep_secs` before it.
    pub fn save_health(&mut self, sample: &HealthSample, keep_secs: i64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        Self::put_health(&tx, sample, keep_secs)?;
        tx.commit()
    }

    fn put_health(
        tx: &rusqlite::Transaction,
        sample: &HealthSample,
        keep_secs: i64,
    ) -> rusqlite::Result<()> {
        let json = serde_json::to_string(sample).map_err(to_sql_err)?;
        tx.execute(
            // Not keyed by time: a process that stops and one that starts within the same
            // second both leave a sample, in order.
            "INSERT INTO health (at, sample) VALUES (?1, ?2)",
            params![sample.at, json],
        )?;
        tx.execute(
            "DELETE FROM health WHERE at < ?1",
            params![sample.at - keep_secs],
        )?;
        Ok(())
    }

    /// Replaces the stored alert state, stores the health sample it was judged on, and queues
    /// `notifications` on their channels, in one transaction.
    pub fn commit(
        &mut self,
        alerts: &[StoredAlert],
        health: Option<(&HealthSample, i64)>,
        notifications: &[(String, Notification)],
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        if let Some((sample, keep_secs)) = health {
            Self::put_health(&tx, sample, keep_secs)?;
        }
        tx.execute("DELETE FROM alert_state", [])?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO alert_state (rule, key, state) VALUES (?1, ?2, ?3)")?;
            for a in alerts {
                let key = serde_json::to_string(&a.key).unwrap_or_default();
                let state = serde_json::to_string(a).map_err(to_sql_err)?;
                insert.execute(params![a.rule, key, state])?;
            }
            let mut queue = tx.prepare_cached(
                "INSERT INTO outbox (created_ms, channel, notification, next_attempt_ms) \
                 VALUES (?1, ?2, ?3, ?1)",
            )?;
            for (channel, n) in notifications {
                let json = serde_json::to_string(n).map_err(to_sql_err)?;
                queue.execute(params![now_ms, channel, json])?;
            }
        }
        // Bounded history: the oldest finished rows go as new ones arrive.
        tx.execute(
            "DELETE FROM outbox WHERE (delivered_ms IS NOT NULL OR failed_ms IS NOT NULL) \
             AND created_ms < ?1",
            params![now_ms - KEEP_MS],
        )?;
        tx.execute(
            "DELETE FROM silences WHERE until_ms < ?1",
            params![now_ms - KEEP_MS],
        )?;
        tx.commit()
    }

    /// Rows due at `now_ms`, oldest first.
    pub fn due(&self, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Pending>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, channel, notification, attempts, created_ms FROM outbox \
             WHERE delivered_ms IS NULL AND failed_ms IS NULL AND next_attempt_ms <= ?1 \
             ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, channel, json, attempts, created_ms) = row?;
            match serde_json::from_str(&json) {
                Ok(notification) => out.push(Pending {
                    id,
                    channel,
                    notification,
                    attempts,
                    created_ms,
                }),
                Err(e) => {
                    self.fail(id, now_ms, &format!("unreadable notification: {e}"))?;
                }
            }
        }
        Ok(out)
    }

    /// When the next row is due, if any.
    pub fn next_due_ms(&self) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT min(next_attempt_ms) FROM outbox WHERE delivered_ms IS NULL AND failed_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
    }

    pub fn delivered(&self, id: i64, now_ms: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET delivered_ms = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            params![id, now_ms],
        )?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub fn retry_at(&self, id: i64, next_ms: i64, error: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3 WHERE id = ?1",
            params![id, next_ms, error],
        )?;
        Ok(())
    }

    /// Puts a row off until `next_ms` without counting an attempt (its channel is paused).
    pub fn postpone(&self, id: i64, next_ms: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET next_attempt_ms = max(next_attempt_ms, ?2) WHERE id = ?1",
            params![id, next_ms],
        )?;
        Ok(())
    }

    /// Gives up on a row (permanent error, or too old); it stays for inspection.
    pub fn fail(&self, id: i64, now_ms: i64, error: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, failed_ms = ?2, last_error = ?3 WHERE id = ?1",
            params![id, now_ms, error],
        )?;
        Ok(())
    }

    pub fn slack_ref(&self, rule: &str, key: &str) -> rusqlite::Result<Option<SlackRef>> {
        self.conn
            .query_row(
                "SELECT channel, ts FROM slack_messages WHERE rule = ?1 AND key = ?2",
                params![rule, key],
                |r| {
                    Ok(SlackRef {
                        channel: r.get(0)?,
                        ts: r.get(1)?,
                    })
                },
            )
            .optional()
    }

    pub fn set_slack_ref(&self, rule: &str, key: &str, r: &SlackRef) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO slack_messages (rule, key, channel, ts) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (rule, key) DO UPDATE SET channel = excluded.channel, ts = excluded.ts",
            params![rule, key, r.channel, r.ts],
        )?;
        Ok(())
    }

    pub fn forget_slack_ref(&self, rule: &str, key: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "DELETE FROM slack_messages WHERE rule = ?1 AND key = ?2",
            params![rule, key],
        )?;
        Ok(())
    }
}

/// One notification row, for `GET /api/v1/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub id: i64,
    pub created_ms: i64,
    pub channel: String,
    pub attempts: u32,
    pub delivered_ms: Option<i64>,
    pub failed_ms: Option<i64>,
    pub last_error: Option<String>,
    pub notification: Notification,
}

impl Outbox {
    /// Opens the file read-only, for the API (it never writes the alert state).
    pub fn open_read_only(dir: &Path) -> rusqlite::Result<Outbox> {
        let conn = Connection::open_with_flags(
            dir.join("alerts.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Outbox { conn })
    }

    /// The newest `limit` notification rows, newest first.
    pub fn history(&self, limit: usize) -> rusqlite::Result<Vec<HistoryRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, created_ms, channel, attempts, delivered_ms, failed_ms, last_error, notification \
             FROM outbox ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            let json: String = r.get(7)?;
            let Ok(notification) = serde_json::from_str(&json) else {
                return Ok(None);
            };
            Ok(Some(HistoryRow {
                id: r.get(0)?,
                created_ms: r.get(1)?,
                channel: r.get(2)?,
                attempts: r.get(3)?,
                delivered_ms: r.get(4)?,
                failed_ms: r.get(5)?,
                last_error: r.get(6)?,
                notification,
            }))
        })?;
        rows.filter_map(Result::transpose).collect()
    }

    /// Stores a new silence and returns it with its id.
    pub fn add_silence(&self, mut s: Silence) -> rusqlite::Result<Silence> {
        self.conn.execute(
            "INSERT INTO silences (silence, until_ms) VALUES ('{}', ?1)",
            params![s.until_ms],
        )?;
        s.id = self.conn.last_insert_rowid();
        let json = serde_json::to_string(&s).map_err(to_sql_err)?;
        self.conn.execute(
            "UPDATE silences SET silence = ?2 WHERE id = ?1",
            params![s.id, json],
        )?;
        Ok(s)
    }

    /// Silences still in force at `now_ms`, newest first.
    pub fn silences(&self, now_ms: i64) -> rusqlite::Result<Vec<Silence>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT silence FROM silences WHERE until_ms > ?1 ORDER BY id DESC")?;
        let rows = stmt.query_map(params![now_ms], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(s) = serde_json::from_str(&row?) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Ends a silence; `false` if there was none with that id.
    pub fn delete_silence(&self, id: i64) -> rusqlite::Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM silences WHERE id = ?1", params![id])?
            > 0)
    }
}

fn to_sql_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::RuleKind;
    use crate::alerts::state::Notice;
    use crate::alerts::{Notification, Severity};

    fn notification() -> Notification {
        Notification {
            rule: "r".into(),
            kind: RuleKind::Webhook,
            rate: None,
            signal: None,
            severity: Severity::Warning,
            channels: Vec::new(),
            notice: Notice::Firing,
            at: 0,
            alerts: Vec::new(),
            more: 0,
            reasons: Vec::new(),
            window_minutes: 5,
        }
    }

    #[test]
    fn finished_rows_are_purged_after_the_keep_time_and_pending_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path()).unwrap();
        let rows = vec![
            ("log".to_string(), notification()),
            ("email".to_string(), notification()),
        ];
        outbox.commit(&[], None, &rows, 1_000).unwrap();
        let due = outbox.due(1_000, 10).unwrap();
        outbox.delivered(due[0].id, 1_001).unwrap();
        // The email row is still pending; the log row delivered.
        outbox.commit(&[], None, &[], 1_000 + KEEP_MS + 1).unwrap();
        let left = outbox.history(10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].channel, "email", "a pending row is never purged");
    }
}

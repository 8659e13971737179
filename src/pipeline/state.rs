//! The pipeline's durable state, in `pipeline.sqlite3`: its checkpoint (the last `seq` it
//! counted), a snapshot of the windows, and the providers it learned, all written in one
//! transaction.
//!
//! That single transaction is what makes a restart exact: the windows as of seq N and the
//! classifier as of seq N are restored together, then the journal is replayed from N + 1, so
//! every event is counted once and classified as it was the first time.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use serde::{Deserialize, Serialize};

use super::Provider;
use crate::metrics::CampaignCounters;
use crate::windows::Snapshot;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS checkpoint (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    seq      INTEGER NOT NULL,
    saved_ms INTEGER NOT NULL,
    windows  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS learned_providers (
    domain   TEXT PRIMARY KEY,
    provider TEXT NOT NULL
);
"#;

/// What the `windows` column holds: the windows and the event counters as of the same seq.
#[derive(Serialize, Deserialize)]
struct Saved {
    windows: Snapshot,
    campaigns: CampaignCounters,
}

/// What a previous run left.
pub struct Restored {
    pub seq: i64,
    pub windows: Option<Snapshot>,
    pub campaigns: Option<CampaignCounters>,
    pub learned: Vec<(String, Provider)>,
}

pub struct StateDb {
    conn: Connection,
}

impl StateDb {
    pub fn open(path: &Path) -> rusqlite::Result<StateDb> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(StateDb { conn })
    }

    pub fn load(&self) -> rusqlite::Result<Restored> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, windows FROM checkpoint WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (seq, saved) = match row {
            Some((seq, json)) => match serde_json::from_str::<Saved>(&json) {
                Ok(saved) => (seq, Some(saved)),
                Err(e) => {
                    // A snapshot this version cannot read: recount from the start of the journal.
                    tracing::warn!(error = %e, "pipeline snapshot unreadable; replaying the whole journal");
                    (0, None)
                }
            },
            None => (0, None),
        };
        let (windows, campaigns) = match saved {
            Some(s) => (Some(s.windows), Some(s.campaigns)),
            None => (None, None),
        };
        let learned = if windows.is_some() {
            let mut stmt = self
                .conn
                .prepare("SELECT domain, provider FROM learned_providers")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.filter_map(|row| match row {
                Ok((domain, name)) => Provider::parse(&name).map(|p| Ok((domain, p))),
                Err(e) => Some(Err(e)),
            })
            .collect::<rusqlite::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Restored {
            seq,
            windows,
            campaigns,
            learned,
        })
    }

    /// Saves the checkpoint, the windows, the event counters and what was learned since the
    /// last save, atomically.
    pub fn save(
        &mut self,
        seq: i64,
        windows: &Snapshot,
        campaigns: &CampaignCounters,
        learned: &[(String, Provider)],
    ) -> rusqlite::Result<()> {
        #[derive(Serialize)]
        struct SavedRef<'a> {
            windows: &'a Snapshot,
            campaigns: &'a CampaignCounters,
        }
        let json = serde_json::to_string(&SavedRef { windows, campaigns })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO learned_providers (domain, provider) VALUES (?1, ?2) \
                 ON CONFLICT (domain) DO UPDATE SET provider = excluded.provider",
            )?;
            for (domain, provider) in learned {
                insert.execute(params![domain, provider.as_str()])?;
            }
            tx.execute(
                "INSERT INTO checkpoint (id, seq, saved_ms, windows) VALUES (1, ?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, saved_ms = excluded.saved_ms, \
                 windows = excluded.windows",
                params![seq, crate::journal::now_ms(), json],
            )?;
        }
        tx.commit()
    }
}

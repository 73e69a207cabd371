//! Submitting sweeps (idempotent, additive) and counting their jobs by state.

use std::path::Path;

use proto::sweep::Sweep;
use proto::{JobCounts, JobState, SweepId};
use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmitOutcome {
    #[serde(skip)]
    pub sweep_id: SweepId,
    #[serde(rename = "sweep")]
    pub name: String,
    /// Cells that were not in the database before.
    pub created: u64,
    /// Cells that already existed (in any state) and were left untouched.
    pub existing: u64,
}

/// One sweep's line of `coordinator status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepStatus {
    #[serde(skip)]
    pub id: SweepId,
    pub name: String,
    pub state: String,
    pub priority: i64,
    /// When the sweep was first submitted (ms); the dashboard shows it, `status` does not.
    #[serde(skip)]
    pub created_at: i64,
    pub jobs: JobCounts,
}

impl Store {
    /// Adds the sweep's missing cells. Existing cells, whatever their state, are never touched,
    /// so a re-submission neither duplicates work nor deletes finished results.
    pub async fn submit(
        &self,
        sweep: &Sweep,
        spec_text: &str,
        source: Option<&Path>,
    ) -> Result<SubmitOutcome, StoreError> {
        let now = now_ms();
        let source = source.map(|p| p.display().to_string());
        // IMMEDIATE: take the write lock up front (waiting out other writers, e.g. concurrent
        // `coordinator submit`s) instead of failing on a read-to-write upgrade.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let sweep_id: i64 = sqlx::query_scalar(
            "INSERT INTO sweeps (name, spec_toml, source_path, priority, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(name) DO UPDATE SET spec_toml = excluded.spec_toml,
                 source_path = excluded.source_path, updated_at = excluded.updated_at
             RETURNING id",
        )
        .bind(&sweep.name)
        .bind(spec_text)
        .bind(&source)
        .bind(sweep.priority)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut next_seq: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), -1) + 1 FROM jobs WHERE sweep_id = ?1")
                .bind(sweep_id)
                .fetch_one(&mut *tx)
                .await?;
        let mut created = 0u64;
        for cell in &sweep.cells {
            let done = sqlx::query(
                "INSERT INTO jobs (sweep_id, key, params_json, seq, max_attempts, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT(sweep_id, key) DO NOTHING",
            )
            .bind(sweep_id)
            .bind(cell.key().0)
            .bind(cell.canonical_json())
            .bind(next_seq)
            .bind(i64::from(sweep.max_attempts))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                created += 1;
                next_seq += 1;
            }
        }
        tx.commit().await?;
        Ok(SubmitOutcome {
            sweep_id: SweepId(sweep_id),
            name: sweep.name.clone(),
            created,
            existing: sweep.cells.len() as u64 - created,
        })
    }

    /// Every sweep in scheduling order (priority, then submission), with its jobs by state: the
    /// one query that counts jobs by state (the dashboard's list and the monitor use it too).
    pub async fn status(&self) -> Result<Vec<SweepStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.id, s.name, s.state, s.priority, s.created_at,
                    COALESCE(SUM(j.state = 'queued'), 0)    AS queued,
                    COALESCE(SUM(j.state = 'running'), 0)   AS running,
                    COALESCE(SUM(j.state = 'done'), 0)      AS done,
                    COALESCE(SUM(j.state = 'failed'), 0)    AS failed,
                    COALESCE(SUM(j.state = 'cancelled'), 0) AS cancelled
             FROM sweeps s LEFT JOIN jobs j ON j.sweep_id = s.id
             GROUP BY s.id ORDER BY s.priority DESC, s.id ASC",
        )
        .fetch_all(&self.reader)
        .await?;
        let count = |row: &sqlx::sqlite::SqliteRow, col: &str| -> Result<u64, StoreError> {
            let v: i64 = row.try_get(col)?;
            u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {col} count")))
        };
        rows.iter()
            .map(|row| {
                let mut jobs = JobCounts::default();
                for &s in JobState::ALL {
                    jobs.add(s, count(row, s.as_str())?);
                }
                Ok(SweepStatus {
                    id: SweepId(row.try_get("id")?),
                    name: row.try_get("name")?,
                    state: row.try_get("state")?,
                    priority: row.try_get("priority")?,
                    created_at: row.try_get("created_at")?,
                    jobs,
                })
            })
            .collect()
    }
}

//! The one writer path for what workers report: metric batches, snapshots, results, artifacts.
//!
//! Fencing (is this attempt still the live one?) is decided by the caller; this module makes
//! storage exactly-once per (attempt, sequence number) and keeps each batch one transaction.

use std::collections::BTreeMap;

use proto::{AttemptId, JobId, SnapshotProjection};
use sqlx::QueryBuilder;

use super::{Store, StoreError, now_ms};

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub step: i64,
    pub epoch: i64,
    pub name: String,
    pub value: f64,
    pub time_ms: i64,
}

/// Result of storing a metric batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored. `gap_before` is `Some((expected, got))` when earlier sequence numbers are missing.
    Stored { gap_before: Option<(i64, i64)> },
    /// This (attempt, seq) was stored before; nothing was written.
    Duplicate,
}

/// A 2-D picture of the embedding of a fixed test subset at one epoch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotData {
    pub epoch: i64,
    /// Which projection drew the points (`Identity` when the embedding is 2-D).
    pub projection: SnapshotProjection,
    pub points: Vec<[f32; 2]>,
    pub labels: Vec<u32>,
    /// Positions of the points in the dataset's test split.
    pub indices: Vec<u32>,
    pub class_names: Vec<String>,
}

impl SnapshotData {
    /// Little-endian f32 (x, y) pairs.
    pub(crate) fn points_blob(&self) -> Vec<u8> {
        self.points
            .iter()
            .flat_map(|p| p.iter().flat_map(|v| v.to_le_bytes()))
            .collect()
    }

    /// Decodes the blobs written by `SnapshotData::points_blob` and `u32_blob`.
    pub fn from_blobs(
        epoch: i64,
        projection: SnapshotProjection,
        points: &[u8],
        labels: &[u8],
        indices: &[u8],
        class_names: Vec<String>,
    ) -> Result<SnapshotData, StoreError> {
        if !points.len().is_multiple_of(8) {
            return Err(StoreError::Corrupt(format!(
                "snapshot points blob of {} bytes",
                points.len()
            )));
        }
        let pts = points
            .chunks_exact(8)
            .map(|c| {
                [
                    f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                ]
            })
            .collect::<Vec<_>>();
        let labels = decode_u32s(labels)?;
        let indices = decode_u32s(indices)?;
        if labels.len() != pts.len() || indices.len() != pts.len() {
            return Err(StoreError::Corrupt(
                "snapshot blobs of different lengths".into(),
            ));
        }
        Ok(SnapshotData {
            epoch,
            projection,
            points: pts,
            labels,
            indices,
            class_names,
        })
    }
}

/// Little-endian u32s.
pub(crate) fn u32_blob(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode_u32s(blob: &[u8]) -> Result<Vec<u32>, StoreError> {
    if !blob.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt(format!(
            "u32 blob of {} bytes",
            blob.len()
        )));
    }
    Ok(blob
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// A stored checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub job: JobId,
    pub attempt: AttemptId,
    pub kind: String,
    pub epoch: i64,
    pub path: String,
    pub size: i64,
    pub sha256: String,
}

/// Rows per multi-row INSERT: SQLite binds at most 32,766 parameters, and 7 columns per row.
const ROWS_PER_INSERT: usize = 4_000;

impl Store {
    /// Stores one metric batch exactly once per (attempt, seq).
    pub async fn record_metrics(
        &self,
        job: JobId,
        attempt: AttemptId,
        seq: i64,
        points: &[MetricPoint],
    ) -> Result<BatchOutcome, StoreError> {
        let _timer = crate::obs::db_write(crate::obs::DbWrite::MetricBatch);
        let mut tx = self.writer.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO metric_batches (attempt_id, seq, points, received_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(attempt_id, seq) DO NOTHING",
        )
        .bind(attempt.0)
        .bind(seq)
        .bind(points.len() as i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if fresh.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(BatchOutcome::Duplicate);
        }
        for chunk in points.chunks(ROWS_PER_INSERT) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO metrics (job_id, attempt_id, seq, step, epoch, name, value, time) ",
            );
            qb.push_values(chunk, |mut b, p| {
                b.push_bind(job.0)
                    .push_bind(attempt.0)
                    .push_bind(seq)
                    .push_bind(p.step)
                    .push_bind(p.epoch)
                    .push_bind(&p.name)
                    .push_bind(p.value)
                    .push_bind(p.time_ms);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let last: i64 = sqlx::query_scalar("SELECT last_seq FROM attempts WHERE id = ?1")
            .bind(attempt.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {attempt}")))?;
        if seq > last {
            sqlx::query("UPDATE attempts SET last_seq = ?2 WHERE id = ?1")
                .bind(attempt.0)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let gap_before = (seq > last + 1).then_some((last + 1, seq));
        if let Some((expected, got)) = gap_before {
            tracing::warn!(%attempt, expected, got, "metric batch sequence gap");
        }
        Ok(BatchOutcome::Stored { gap_before })
    }

    /// Stores (or replaces, on a resent report) the snapshot of one epoch of one attempt.
    pub async fn record_snapshot(
        &self,
        job: JobId,
        attempt: AttemptId,
        snap: &SnapshotData,
    ) -> Result<(), StoreError> {
        if snap.labels.len() != snap.points.len() || snap.indices.len() != snap.points.len() {
            return Err(StoreError::Conflict(
                "snapshot arrays of different lengths".into(),
            ));
        }
        let names = serde_json::to_string(&snap.class_names)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _timer = crate::obs::db_write(crate::obs::DbWrite::Snapshot);
        sqlx::query(
            "INSERT INTO snapshots (job_id, attempt_id, epoch, projected, n, points, labels, indices,
                                    created_at, class_names, projection)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(attempt_id, epoch) DO UPDATE SET projected = excluded.projected,
                 projection = excluded.projection,
                 n = excluded.n, points = excluded.points, labels = excluded.labels,
                 indices = excluded.indices, class_names = excluded.class_names",
        )
        .bind(job.0)
        .bind(attempt.0)
        .bind(snap.epoch)
        .bind(snap.projection.is_projected())
        .bind(snap.points.len() as i64)
        .bind(snap.points_blob())
        .bind(u32_blob(&snap.labels))
        .bind(u32_blob(&snap.indices))
        .bind(now_ms())
        .bind(names)
        .bind(snap.projection.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Stores a job's final metrics (the last writer wins: a job has one result).
    pub async fn record_result(
        &self,
        job: JobId,
        attempt: AttemptId,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(metrics).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.writer.acquire().await?;
        upsert_result(&mut conn, job, attempt, &json).await?;
        Ok(())
    }

    /// Records a stored checkpoint file; returns its artifact id.
    pub async fn record_artifact(&self, a: &ArtifactRow) -> Result<i64, StoreError> {
        let _timer = crate::obs::db_write(crate::obs::DbWrite::Artifact);
        let done = sqlx::query(
            "INSERT INTO artifacts (job_id, attempt_id, kind, epoch, path, size, sha256, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(a.job.0)
        .bind(a.attempt.0)
        .bind(&a.kind)
        .bind(a.epoch)
        .bind(&a.path)
        .bind(a.size)
        .bind(&a.sha256)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(done.last_insert_rowid())
    }
}

/// Stores (or replaces) a job's final metrics, on the caller's connection or transaction.
pub(super) async fn upsert_result(
    conn: &mut sqlx::SqliteConnection,
    job: JobId,
    attempt: AttemptId,
    metrics_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO results (job_id, attempt_id, metrics_json, finished_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(job_id) DO UPDATE SET attempt_id = excluded.attempt_id,
             metrics_json = excluded.metrics_json, finished_at = excluded.finished_at",
    )
    .bind(job.0)
    .bind(attempt.0)
    .bind(metrics_json)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

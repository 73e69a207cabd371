//! The one place where wire types (`proto::rpc`) and domain types (store rows, sched values)
//! are converted into each other, with the validation a malformed message needs.

use proto::rpc::{self, PROTOCOL_VERSION};
use proto::{AttemptId, JobState, LeaseToken, SnapshotProjection, WorkerId};

use super::error::RpcError;
use crate::sched::AttemptEnd;
use crate::store::MetricPoint;
use crate::store::SnapshotData;
use crate::store::lease::{ArtifactInfo, LeasedJob, NewWorker};

/// Longest accepted name/host/backend/version string.
const MAX_LABEL: usize = 256;
/// Longest stored error text of a failed attempt.
const MAX_ERROR: usize = 8 * 1024;
/// Longest metric name.
const MAX_METRIC_NAME: usize = 128;

/// Rejects requests of another protocol version.
pub(crate) fn check_version(got: u32) -> Result<(), RpcError> {
    if got == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(RpcError::ProtocolVersion {
            got,
            want: PROTOCOL_VERSION,
        })
    }
}

fn label(field: &str, s: &str, required: bool) -> Result<String, RpcError> {
    if required && s.trim().is_empty() {
        return Err(RpcError::InvalidArgument(format!("{field} is empty")));
    }
    if s.len() > MAX_LABEL {
        return Err(RpcError::InvalidArgument(format!(
            "{field} is longer than {MAX_LABEL} bytes"
        )));
    }
    Ok(s.to_owned())
}

/// Positive row id from the wire.
pub(crate) fn id(field: &str, v: i64) -> Result<i64, RpcError> {
    if v > 0 {
        Ok(v)
    } else {
        Err(RpcError::InvalidArgument(format!(
            "{field} must be positive"
        )))
    }
}

pub(crate) fn worker_id(v: i64) -> Result<WorkerId, RpcError> {
    id("worker_id", v).map(WorkerId)
}

pub(crate) fn attempt_id(v: i64) -> Result<AttemptId, RpcError> {
    id("attempt_id", v).map(AttemptId)
}

/// The `lease_token` of a request about an attempt: 0 is "none sent" (a worker older than the
/// field), which fencing accepts only for attempts leased before tokens existed.
pub(crate) fn lease_token(v: u64) -> Option<LeaseToken> {
    LeaseToken::from_wire(v)
}

/// Checks the `database_id` a worker sent with a request about `attempt`: a stale attempt of a
/// replaced database is refused before its id is looked up (the id may now be another job's).
/// Empty passes: a worker older than the field.
pub(crate) fn attempt_database(sent: &str, ours: &str, attempt: AttemptId) -> Result<(), RpcError> {
    if sent.is_empty() || sent == ours {
        Ok(())
    } else {
        Err(RpcError::OtherDatabase(format!("attempt {attempt}")))
    }
}

/// [`attempt_database`] for a request about a worker (its `Lease` heartbeat).
pub(crate) fn worker_database(sent: &str, ours: &str, worker: WorkerId) -> Result<(), RpcError> {
    if sent.is_empty() || sent == ours {
        Ok(())
    } else {
        Err(RpcError::WorkerOfOtherDatabase(worker.0))
    }
}

pub(crate) fn new_worker(r: &rpc::RegisterRequest) -> Result<NewWorker, RpcError> {
    let devices: Vec<serde_json::Value> = r
        .devices
        .iter()
        .map(|d| {
            serde_json::json!({ "index": d.index, "name": d.name, "memory_bytes": d.memory_bytes })
        })
        .collect();
    Ok(NewWorker {
        name: label("name", &r.name, true)?,
        host: label("host", &r.host, false)?,
        backend: label("backend", &r.backend, true)?,
        devices_json: serde_json::Value::Array(devices).to_string(),
        version: label("software_version", &r.software_version, false)?,
    })
}

pub(crate) fn artifact_ref(a: &ArtifactInfo) -> rpc::ArtifactRef {
    rpc::ArtifactRef {
        artifact_id: a.id,
        epoch: u32::try_from(a.epoch).unwrap_or(0),
        size: u64::try_from(a.size).unwrap_or(0),
        sha256: a.sha256.clone(),
    }
}

/// A lease as sent, tagged with the database (`database_id`) its attempt id belongs to.
pub(crate) fn job_lease(l: &LeasedJob, database_id: &str) -> rpc::JobLease {
    rpc::JobLease {
        job_id: l.job.0,
        attempt_id: l.attempt.0,
        attempt_number: l.number,
        params_json: l.params_json.clone(),
        sweep_name: l.sweep_name.clone(),
        resume: l.resume.as_ref().map(artifact_ref),
        lease_expires_at_ms: l.expires_at,
        database_id: database_id.to_owned(),
        lease_token: LeaseToken::to_wire(Some(l.token)),
    }
}

fn metric_name(name: &str) -> Result<(), RpcError> {
    if name.is_empty() || name.len() > MAX_METRIC_NAME {
        return Err(RpcError::InvalidArgument(format!(
            "metric name must have 1..={MAX_METRIC_NAME} bytes"
        )));
    }
    Ok(())
}

/// Metric points of a batch. SQLite stores NaN as NULL, which the schema refuses, so
/// non-finite values (a diverging loss) are dropped here; the failure itself is reported
/// through `Fail`.
pub(crate) fn metric_points(b: &rpc::MetricBatch) -> Result<Vec<MetricPoint>, RpcError> {
    if b.seq < 0 {
        return Err(RpcError::InvalidArgument(
            "metric batch seq must be >= 0".into(),
        ));
    }
    let mut out = Vec::with_capacity(b.points.len());
    for p in &b.points {
        metric_name(&p.name)?;
        if p.value.is_finite() {
            out.push(MetricPoint {
                step: p.step,
                epoch: p.epoch,
                name: p.name.clone(),
                value: p.value,
                time_ms: p.time_ms,
            });
        }
    }
    Ok(out)
}

/// An evaluation becomes one metric point per key, at its epoch and step.
pub(crate) fn eval_points(e: &rpc::EvalResult) -> Result<Vec<MetricPoint>, RpcError> {
    if e.seq < 0 {
        return Err(RpcError::InvalidArgument(
            "evaluation seq must be >= 0".into(),
        ));
    }
    let mut out = Vec::with_capacity(e.metrics.len());
    for (name, value) in &e.metrics {
        metric_name(name)?;
        if value.is_finite() {
            out.push(MetricPoint {
                step: e.step,
                epoch: i64::from(e.epoch),
                name: name.clone(),
                value: *value,
                time_ms: e.time_ms,
            });
        }
    }
    Ok(out)
}

pub(crate) fn snapshot(s: &rpc::EpochSnapshot) -> Result<SnapshotData, RpcError> {
    if !s.xy.len().is_multiple_of(2) {
        return Err(RpcError::InvalidArgument(
            "snapshot xy has an odd length".into(),
        ));
    }
    let n = s.xy.len() / 2;
    if s.labels.len() != n || s.indices.len() != n {
        return Err(RpcError::InvalidArgument(
            "snapshot points, labels and indices differ in length".into(),
        ));
    }
    // Workers that predate the field send it empty; their flag meant PCA.
    let projection = if s.projection.is_empty() {
        SnapshotProjection::from_projected(s.projected)
    } else {
        s.projection
            .parse()
            .map_err(|e: proto::params::UnknownName| RpcError::InvalidArgument(e.to_string()))?
    };
    Ok(SnapshotData {
        epoch: i64::from(s.epoch),
        projection,
        points: s.xy.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        labels: s.labels.clone(),
        indices: s.indices.clone(),
        class_names: s.class_names.clone(),
    })
}

/// A job's state as the replies to `Complete` and `Fail` carry it.
pub(crate) fn job_state(s: JobState) -> String {
    s.as_str().to_owned()
}

/// A `Fail` request as an attempt end; long error texts are cut (on a char boundary).
pub(crate) fn failure(r: &rpc::FailRequest) -> AttemptEnd {
    let mut error = r.error.clone();
    if error.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
        error.push_str(" [truncated]");
    }
    if error.trim().is_empty() {
        error = "worker reported a failure without a message".into();
    }
    AttemptEnd::Failed {
        error,
        retryable: r.retryable,
    }
}

/// Validates a lowercase hex sha256.
pub(crate) fn sha256_hex(s: &str) -> Result<String, RpcError> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(s.to_owned())
    } else {
        Err(RpcError::InvalidArgument(
            "sha256 must be 64 lowercase hex digits".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_checked() {
        let mut s = rpc::EpochSnapshot {
            epoch: 1,
            projected: false,
            xy: vec![0.0, 1.0, 2.0, 3.0],
            labels: vec![0, 1],
            indices: vec![5, 6],
            class_names: vec!["a".into(), "b".into()],
            projection: String::new(),
        };
        let d = snapshot(&s).unwrap();
        assert_eq!(d.points, vec![[0.0, 1.0], [2.0, 3.0]]);
        assert_eq!(d.projection, SnapshotProjection::Identity);
        // An older worker's flag reads as PCA; a named projection is taken as named.
        s.projected = true;
        assert_eq!(snapshot(&s).unwrap().projection, SnapshotProjection::Pca);
        s.projection = "tsne".into();
        assert_eq!(snapshot(&s).unwrap().projection, SnapshotProjection::Tsne);
        s.projection = "umap".into();
        let err = snapshot(&s).unwrap_err().to_string();
        assert!(err.contains("umap"), "{err}");
        s.projection = "pca".into();
        s.labels.pop();
        assert!(matches!(snapshot(&s), Err(RpcError::InvalidArgument(_))));
    }

    #[test]
    fn metrics_drop_non_finite_and_check_names() {
        let p = |name: &str, value: f64| rpc::MetricPoint {
            step: 1,
            epoch: 0,
            name: name.into(),
            value,
            time_ms: 0,
        };
        let b = rpc::MetricBatch {
            seq: 0,
            points: vec![
                p(proto::metric::LOSS, 1.0),
                p(proto::metric::LOSS, f64::NAN),
            ],
        };
        assert_eq!(metric_points(&b).unwrap().len(), 1);
        let b = rpc::MetricBatch {
            seq: 0,
            points: vec![p("", 1.0)],
        };
        assert!(metric_points(&b).is_err());
        assert!(
            metric_points(&rpc::MetricBatch {
                seq: -1,
                points: vec![]
            })
            .is_err()
        );
    }

    #[test]
    fn versions_and_ids() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        assert!(matches!(
            check_version(0),
            Err(RpcError::ProtocolVersion { got: 0, .. })
        ));
        assert!(attempt_id(0).is_err());
        assert!(sha256_hex(&"a".repeat(64)).is_ok());
        assert!(sha256_hex("xyz").is_err());
        let a = AttemptId(5);
        assert!(
            attempt_database("", "db-1", a).is_ok(),
            "older workers send none"
        );
        assert!(attempt_database("db-1", "db-1", a).is_ok());
        assert!(matches!(
            attempt_database("db-0", "db-1", a),
            Err(RpcError::OtherDatabase(ref m)) if m == "attempt 5"
        ));
        assert!(matches!(
            worker_database("db-0", "db-1", WorkerId(3)),
            Err(RpcError::WorkerOfOtherDatabase(3))
        ));
        let f = failure(&rpc::FailRequest {
            error: "é".repeat(10_000),
            retryable: true,
            ..Default::default()
        });
        assert!(
            matches!(f, AttemptEnd::Failed { ref error, .. } if error.ends_with("[truncated]"))
        );
    }
}

//! Pure run-table logic shared by the pages and the exports: axes, filters, sorting, aggregation.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use proto::metric;
use serde_json::Value;

use crate::data::RunRow;

/// Final metric keys in display order; other keys found in results follow alphabetically.
pub const METRICS: &[&str] = &metric::FINAL;

/// Text of a parameter value as used in tables, filters and URLs (`none` for null).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "none".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Orders parameter values: numbers numerically, everything else by text; null first.
pub(crate) fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x.total_cmp(&y)
        }
        _ => value_text(a).cmp(&value_text(b)),
    }
}

/// One run's result for humans: as [`fmt_metric`], except the collapse flag, which reads yes/no.
/// (A mean of the flag over runs is a fraction, so summaries use [`fmt_metric`].)
pub fn fmt_result(name: &str, v: f64) -> String {
    match name {
        metric::COLLAPSED if v == 1.0 => "yes".to_owned(),
        metric::COLLAPSED if v == 0.0 => "no".to_owned(),
        _ => fmt_metric(name, v),
    }
}

/// Formats a metric for humans: throughput with one decimal, counts as integers, scores with 4.
pub fn fmt_metric(name: &str, v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    match name {
        metric::SAMPLES_PER_SEC => format!("{v:.1}"),
        metric::EPOCHS | metric::BEST_EPOCH => format!("{v:.0}"),
        _ => format!("{v:.4}"),
    }
}

/// One parameter of a sweep and its distinct values, sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<Value>,
}

impl Axis {
    /// Whether the parameter takes more than one value in the sweep (a real axis of the grid).
    pub fn varies(&self) -> bool {
        self.values.len() > 1
    }
}

/// All parameters of the runs in first-seen order, each with its distinct values.
pub fn axes(runs: &[RunRow]) -> Vec<Axis> {
    let mut out: Vec<Axis> = Vec::new();
    for r in runs {
        for (k, v) in &r.params {
            let axis = match out.iter_mut().position(|a| &a.name == k) {
                Some(i) => &mut out[i],
                None => {
                    out.push(Axis {
                        name: k.clone(),
                        values: Vec::new(),
                    });
                    out.last_mut().unwrap()
                }
            };
            // Sweeps have few distinct values per axis, so a linear scan beats hashing JSON.
            if !axis.values.contains(v) {
                axis.values.push(v.clone());
            }
        }
    }
    for a in &mut out {
        a.values.sort_by(cmp_values);
    }
    out
}

/// Metric keys present in the runs: [`METRICS`] order first, then any others alphabetically.
pub(crate) fn metric_names(runs: &[RunRow]) -> Vec<String> {
    let mut extra: Vec<&String> = Vec::new();
    for r in runs {
        for k in r.metrics.keys() {
            if !METRICS.contains(&k.as_str()) && !extra.contains(&k) {
                extra.push(k);
            }
        }
    }
    extra.sort();
    let mut names: Vec<String> = METRICS.iter().map(|s| s.to_string()).collect();
    names.extend(extra.into_iter().cloned());
    names
}

/// Keeps the runs whose parameters match every filter; several values of one axis are OR-ed.
/// Filters naming unknown parameters are ignored by the caller (see [`filters_from_query`]).
pub(crate) fn filter_runs<'a>(runs: &'a [RunRow], filters: &[(String, String)]) -> Vec<&'a RunRow> {
    let mut by_axis: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in filters {
        by_axis.entry(k.as_str()).or_default().push(v.as_str());
    }
    runs.iter()
        .filter(|r| {
            by_axis.iter().all(|(axis, wanted)| {
                let have = r
                    .param(axis)
                    .map(value_text)
                    .unwrap_or_else(|| "none".to_owned());
                wanted.iter().any(|w| *w == have)
            })
        })
        .collect()
}

/// Picks the query pairs that name a parameter of the runs (empty values mean "any").
pub(crate) fn filters_from_query(
    query: &[(String, String)],
    axes: &[Axis],
) -> Vec<(String, String)> {
    query
        .iter()
        .filter(|(k, v)| !v.is_empty() && axes.iter().any(|a| &a.name == k))
        .cloned()
        .collect()
}

/// Sorts runs by a column: `job`, `seq`, `state`, `attempts`, a parameter or a metric name.
/// Runs without a value sort last in either direction.
pub(crate) fn sort_runs(runs: &mut [&RunRow], column: &str, desc: bool) {
    let key_cmp = |a: &RunRow, b: &RunRow| -> Option<Ordering> {
        match column {
            "job" => Some(a.job_id.cmp(&b.job_id)),
            "seq" => Some(a.seq.cmp(&b.seq)),
            "state" => Some(a.state.as_str().cmp(b.state.as_str())),
            "attempts" => Some(a.attempts.cmp(&b.attempts)),
            _ => None,
        }
    };
    runs.sort_by(|a, b| {
        if let Some(o) = key_cmp(a, b) {
            return if desc { o.reverse() } else { o }.then(a.seq.cmp(&b.seq));
        }
        if a.param(column).is_some() || b.param(column).is_some() {
            let o = match (a.param(column), b.param(column)) {
                (Some(x), Some(y)) => cmp_values(x, y),
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            return if desc { o.reverse() } else { o }.then(a.seq.cmp(&b.seq));
        }
        match (a.metrics.get(column), b.metrics.get(column)) {
            (Some(x), Some(y)) => {
                let o = x.total_cmp(y);
                if desc { o.reverse() } else { o }.then(a.seq.cmp(&b.seq))
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.seq.cmp(&b.seq),
        }
    });
}

/// Groups runs by the values of some axes, groups sorted by those values.
pub(crate) fn group_runs<'a>(
    runs: &[&'a RunRow],
    by: &[&str],
) -> Vec<(Vec<Value>, Vec<&'a RunRow>)> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<(Vec<Value>, Vec<&'a RunRow>)> = Vec::new();
    for r in runs {
        let key: Vec<Value> = by
            .iter()
            .map(|a| r.param(a).cloned().unwrap_or(Value::Null))
            .collect();
        // Hash the text form: JSON values are not `Hash`, and sweeps can hold thousands of groups.
        let text = key
            .iter()
            .map(value_text)
            .collect::<Vec<_>>()
            .join("\u{1f}");
        match index.get(&text) {
            Some(&i) => groups[i].1.push(r),
            None => {
                index.insert(text, groups.len());
                groups.push((key, vec![r]));
            }
        }
    }
    groups.sort_by(|(a, _), (b, _)| {
        a.iter()
            .zip(b)
            .map(|(x, y)| cmp_values(x, y))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    groups
}

/// Values of `metric` over runs.
pub(crate) fn metric_values(runs: &[&RunRow], metric: &str) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.metrics.get(metric).copied())
        .collect()
}

/// Whether a finished run's result flags a collapsed embedding ([`metric::COLLAPSED`] = 1).
pub fn is_collapsed(r: &RunRow) -> bool {
    r.metrics.get(metric::COLLAPSED).is_some_and(|v| *v >= 0.5)
}

/// What a run shares with its partner in another cell: every parameter except `skip`, as text.
/// Two runs with the same key differ only in the compared axes, so a test may pair them.
pub(crate) fn pair_key(params: &[(String, Value)], skip: &[&str]) -> String {
    params
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// `(pair key, value)` of `metric` over runs, for [`crate::stats::compare`].
pub(crate) fn keyed_values(runs: &[&RunRow], metric: &str, skip: &[&str]) -> Vec<(String, f64)> {
    runs.iter()
        .filter_map(|r| {
            r.metrics
                .get(metric)
                .map(|v| (pair_key(&r.params, skip), *v))
        })
        .collect()
}

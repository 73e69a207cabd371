//! Reads a sweep file's TOML into typed axes, fixed settings and include/exclude rules,
//! keeping byte spans so every error names its line.

use std::collections::BTreeMap;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::axis::{Axis, Value, type_name};
use super::error::{Lines, SweepError};
use crate::params::DEFAULT_VAL_FRACTION;

/// A sweep file, validated but not yet expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepFile {
    pub name: String,
    pub description: Option<String>,
    pub priority: i64,
    pub max_attempts: u32,
    pub max_cells: Option<u64>,
    /// Every axis given or defaulted, with at least one value: all of [`Axis::ALL`] but `split`,
    /// which is absent when the file leaves it out (each cell then takes its dataset's default).
    pub grid: BTreeMap<Axis, Vec<Value>>,
    pub train_limit: Option<u64>,
    pub eval_every: u32,
    /// `[fixed] val_fraction`, in `[0, 1)`; [`DEFAULT_VAL_FRACTION`] when absent.
    pub val_fraction: f64,
    /// Extra cells: unnamed axes take the first value of the grid's axis.
    pub include: Vec<BTreeMap<Axis, Value>>,
    /// Cells to drop: a cell matches when, for every named axis, its value is one of those listed.
    pub exclude: Vec<BTreeMap<Axis, Vec<Value>>>,
    /// Where settings checked after expansion were written, for their errors.
    pub(crate) places: Places,
}

/// Byte offsets of settings in the text, for errors found after expansion.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Places {
    pub grid: usize,
    pub train_limit: Option<usize>,
    /// One per `[[include]]`, in order.
    pub include: Vec<usize>,
}

const TOP_KEYS: &str =
    "name, description, priority, max_attempts, max_cells, grid, fixed, include, exclude";
const FIXED_KEYS: &str = "train_limit, eval_every, val_fraction";

pub(crate) fn parse_file(text: &str, file: &str) -> Result<SweepFile, SweepError> {
    let lines = Lines { text, file };
    let root = DeTable::parse(text).map_err(|e| {
        lines.err(
            e.span().map(|s| s.start),
            None,
            format!("invalid TOML: {}", e.message().trim()),
        )
    })?;
    let root = root.get_ref();
    let mut out = SweepFile {
        name: String::new(),
        description: None,
        priority: 0,
        max_attempts: 3,
        max_cells: None,
        grid: BTreeMap::new(),
        train_limit: None,
        eval_every: 1,
        val_fraction: DEFAULT_VAL_FRACTION,
        include: Vec::new(),
        exclude: Vec::new(),
        places: Places::default(),
    };
    let mut grid_at = None;
    for (k, v) in root.iter() {
        let key = k.get_ref().as_ref();
        let at = Some(v.span().start);
        match key {
            "name" => {
                let name = string(&lines, key, v)?;
                if name.trim().is_empty() || name.len() > 200 {
                    return Err(lines.err(
                        at,
                        Some(key),
                        "must be a non-empty name of at most 200 characters",
                    ));
                }
                out.name = name;
            }
            "description" => out.description = Some(string(&lines, key, v)?),
            "priority" => out.priority = integer(&lines, key, v, -1_000_000, 1_000_000)?,
            "max_attempts" => out.max_attempts = integer(&lines, key, v, 1, 100)? as u32,
            "max_cells" => out.max_cells = Some(integer(&lines, key, v, 1, 10_000_000)? as u64),
            "grid" => {
                grid_at = Some(v.span().start);
                out.grid = parse_grid(&lines, table(&lines, key, v)?)?;
            }
            "fixed" => {
                for (fk, fv) in table(&lines, key, v)?.iter() {
                    let name = fk.get_ref().as_ref();
                    let dotted = format!("fixed.{name}");
                    match name {
                        "train_limit" => {
                            out.places.train_limit = Some(fv.span().start);
                            out.train_limit =
                                Some(integer(&lines, &dotted, fv, 1, i64::MAX)? as u64)
                        }
                        "eval_every" => {
                            out.eval_every = integer(&lines, &dotted, fv, 1, 100_000)? as u32
                        }
                        "val_fraction" => out.val_fraction = fraction(&lines, &dotted, fv)?,
                        _ => return Err(unknown(&lines, &dotted, fk, FIXED_KEYS)),
                    }
                }
            }
            "include" | "exclude" => {
                let DeValue::Array(items) = v.get_ref() else {
                    return Err(lines.err(
                        at,
                        Some(key),
                        format!(
                            "expected an array of tables (`[[{key}]]`), found {}",
                            type_name(v.get_ref())
                        ),
                    ));
                };
                for (i, item) in items.iter().enumerate() {
                    let dotted = format!("{key}[{i}]");
                    let t = table(&lines, &dotted, item)?;
                    if t.is_empty() {
                        return Err(lines.err(
                            Some(item.span().start),
                            Some(&dotted),
                            "must name at least one axis",
                        ));
                    }
                    if key == "include" {
                        out.places.include.push(item.span().start);
                        out.include.push(
                            parse_rule(&lines, &dotted, t, false)?
                                .into_iter()
                                .map(|(a, mut vs)| (a, vs.remove(0)))
                                .collect(),
                        );
                    } else {
                        out.exclude.push(parse_rule(&lines, &dotted, t, true)?);
                    }
                }
            }
            _ => return Err(unknown(&lines, key, k, TOP_KEYS)),
        }
    }
    if out.name.is_empty() {
        return Err(lines.err(Some(0), Some("name"), "missing: every sweep needs a `name`"));
    }
    out.places.grid = grid_at.unwrap_or(0);
    let Some(grid_at) = grid_at else {
        return Err(lines.err(
            Some(0),
            Some("grid"),
            "missing: every sweep needs a `[grid]` table",
        ));
    };
    for axis in Axis::REQUIRED {
        if !out.grid.contains_key(&axis) {
            let key = format!("grid.{axis}");
            return Err(lines.err(Some(grid_at), Some(&key), "missing: this axis is required"));
        }
    }
    Ok(out)
}

fn parse_grid(
    lines: &Lines<'_>,
    t: &DeTable<'_>,
) -> Result<BTreeMap<Axis, Vec<Value>>, SweepError> {
    let mut grid = BTreeMap::new();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let dotted = format!("grid.{name}");
        let (axis, values) = if name == "seeds" {
            // `seeds = N` is shorthand for `seed = [0, 1, …, N-1]`.
            let n = integer(lines, &dotted, v, 1, 1000)? as u64;
            (Axis::Seed, (0..n).map(Value::Int).collect())
        } else {
            let Some(axis) = Axis::from_name(name) else {
                return Err(unknown(lines, &dotted, k, &axis_names()));
            };
            (axis, axis_values(lines, &dotted, axis, v)?)
        };
        if grid.insert(axis, values).is_some() {
            return Err(lines.err(
                Some(k.span().start),
                Some(&dotted),
                "`seed` and `seeds` both given; use one",
            ));
        }
    }
    for axis in Axis::ALL {
        if let Some(d) = axis.default_value() {
            grid.entry(axis).or_insert_with(|| vec![d]);
        }
    }
    Ok(grid)
}

fn parse_rule(
    lines: &Lines<'_>,
    prefix: &str,
    t: &DeTable<'_>,
    allow_lists: bool,
) -> Result<BTreeMap<Axis, Vec<Value>>, SweepError> {
    let mut rule = BTreeMap::new();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let dotted = format!("{prefix}.{name}");
        let Some(axis) = Axis::from_name(name) else {
            return Err(unknown(lines, &dotted, k, &axis_names()));
        };
        if !allow_lists && matches!(v.get_ref(), DeValue::Array(_)) {
            return Err(lines.err(
                Some(v.span().start),
                Some(&dotted),
                "an include names one value per axis, not a list",
            ));
        }
        rule.insert(axis, axis_values(lines, &dotted, axis, v)?);
    }
    Ok(rule)
}

/// A scalar or a non-empty array of distinct valid values.
fn axis_values(
    lines: &Lines<'_>,
    key: &str,
    axis: Axis,
    v: &Spanned<DeValue<'_>>,
) -> Result<Vec<Value>, SweepError> {
    let one = |item: &Spanned<DeValue<'_>>| {
        axis.parse(item)
            .map_err(|m| lines.err(Some(item.span().start), Some(key), m))
    };
    match v.get_ref() {
        DeValue::Array(items) => {
            if items.is_empty() {
                return Err(lines.err(
                    Some(v.span().start),
                    Some(key),
                    "empty axis: give at least one value",
                ));
            }
            let mut out: Vec<Value> = Vec::with_capacity(items.len());
            for item in items.iter() {
                let value = one(item)?;
                if out.contains(&value) {
                    return Err(lines.err(
                        Some(item.span().start),
                        Some(key),
                        "duplicate value in axis",
                    ));
                }
                out.push(value);
            }
            Ok(out)
        }
        _ => Ok(vec![one(v)?]),
    }
}

fn axis_names() -> String {
    let mut names: Vec<&str> = Axis::ALL.iter().map(|a| a.name()).collect();
    names.push("seeds");
    names.join(", ")
}

fn unknown(
    lines: &Lines<'_>,
    dotted: &str,
    k: &Spanned<std::borrow::Cow<'_, str>>,
    expected: &str,
) -> SweepError {
    lines.err(
        Some(k.span().start),
        Some(dotted),
        format!("unknown key; expected one of: {expected}"),
    )
}

fn table<'a, 'i>(
    lines: &Lines<'_>,
    key: &str,
    v: &'a Spanned<DeValue<'i>>,
) -> Result<&'a DeTable<'i>, SweepError> {
    v.get_ref().as_table().ok_or_else(|| {
        lines.err(
            Some(v.span().start),
            Some(key),
            format!("expected a table, found {}", type_name(v.get_ref())),
        )
    })
}

fn string(lines: &Lines<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Result<String, SweepError> {
    v.get_ref().as_str().map(str::to_owned).ok_or_else(|| {
        lines.err(
            Some(v.span().start),
            Some(key),
            format!("expected a string, found {}", type_name(v.get_ref())),
        )
    })
}

/// A number in `[0, 1)`: a fraction of the training data held out (1 would leave none to train).
fn fraction(lines: &Lines<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Result<f64, SweepError> {
    let at = Some(v.span().start);
    let x = match v.get_ref() {
        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .ok()
            .map(|x| x as f64),
        other => {
            return Err(lines.err(
                at,
                Some(key),
                format!("expected a number, found {}", type_name(other)),
            ));
        }
    };
    match x {
        Some(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(lines.err(
            at,
            Some(key),
            format!(
                "must be a fraction with 0 <= f < 1 (0 = no validation set), got {}",
                x.map_or_else(|| "an unreadable number".to_owned(), |x| x.to_string())
            ),
        )),
    }
}

fn integer(
    lines: &Lines<'_>,
    key: &str,
    v: &Spanned<DeValue<'_>>,
    min: i64,
    max: i64,
) -> Result<i64, SweepError> {
    let at = Some(v.span().start);
    let DeValue::Integer(i) = v.get_ref() else {
        return Err(lines.err(
            at,
            Some(key),
            format!("expected an integer, found {}", type_name(v.get_ref())),
        ));
    };
    let x = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
        .map_err(|_| lines.err(at, Some(key), format!("`{}` is out of range", i.as_str())))?;
    if x < min || x > max {
        return Err(lines.err(
            at,
            Some(key),
            format!("must be between {min} and {max}, got {x}"),
        ));
    }
    Ok(x)
}

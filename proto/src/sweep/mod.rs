//! Sweep files: parsing, validation and deterministic grid expansion into job cells.
//!
//! A sweep is a TOML file (reference in README.md):
//! ```toml
//! name = "mnist-classic"
//! [grid]
//! network = ["embedding-net"]
//! loss = ["ce", "contrastive"]
//! dataset = ["mnist"]
//! margin = [0.5, 1.0]
//! lr = [1e-3]
//! [fixed]
//! train_limit = 5000
//! ```
//! `margin` applies to `contrastive` and `triplet` only and `mining` to `triplet` only, so a
//! `ce` cell is never repeated across margins; `projection` applies above two dimensions only.
//! A sweep without a `split` axis gives each cell its dataset's default split
//! ([`Split::default_for`]: `classes` for folder datasets, `samples` for the built-ins). Each cell's key is a hash of its resolved
//! parameters, which makes re-submission idempotent and extension additive.

mod axis;
mod error;
mod parse;

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

pub use axis::{Axis, Value};
use error::Lines;
pub use error::SweepError;
pub use parse::SweepFile;

use crate::params::{Dataset, JobParams, MIN_IMAGES_PER_CLASS, Projection, Split};

/// Default bound on the number of cells a sweep may expand to; guards against typos.
pub const DEFAULT_MAX_CELLS: u64 = 10_000;

/// Most grid cells expanded just to count what exclusions leave when the grid is over the limit:
/// past this, it is a typo, refused at once.
const MAX_ENUMERATED: u128 = 1_000_000;

/// A parsed and expanded sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub name: String,
    pub description: Option<String>,
    pub priority: i64,
    pub max_attempts: u32,
    /// Distinct cells in expansion order.
    pub cells: Vec<JobParams>,
}

/// Parses and expands sweep text. `file` names the source in errors; `max_cells` is the limit
/// unless the file sets its own `max_cells`. The limit counts every cell: the grid's after
/// exclusions plus the includes, after removing duplicates.
pub fn parse_sweep(text: &str, file: &str, max_cells: u64) -> Result<Sweep, SweepError> {
    let spec = parse::parse_file(text, file)?;
    let lines = Lines { text, file };
    let limit = spec.max_cells.unwrap_or(max_cells);
    let planned = grid_size(&spec.grid);
    // Without exclusions the grid's size is known before expanding it; with them, expanding is
    // the only way to count, bounded here so a typo cannot make us enumerate forever.
    if planned > u128::from(limit) && (spec.exclude.is_empty() || planned > MAX_ENUMERATED) {
        return Err(lines.err(
            Some(spec.places.grid),
            Some("grid"),
            format!(
                "the grid expands to {planned} cells, more than the limit of {limit}; \
                 raise `max_cells` if this is intended"
            ),
        ));
    }
    let mut cells = Vec::new();
    let mut seen = HashSet::new();
    let mut assign = Vec::with_capacity(Axis::ALL.len());
    expand(&spec, 0, &mut assign, &mut |cell| {
        if !spec.exclude.iter().any(|rule| matches(rule, &cell)) && seen.insert(cell.key()) {
            cells.push(cell);
        }
    });
    if cells.len() as u64 > limit {
        return Err(lines.err(
            Some(spec.places.grid),
            Some("grid"),
            format!(
                "the grid expands to {} cells after exclusions, more than the limit of {limit}; \
                 raise `max_cells` if this is intended",
                cells.len()
            ),
        ));
    }
    let from_grid = cells.len();
    for (i, inc) in spec.include.iter().enumerate() {
        // An axis neither the include nor the grid names (only `split`) resolves in `build`.
        let full: Vec<(Axis, Value)> = Axis::ALL
            .iter()
            .filter_map(|a| {
                Some((
                    *a,
                    inc.get(a)
                        .or_else(|| spec.grid.get(a).map(|vs| &vs[0]))?
                        .clone(),
                ))
            })
            .collect();
        let cell = build(&full, &spec);
        if seen.insert(cell.key()) {
            cells.push(cell);
        }
        if cells.len() as u64 > limit {
            return Err(lines.err(
                spec.places.include.get(i).copied(),
                Some(&format!("include[{i}]")),
                format!(
                    "this include makes {} cells ({from_grid} from the grid, {} from includes), \
                     more than the limit of {limit}; raise `max_cells` if this is intended",
                    cells.len(),
                    cells.len() - from_grid
                ),
            ));
        }
    }
    if cells.is_empty() {
        return Err(SweepError {
            file: file.to_owned(),
            line: None,
            key: Some("exclude".into()),
            message: "every cell of the grid is excluded; nothing to run".into(),
        });
    }
    check_sampling(&spec, &cells, &lines)?;
    Ok(Sweep {
        name: spec.name,
        description: spec.description,
        priority: spec.priority,
        max_attempts: spec.max_attempts,
        cells,
    })
}

/// Refuses cells that cannot train: a pair or triplet loss on a built-in dataset whose
/// `train_limit` leaves a class with fewer than two images has no positive pair to draw.
/// Training takes the limit class-stratified (round-robin over the classes), so every class
/// keeps at least two images exactly when the limit is at least twice the number of classes.
/// Folder datasets are checked by the worker, which is where their classes are known.
fn check_sampling(
    spec: &SweepFile,
    cells: &[JobParams],
    lines: &Lines<'_>,
) -> Result<(), SweepError> {
    let Some(limit) = spec.train_limit else {
        return Ok(());
    };
    for cell in cells.iter().filter(|c| c.loss.needs_positive_pairs()) {
        let Some(classes) = cell.dataset.builtin_classes() else {
            continue;
        };
        let needed = classes * MIN_IMAGES_PER_CLASS;
        if limit < needed {
            return Err(lines.err(
                spec.places.train_limit,
                Some("fixed.train_limit"),
                format!(
                    "{limit} training images leave a class of {} (of {classes}) with fewer than \
                     {MIN_IMAGES_PER_CLASS} images, so loss `{}` has no positive pair to sample; \
                     use at least {needed}",
                    cell.dataset, cell.loss
                ),
            ));
        }
    }
    Ok(())
}

/// Reads and expands a sweep file.
pub fn load_sweep(path: &Path, max_cells: u64) -> Result<(Sweep, String), SweepError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SweepError {
        file: file.clone(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    let mut sweep = parse_sweep(&text, &file, max_cells)?;
    // `folder:` paths are relative to the sweep file, so a sweep means the same from any cwd,
    // and canonical, so `x.toml`, `./x.toml` and a symlinked path name one folder by one key.
    // A bare file name has an empty parent: that is the current directory.
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let base = canonical(base);
    for cell in &mut sweep.cells {
        if let Dataset::Folder(p) = &mut cell.dataset {
            *p = canonical(&base.join(&*p));
        }
    }
    // Two spellings of one folder in the same file are now one cell.
    let mut seen = HashSet::new();
    sweep.cells.retain(|c| seen.insert(c.key()));
    Ok((sweep, text))
}

/// The canonical form of `path` (absolute, symlinks resolved) when it exists here; otherwise
/// (a folder that only the workers have) absolute with `.` and `..` removed.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
    })
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether an axis is meaningful for the loss of the cell being built.
fn applies(axis: Axis, loss: Option<&Value>) -> bool {
    match (axis, loss) {
        (Axis::Margin, Some(Value::Loss(l))) => l.uses_margin(),
        (Axis::Mining, Some(Value::Loss(l))) => l.uses_mining(),
        _ => true,
    }
}

/// Cells before include/exclude, counting an axis that does not apply to a loss once.
fn grid_size(grid: &BTreeMap<Axis, Vec<Value>>) -> u128 {
    let per_loss: u128 = grid[&Axis::Loss]
        .iter()
        .map(|loss| {
            Axis::ALL
                .iter()
                .filter(|a| **a != Axis::Loss)
                .map(|a| match grid.get(a) {
                    Some(values) if applies(*a, Some(loss)) => values.len() as u128,
                    _ => 1,
                })
                .product::<u128>()
        })
        .sum();
    per_loss
}

fn expand(
    spec: &SweepFile,
    depth: usize,
    assign: &mut Vec<(Axis, Value)>,
    emit: &mut dyn FnMut(JobParams),
) {
    let Some(&axis) = Axis::ALL.get(depth) else {
        emit(build(assign, spec));
        return;
    };
    let loss = assign
        .iter()
        .find(|(a, _)| *a == Axis::Loss)
        .map(|(_, v)| v);
    let Some(values) = spec.grid.get(&axis) else {
        // Left out and without a fixed default (`split`): `build` resolves it per cell.
        expand(spec, depth + 1, assign, emit);
        return;
    };
    let values = if applies(axis, loss) {
        &values[..]
    } else {
        &values[..1]
    };
    for v in values {
        assign.push((axis, v.clone()));
        expand(spec, depth + 1, assign, emit);
        assign.pop();
    }
}

/// Resolves an assignment of the axes into job parameters, dropping inapplicable axes. An
/// unassigned `split` is the dataset's default ([`Split::default_for`]); `projection` only
/// applies above two dimensions (a 2-D embedding is drawn as is), so it is `pca` there and a
/// `projection` axis does not multiply 2-D cells.
fn build(assign: &[(Axis, Value)], spec: &SweepFile) -> JobParams {
    let mut p = JobParams {
        train_limit: spec.train_limit,
        eval_every: spec.eval_every,
        val_fraction: spec.val_fraction,
        ..JobParams::default()
    };
    let mut split = None;
    for (axis, value) in assign {
        match (axis, value) {
            (Axis::Network, Value::Network(n)) => p.network = *n,
            (Axis::Loss, Value::Loss(l)) => p.loss = *l,
            (Axis::Dataset, Value::Dataset(d)) => p.dataset = d.clone(),
            (Axis::Margin, Value::Float(m)) => p.margin = Some(*m),
            (Axis::Lr, Value::Float(x)) => p.lr = *x,
            (Axis::EmbeddingDim, Value::Int(x)) => p.embedding_dim = *x as u32,
            (Axis::BatchSize, Value::Int(x)) => p.batch_size = *x as u32,
            (Axis::Epochs, Value::Int(x)) => p.epochs = *x as u32,
            (Axis::Optimizer, Value::Optimizer(o)) => p.optimizer = *o,
            (Axis::Mining, Value::Mining(m)) => p.mining = Some(*m),
            (Axis::Seed, Value::Int(x)) => p.seed = *x,
            (Axis::Split, Value::Split(s)) => split = Some(*s),
            (Axis::Normalize, Value::Bool(b)) => p.normalize = *b,
            (Axis::Projection, Value::Projection(x)) => p.projection = *x,
            _ => unreachable!("axis {axis} holds a value of another axis"),
        }
    }
    if !p.loss.uses_margin() {
        p.margin = None;
    }
    if !p.loss.uses_mining() {
        p.mining = None;
    }
    p.split = split.unwrap_or_else(|| Split::default_for(&p.dataset));
    if p.embedding_dim <= 2 {
        p.projection = Projection::Pca;
    }
    p
}

/// Value of an axis in a resolved cell (`None` when the axis does not apply).
pub(crate) fn cell_value(cell: &JobParams, axis: Axis) -> Option<Value> {
    Some(match axis {
        Axis::Network => Value::Network(cell.network),
        Axis::Loss => Value::Loss(cell.loss),
        Axis::Dataset => Value::Dataset(cell.dataset.clone()),
        Axis::Margin => Value::Float(cell.margin?),
        Axis::Lr => Value::Float(cell.lr),
        Axis::EmbeddingDim => Value::Int(u64::from(cell.embedding_dim)),
        Axis::BatchSize => Value::Int(u64::from(cell.batch_size)),
        Axis::Epochs => Value::Int(u64::from(cell.epochs)),
        Axis::Optimizer => Value::Optimizer(cell.optimizer),
        Axis::Mining => Value::Mining(cell.mining?),
        Axis::Seed => Value::Int(cell.seed),
        Axis::Split => Value::Split(cell.split),
        Axis::Normalize => Value::Bool(cell.normalize),
        Axis::Projection => Value::Projection(cell.projection),
    })
}

fn matches(rule: &BTreeMap<Axis, Vec<Value>>, cell: &JobParams) -> bool {
    rule.iter()
        .all(|(axis, allowed)| cell_value(cell, *axis).is_some_and(|v| allowed.contains(&v)))
}

#[cfg(test)]
mod tests;

//! The axes of a sweep grid and the typed, validated values they take.

use std::fmt;
use std::str::FromStr;

use toml::Spanned;
use toml::de::DeValue;

use crate::params::{
    Dataset, JobParams, Loss, Mining, Network, Optimizer, Projection, Split, UnknownName,
};

/// One dimension of a sweep grid, in expansion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Axis {
    Network,
    Loss,
    Dataset,
    Margin,
    Lr,
    EmbeddingDim,
    BatchSize,
    Epochs,
    Optimizer,
    Mining,
    Seed,
    /// Absent from a sweep, it resolves per cell to [`Split::default_for`] its dataset.
    Split,
    Normalize,
    Projection,
}

impl Axis {
    pub const ALL: [Axis; 14] = [
        Axis::Network,
        Axis::Loss,
        Axis::Dataset,
        Axis::Margin,
        Axis::Lr,
        Axis::EmbeddingDim,
        Axis::BatchSize,
        Axis::Epochs,
        Axis::Optimizer,
        Axis::Mining,
        Axis::Seed,
        Axis::Split,
        Axis::Normalize,
        Axis::Projection,
    ];

    /// Axes every sweep must give.
    pub(crate) const REQUIRED: [Axis; 5] = [
        Axis::Network,
        Axis::Loss,
        Axis::Dataset,
        Axis::Margin,
        Axis::Lr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Axis::Network => "network",
            Axis::Loss => "loss",
            Axis::Dataset => "dataset",
            Axis::Margin => "margin",
            Axis::Lr => "lr",
            Axis::EmbeddingDim => "embedding_dim",
            Axis::BatchSize => "batch_size",
            Axis::Epochs => "epochs",
            Axis::Optimizer => "optimizer",
            Axis::Mining => "mining",
            Axis::Seed => "seed",
            Axis::Split => "split",
            Axis::Normalize => "normalize",
            Axis::Projection => "projection",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Axis> {
        Axis::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Value of an optional axis that a sweep leaves out. `None` for a required axis, and for
    /// `split`, whose default depends on each cell's dataset ([`Split::default_for`]).
    pub fn default_value(self) -> Option<Value> {
        let d = JobParams::default();
        Some(match self {
            Axis::EmbeddingDim => Value::Int(u64::from(d.embedding_dim)),
            Axis::BatchSize => Value::Int(u64::from(d.batch_size)),
            Axis::Epochs => Value::Int(u64::from(d.epochs)),
            Axis::Optimizer => Value::Optimizer(d.optimizer),
            Axis::Mining => Value::Mining(Mining::Random),
            Axis::Seed => Value::Int(d.seed),
            Axis::Normalize => Value::Bool(d.normalize),
            Axis::Projection => Value::Projection(d.projection),
            _ => return None,
        })
    }

    /// Parses and validates one scalar of this axis. The error is the message only.
    pub(crate) fn parse(self, v: &Spanned<DeValue<'_>>) -> Result<Value, String> {
        let v = v.get_ref();
        match self {
            Axis::Network => named(v, "network", Value::Network),
            Axis::Loss => named(v, "loss", Value::Loss),
            Axis::Dataset => named(v, "dataset", Value::Dataset),
            Axis::Optimizer => named(v, "optimizer", Value::Optimizer),
            Axis::Mining => named(v, "mining", Value::Mining),
            Axis::Split => named(v, "split", Value::Split),
            Axis::Projection => named(v, "projection", Value::Projection),
            Axis::Normalize => match v {
                DeValue::Boolean(b) => Ok(Value::Bool(*b)),
                other => Err(format!(
                    "expected true or false, found {}",
                    type_name(other)
                )),
            },
            Axis::Margin => positive_float(v, "margin").map(Value::Float),
            Axis::Lr => positive_float(v, "lr").map(Value::Float),
            Axis::EmbeddingDim => int_in(v, 1, 4096).map(Value::Int),
            Axis::BatchSize => int_in(v, 2, 65_536).map(Value::Int),
            Axis::Epochs => int_in(v, 1, 100_000).map(Value::Int),
            Axis::Seed => int_in(v, 0, i64::MAX as u64).map(Value::Int),
        }
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated value of some axis.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Network(Network),
    Loss(Loss),
    Dataset(Dataset),
    Optimizer(Optimizer),
    Mining(Mining),
    Split(Split),
    Projection(Projection),
    Bool(bool),
    Float(f64),
    Int(u64),
}

pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    v.type_str()
}

fn named<T: FromStr<Err = UnknownName>>(
    v: &DeValue<'_>,
    what: &str,
    wrap: fn(T) -> Value,
) -> Result<Value, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("expected a {what} name (a string), found {}", type_name(v)))?;
    s.parse::<T>().map(wrap).map_err(|e| e.to_string())
}

fn positive_float(v: &DeValue<'_>, what: &str) -> Result<f64, String> {
    let x = match v {
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .map_err(|_| format!("`{}` is not a number", f.as_str()))?,
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map_err(|_| format!("`{}` is out of range", i.as_str()))?
            as f64,
        other => return Err(format!("expected a number, found {}", type_name(other))),
    };
    if !x.is_finite() || x <= 0.0 {
        return Err(format!("{what} must be a finite number > 0, got {x}"));
    }
    Ok(x)
}

fn int_in(v: &DeValue<'_>, min: u64, max: u64) -> Result<u64, String> {
    let DeValue::Integer(i) = v else {
        return Err(format!("expected an integer, found {}", type_name(v)));
    };
    let x = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
        .map_err(|_| format!("`{}` is out of range", i.as_str()))?;
    if x < min as i64 || (x as u64) > max {
        return Err(format!("must be between {min} and {max}, got {x}"));
    }
    Ok(x as u64)
}

//! Resolved parameters of one job (one cell of a sweep grid) and their stable key.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Error for a name that is not one of the accepted values of an axis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {axis} `{value}`; expected one of: {expected}")]
pub struct UnknownName {
    pub axis: &'static str,
    pub value: String,
    pub expected: &'static str,
}

named_enum!(
    /// Network architecture.
    Network, "network" {
    EmbeddingNet => "embedding-net",
    KochSiamese => "koch-siamese",
    LenetHadsell => "lenet-hadsell",
});

named_enum!(
    /// Training loss. Label conventions are documented in `worker::train::loss`.
    Loss, "loss" {
    Ce => "ce",
    Bce => "bce",
    Contrastive => "contrastive",
    Triplet => "triplet",
});

named_enum!(
    /// Optimiser.
    Optimizer, "optimizer" {
    Adam => "adam",
    Sgd => "sgd",
});

named_enum!(
    /// Triplet mining strategy.
    Mining, "mining" {
    Random => "random",
    BatchAll => "batch-all",
    BatchHard => "batch-hard",
    SemiHard => "semi-hard",
});

named_enum!(
    /// How classes are divided between training and evaluation (README, "Evaluation protocol").
    #[derive(Default)]
    Split, "split" {
    /// Every class trains; evaluation uses held-out images of the same classes.
    #[default]
    Samples => "samples",
    /// The first half of the classes (by label, or folder name in natural order) trains; the
    /// second half is only ever evaluated.
    Classes => "classes",
});

named_enum!(
    /// How snapshots of embeddings with more than two dimensions are drawn in 2-D.
    #[derive(Default)]
    Projection, "projection" {
    #[default]
    Pca => "pca",
    /// Barnes-Hut t-SNE on the snapshot subset, with a fixed seed.
    Tsne => "tsne",
});

impl Split {
    /// The split a dataset uses when a sweep or `worker train` names none: built-in datasets
    /// keep `samples` (their classic benchmarks), folder datasets (faces) evaluate on unseen
    /// classes as Koch et al. do.
    pub fn default_for(dataset: &Dataset) -> Split {
        match dataset {
            Dataset::Mnist | Dataset::FashionMnist => Split::Samples,
            Dataset::Folder(_) => Split::Classes,
        }
    }
}

/// Fraction of the training data held out for validation when a sweep names none.
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

impl Loss {
    /// Whether the `margin` axis applies to this loss.
    pub fn uses_margin(self) -> bool {
        matches!(self, Loss::Contrastive | Loss::Triplet)
    }
    /// Whether the `mining` axis applies to this loss.
    pub fn uses_mining(self) -> bool {
        matches!(self, Loss::Triplet)
    }
    /// Whether training draws positive pairs (two images of one class): every class then needs
    /// at least [`MIN_IMAGES_PER_CLASS`] training images.
    pub(crate) fn needs_positive_pairs(self) -> bool {
        matches!(self, Loss::Bce | Loss::Contrastive | Loss::Triplet)
    }
}

/// Fewest training images per class a pair or triplet loss can sample a positive pair from.
pub(crate) const MIN_IMAGES_PER_CLASS: u64 = 2;

/// A dataset: one of the built-in IDX datasets or a folder with one sub-folder per class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Dataset {
    Mnist,
    FashionMnist,
    /// `folder:<path>`
    Folder(PathBuf),
}

impl Dataset {
    /// Classes of a built-in dataset (both have ten); `None` for a folder, whose classes are
    /// only known where it is read.
    pub(crate) fn builtin_classes(&self) -> Option<u64> {
        match self {
            Dataset::Mnist | Dataset::FashionMnist => Some(10),
            Dataset::Folder(_) => None,
        }
    }

    /// Short name used in tables and legends.
    pub fn label(&self) -> String {
        match self {
            Dataset::Mnist => "mnist".into(),
            Dataset::FashionMnist => "fashion-mnist".into(),
            Dataset::Folder(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dataset::Mnist => f.write_str("mnist"),
            Dataset::FashionMnist => f.write_str("fashion-mnist"),
            Dataset::Folder(p) => write!(f, "folder:{}", p.display()),
        }
    }
}

impl FromStr for Dataset {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "mnist" => Ok(Dataset::Mnist),
            "fashion-mnist" => Ok(Dataset::FashionMnist),
            _ => match s.strip_prefix("folder:") {
                Some(path) if !path.trim().is_empty() => Ok(Dataset::Folder(PathBuf::from(path))),
                _ => Err(UnknownName {
                    axis: "dataset",
                    value: s.to_owned(),
                    expected: "mnist fashion-mnist folder:<path>",
                }),
            },
        }
    }
}
impl TryFrom<String> for Dataset {
    type Error = UnknownName;
    fn try_from(s: String) -> Result<Self, UnknownName> {
        s.parse()
    }
}
impl From<Dataset> for String {
    fn from(d: Dataset) -> String {
        d.to_string()
    }
}

/// Everything one training run needs: one resolved cell of a sweep grid.
///
/// `margin` is `Some` exactly for `contrastive` and `triplet`; `mining` exactly for `triplet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    pub network: Network,
    pub loss: Loss,
    pub dataset: Dataset,
    pub margin: Option<f64>,
    pub lr: f64,
    pub embedding_dim: u32,
    pub batch_size: u32,
    pub epochs: u32,
    pub optimizer: Optimizer,
    pub seed: u64,
    pub mining: Option<Mining>,
    /// Use at most this many training images (class-stratified); `None` = all.
    pub train_limit: Option<u64>,
    /// Evaluate every this many epochs (the last epoch is always evaluated).
    pub eval_every: u32,
    /// Which classes train and which are only evaluated. Omitted from the canonical JSON when
    /// `samples`, so cells stored before the field existed keep their keys (and their meaning).
    #[serde(default, skip_serializing_if = "is_default")]
    pub split: Split,
    /// L2-normalise embeddings (FaceNet), in training and evaluation. Omitted when false.
    #[serde(default, skip_serializing_if = "is_default")]
    pub normalize: bool,
    /// Fraction of the training data held out for validation, in the regime of the split
    /// (images of the training classes for `samples`, whole training classes for `classes`).
    /// 0 means no validation set: the value of every cell stored before the field existed,
    /// which is omitted from the canonical JSON for that reason.
    #[serde(default, skip_serializing_if = "is_default")]
    pub val_fraction: f64,
    /// 2-D projection of snapshots when `embedding_dim > 2`. Omitted when `pca`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub projection: Projection,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Default for JobParams {
    fn default() -> Self {
        JobParams {
            network: Network::EmbeddingNet,
            loss: Loss::Contrastive,
            dataset: Dataset::FashionMnist,
            margin: Some(1.0),
            lr: 1e-3,
            embedding_dim: 2,
            batch_size: 128,
            epochs: 2,
            optimizer: Optimizer::Adam,
            seed: 0,
            mining: None,
            train_limit: None,
            eval_every: 1,
            split: Split::Samples,
            normalize: false,
            val_fraction: DEFAULT_VAL_FRACTION,
            projection: Projection::Pca,
        }
    }
}

/// Stable identity of a cell: hex of the first 16 bytes of sha256 over its canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobKey(pub String);

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fields of [`JobParams`] in struct order, which is the order of its canonical JSON and the
/// column order of every table and export.
pub const PARAM_ORDER: &[&str] = &[
    "network",
    "loss",
    "dataset",
    "margin",
    "lr",
    "embedding_dim",
    "batch_size",
    "epochs",
    "optimizer",
    "seed",
    "mining",
    "train_limit",
    "eval_every",
    "split",
    "normalize",
    "val_fraction",
    "projection",
];

impl JobParams {
    /// Canonical JSON: field order is the struct order, floats in shortest round-trip form.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("JobParams serialises")
    }

    /// Every field by name, including those the canonical JSON leaves out at their defaults (so
    /// that cells stored before they existed keep their keys): what tables show and filter on,
    /// where a cell without `split` must still read as `split = samples`.
    pub fn full_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(mut map) =
            serde_json::to_value(self).expect("JobParams serialises")
        else {
            unreachable!("JobParams serialises as an object")
        };
        let omitted = [
            ("split", serde_json::json!(self.split)),
            ("normalize", serde_json::json!(self.normalize)),
            ("val_fraction", serde_json::json!(self.val_fraction)),
            ("projection", serde_json::json!(self.projection)),
        ];
        for (k, v) in omitted {
            map.entry(k).or_insert(v);
        }
        map
    }

    pub fn key(&self) -> JobKey {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        JobKey(hex::encode(&digest[..16]))
    }

    /// Short human label, e.g. `triplet m=1 lr=0.001 s=0`.
    pub fn short_label(&self) -> String {
        let mut s = format!("{} {} {}", self.network, self.loss, self.dataset.label());
        if let Some(m) = self.margin {
            s.push_str(&format!(" m={m}"));
        }
        if let Some(k) = self.mining {
            s.push_str(&format!(" {k}"));
        }
        s.push_str(&format!(
            " lr={} d={} s={}",
            self.lr, self.embedding_dim, self.seed
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn param_order_is_the_canonical_json_order() {
        // Every optional field away from its default, so that all of them are serialised.
        let p = super::JobParams {
            split: super::Split::Classes,
            normalize: true,
            projection: super::Projection::Tsne,
            ..Default::default()
        };
        let json = p.canonical_json();
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut sorted = super::PARAM_ORDER.to_vec();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "serde_json sorts keys: same set");
        let at = |k: &str| json.find(&format!("\"{k}\":")).unwrap();
        assert!(
            super::PARAM_ORDER.windows(2).all(|w| at(w[0]) < at(w[1])),
            "{json}"
        );
    }

    use super::*;

    #[test]
    fn names_round_trip() {
        for l in Loss::ALL {
            assert_eq!(l.as_str().parse::<Loss>().unwrap(), *l);
        }
        assert_eq!("semi-hard".parse::<Mining>().unwrap(), Mining::SemiHard);
        assert_eq!(
            "folder:/data/faces".parse::<Dataset>().unwrap(),
            Dataset::Folder("/data/faces".into())
        );
        let err = "cifar".parse::<Dataset>().unwrap_err();
        assert!(err.to_string().contains("cifar"), "{err}");
        assert!("folder:".parse::<Dataset>().is_err());
    }

    #[test]
    fn key_is_stable_and_sensitive() {
        let a = JobParams::default();
        // Pinned: changing JobParams' serialisation would orphan every stored cell.
        assert_eq!(a.key(), a.clone().key());
        let mut b = a.clone();
        b.seed = 1;
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key().0.len(), 32);
        let back: JobParams = serde_json::from_str(&a.canonical_json()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn full_json_names_every_field() {
        let map = JobParams::default().full_json();
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut order = PARAM_ORDER.to_vec();
        keys.sort_unstable();
        order.sort_unstable();
        assert_eq!(keys, order);
        assert_eq!(map["split"], "samples");
        assert_eq!(map["normalize"], false);
    }

    #[test]
    fn cells_stored_before_the_protocol_fields_keep_their_keys_and_meaning() {
        // The canonical JSON of a cell as stored before `split`, `normalize`, `val_fraction` and
        // `projection` existed: it must read back as the old protocol (samples split, no
        // validation set) and hash to the same key.
        let old = r#"{"network":"embedding-net","loss":"contrastive","dataset":"fashion-mnist","margin":1.0,"lr":0.001,"embedding_dim":2,"batch_size":128,"epochs":2,"optimizer":"adam","seed":0,"mining":null,"train_limit":null,"eval_every":1}"#;
        let p: JobParams = serde_json::from_str(old).unwrap();
        assert_eq!(
            (p.split, p.normalize, p.val_fraction),
            (Split::Samples, false, 0.0)
        );
        assert_eq!(p.projection, Projection::Pca);
        assert_eq!(p.canonical_json(), old);
    }
}

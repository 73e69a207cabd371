//! Expansion rules and the error of every kind of malformed sweep.

use super::*;
use crate::params::{Loss, Mining};

const BASE: &str = r#"
name = "t"
[grid]
network = "embedding-net"
loss = ["ce", "bce", "contrastive", "triplet"]
dataset = "mnist"
margin = [0.5, 1.0, 2.0]
lr = [1e-3, 1e-4]
"#;

fn parse(text: &str) -> Result<Sweep, SweepError> {
    parse_sweep(text, "t.toml", DEFAULT_MAX_CELLS)
}

#[test]
fn margin_applies_only_to_margin_losses() {
    let s = parse(BASE).unwrap();
    // ce, bce: 2 lrs each; contrastive, triplet: 3 margins x 2 lrs each.
    assert_eq!(s.cells.len(), 2 + 2 + 6 + 6);
    for c in &s.cells {
        assert_eq!(c.margin.is_some(), c.loss.uses_margin(), "{c:?}");
        assert_eq!(c.mining.is_some(), c.loss == Loss::Triplet, "{c:?}");
    }
    let keys: std::collections::HashSet<_> = s.cells.iter().map(|c| c.key()).collect();
    assert_eq!(keys.len(), s.cells.len());
}

#[test]
fn expansion_is_deterministic_and_additive() {
    let a = parse(BASE).unwrap();
    let b = parse(BASE).unwrap();
    assert_eq!(a, b);
    let wider = parse(&BASE.replace("[0.5, 1.0, 2.0]", "[0.5, 1.0, 2.0, 4.0]")).unwrap();
    let old: std::collections::HashSet<_> = a.cells.iter().map(|c| c.key()).collect();
    let new: Vec<_> = wider
        .cells
        .iter()
        .filter(|c| !old.contains(&c.key()))
        .collect();
    assert_eq!(new.len(), 4, "one new margin x 2 lrs x 2 margin losses");
    assert!(new.iter().all(|c| c.margin == Some(4.0)));
}

#[test]
fn seeds_mining_include_exclude() {
    let text = format!(
        "{BASE}seeds = 2\nmining = [\"random\", \"batch-hard\"]\n[fixed]\ntrain_limit = 500\n\
         [[exclude]]\nloss = \"triplet\"\nlr = 1e-4\n\
         [[exclude]]\nloss = [\"ce\", \"bce\"]\nlr = 1e-4\n\
         [[include]]\nloss = \"contrastive\"\nmargin = 8.0\n"
    );
    let s = parse(&text).unwrap();
    let count = |l: Loss| s.cells.iter().filter(|c| c.loss == l).count();
    assert_eq!(count(Loss::Ce), 2, "lr 1e-4 excluded, 2 seeds");
    assert_eq!(
        count(Loss::Triplet),
        3 * 2 * 2,
        "3 margins x 2 minings x 2 seeds at lr 1e-3"
    );
    assert_eq!(count(Loss::Contrastive), 3 * 2 * 2 + 1);
    assert!(s.cells.iter().all(|c| c.train_limit == Some(500)));
    assert!(s.cells.iter().any(|c| c.mining == Some(Mining::BatchHard)));
    let inc = s.cells.iter().find(|c| c.margin == Some(8.0)).unwrap();
    assert_eq!(
        (inc.lr, inc.seed),
        (1e-3, 0),
        "unnamed axes take the first grid value"
    );
}

#[test]
fn limit_is_enforced_and_overridable() {
    let big = BASE
        .replace("seeds", "x")
        .replace("lr = [1e-3, 1e-4]", "lr = [1e-3, 1e-4]\nseeds = 1000");
    let err = parse(&big).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("grid"));
    assert!(err.message.contains("16000 cells"), "{err}");
    let ok = format!("max_cells = 20000\n{big}");
    assert_eq!(parse(&ok).unwrap().cells.len(), 16_000);
}

/// Each malformed sweep: (description, text, key named, line named).
const MALFORMED: &[(&str, &str, &str, usize)] = &[
    (
        "unknown top-level key",
        "name = \"t\"\ncolour = 1\n[grid]\n",
        "colour",
        2,
    ),
    (
        "unknown axis",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nlearning_rate = [1]\n",
        "grid.learning_rate",
        4,
    ),
    (
        "wrong type",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\ndataset = \"mnist\"\nmargin = 1.0\nlr = \"fast\"\n",
        "grid.lr",
        7,
    ),
    (
        "empty axis",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = []\n",
        "grid.loss",
        4,
    ),
    (
        "lr <= 0",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\ndataset = \"mnist\"\nmargin = 1.0\nlr = [1e-3, -0.1]\n",
        "grid.lr",
        7,
    ),
    (
        "lr = 0",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\ndataset = \"mnist\"\nmargin = 1.0\nlr = 0.0\n",
        "grid.lr",
        7,
    ),
    (
        "margin <= 0",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\ndataset = \"mnist\"\n\nmargin = [0.0]\nlr = 1e-3\n",
        "grid.margin",
        7,
    ),
    (
        "unknown loss",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = [\"ce\", \"arcface\"]\n",
        "grid.loss",
        4,
    ),
    (
        "unknown network",
        "name = \"t\"\n[grid]\nnetwork = \"resnet\"\n",
        "grid.network",
        3,
    ),
    (
        "unknown dataset",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\ndataset = \"cifar10\"\n",
        "grid.dataset",
        5,
    ),
    (
        "unknown mining",
        "name = \"t\"\n[grid]\nmining = \"hardest\"\n",
        "grid.mining",
        3,
    ),
    (
        "missing required axis",
        "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\ndataset = \"mnist\"\nmargin = 1.0\n",
        "grid.lr",
        0,
    ),
    (
        "duplicate value",
        "name = \"t\"\n[grid]\nlr = [1e-3, 0.001]\n",
        "grid.lr",
        3,
    ),
    (
        "float where integer",
        "name = \"t\"\n[grid]\nepochs = 2.5\n",
        "grid.epochs",
        3,
    ),
    (
        "negative seed",
        "name = \"t\"\n[grid]\nseed = [-1]\n",
        "grid.seed",
        3,
    ),
    (
        "unknown fixed key",
        "name = \"t\"\n[fixed]\nepochs = 3\n",
        "fixed.epochs",
        3,
    ),
    (
        "include with a list",
        "name = \"t\"\n[grid]\n\n[[include]]\nloss = [\"ce\"]\n",
        "include[0].loss",
        5,
    ),
    (
        "exclude unknown axis",
        "name = \"t\"\n[[exclude]]\nlos = \"ce\"\n",
        "exclude[0].los",
        3,
    ),
    (
        "include as table",
        "name = \"t\"\n[include]\nloss = \"ce\"\n",
        "include",
        2,
    ),
    ("missing name", "[grid]\nlr = 1e-3\n", "name", 1),
];

#[test]
fn malformed_sweeps_name_key_and_line() {
    for (what, text, key, line) in MALFORMED {
        let err = parse(text).expect_err(what);
        assert_eq!(err.key.as_deref(), Some(*key), "{what}: {err}");
        if *line > 0 {
            assert_eq!(err.line, Some(*line), "{what}: {err}");
        }
        let shown = err.to_string();
        assert!(shown.starts_with("t.toml"), "{what}: {shown}");
        assert!(shown.contains(&format!("`{key}`")), "{what}: {shown}");
    }
}

#[test]
fn syntax_errors_have_a_line() {
    let err = parse("name = \"t\"\n[grid]\nlr = [1e-3,\n").unwrap_err();
    assert!(err.line.is_some(), "{err}");
    assert!(err.message.contains("invalid TOML"), "{err}");
}

#[test]
fn everything_excluded_is_an_error() {
    let err = parse(&format!("{BASE}[[exclude]]\nnetwork = \"embedding-net\"\n")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("exclude"));
}

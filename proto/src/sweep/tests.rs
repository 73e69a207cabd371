//! Expansion rules and the error of every kind of malformed sweep.

use super::*;
use crate::params::{Dataset, JobParams, Loss, Mining, Projection, Split};

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
    (
        "unknown split",
        "name = \"t\"\n[grid]\nsplit = [\"samples\", \"subjects\"]\n",
        "grid.split",
        3,
    ),
    (
        "normalize not a boolean",
        "name = \"t\"\n[grid]\nnormalize = [\"yes\"]\n",
        "grid.normalize",
        3,
    ),
    (
        "duplicate normalize",
        "name = \"t\"\n[grid]\nnormalize = [true, true]\n",
        "grid.normalize",
        3,
    ),
    (
        "unknown projection",
        "name = \"t\"\n[grid]\n\nprojection = \"umap\"\n",
        "grid.projection",
        4,
    ),
    (
        "exclude unknown split",
        "name = \"t\"\n[[exclude]]\nsplit = \"images\"\n",
        "exclude[0].split",
        3,
    ),
    (
        "val_fraction of one",
        "name = \"t\"\n[fixed]\nval_fraction = 1.0\n",
        "fixed.val_fraction",
        3,
    ),
    (
        "negative val_fraction",
        "name = \"t\"\n[fixed]\n\nval_fraction = -0.1\n",
        "fixed.val_fraction",
        4,
    ),
    (
        "val_fraction as a string",
        "name = \"t\"\n[fixed]\nval_fraction = \"10%\"\n",
        "fixed.val_fraction",
        3,
    ),
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

/// One cell of `n` seeds of a contrastive grid, then `includes` extra seeds as `[[include]]`s.
fn with_includes(n: usize, includes: usize, extra: &str) -> String {
    let mut t = format!(
        "name = \"t\"\n{extra}[grid]\nnetwork = \"embedding-net\"\nloss = \"contrastive\"\n\
         dataset = \"mnist\"\nmargin = 1.0\nlr = 1e-3\nseeds = {n}\n"
    );
    for i in 0..includes {
        t.push_str(&format!("[[include]]\nseed = {}\n", 1000 + i));
    }
    t
}

#[test]
fn includes_count_toward_the_cell_limit() {
    // The issue's case: 501 cells with a limit of 10.
    let err = parse(&with_includes(1, 500, "max_cells = 10\n")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("include[9]"), "{err}");
    // Nine lines of header, then two per include: `[[include]]` number 9 starts on line 28.
    assert_eq!(err.line, Some(10 + 2 * 9), "{err}");
    assert!(
        err.message
            .contains("11 cells (1 from the grid, 10 from includes)"),
        "{err}"
    );
    assert!(err.message.contains("limit of 10"), "{err}");
    assert!(
        err.to_string().starts_with("t.toml:28: key `include[9]`"),
        "{err}"
    );
    // The command-line limit applies the same way.
    let err = parse_sweep(&with_includes(4, 7, ""), "t.toml", 10).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("include[6]"), "{err}");
    // At the limit is fine; an include repeating a grid cell is not counted twice.
    assert_eq!(
        parse_sweep(&with_includes(4, 6, ""), "t.toml", 10)
            .unwrap()
            .cells
            .len(),
        10
    );
    let dup = format!("{}[[include]]\nseed = 0\n", with_includes(4, 6, ""));
    assert_eq!(parse_sweep(&dup, "t.toml", 10).unwrap().cells.len(), 10);
}

#[test]
fn the_limit_counts_cells_left_after_exclusions() {
    // 20 grid cells, 15 excluded: 5 remain, within a limit of 10.
    let text = format!(
        "{}[[exclude]]\nseed = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]\n",
        with_includes(20, 0, "max_cells = 10\n")
    );
    assert_eq!(parse(&text).unwrap().cells.len(), 5);
    let text = format!(
        "{}[[exclude]]\nseed = [15, 16, 17, 18, 19]\n",
        with_includes(20, 0, "max_cells = 10\n")
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("grid"), "{err}");
    assert!(err.message.contains("15 cells after exclusions"), "{err}");
}

#[test]
fn impossible_sampling_is_refused_with_file_and_line() {
    let sweep = |loss: &str, limit: u64| {
        format!(
            "name = \"t\"\n[grid]\nnetwork = \"embedding-net\"\nloss = {loss}\ndataset = \"mnist\"\n\
             margin = 1.0\nlr = 1e-3\n[fixed]\ntrain_limit = {limit}\n"
        )
    };
    for loss in [
        "\"bce\"",
        "\"contrastive\"",
        "\"triplet\"",
        "[\"ce\", \"triplet\"]",
    ] {
        let err = parse(&sweep(loss, 19)).expect_err(loss);
        assert_eq!(err.key.as_deref(), Some("fixed.train_limit"), "{err}");
        assert_eq!(err.line, Some(9), "{err}");
        assert!(err.message.contains("no positive pair"), "{err}");
        assert!(err.message.contains("at least 20"), "{err}");
        assert!(
            err.to_string()
                .starts_with("t.toml:9: key `fixed.train_limit`: 19 training images"),
            "{err}"
        );
        assert!(!parse(&sweep(loss, 20)).unwrap().cells.is_empty());
    }
    // Cross-entropy samples no pairs: a tiny limit is allowed.
    assert!(parse(&sweep("\"ce\"", 5)).is_ok());
    // A pair loss that only an include brings in is checked too.
    let inc = format!(
        "{}[[include]]\nloss = \"contrastive\"\n",
        sweep("\"ce\"", 12)
    );
    let err = parse(&inc).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("fixed.train_limit"), "{err}");
    // A folder's classes are unknown here; the worker checks those.
    let folder = sweep("\"triplet\"", 3).replace("\"mnist\"", "\"folder:/data/faces\"");
    assert!(parse(&folder).is_ok());
}

#[test]
fn job_keys_of_builtin_cells_are_pinned() {
    // Stored jobs are found again by these keys on re-submission: if this fails, every existing
    // sweep would run again as new cells. They changed once, on purpose, when cells gained a
    // validation set (`val_fraction`, 0.1 unless a sweep says otherwise): a cell that selects on
    // validation is a different experiment from one stored before, which had none. Those old
    // cells still read back with their old keys (`params::tests`).
    let s = parse_sweep(
        include_str!("../../../sweeps/quickstart.toml"),
        "quickstart.toml",
        DEFAULT_MAX_CELLS,
    )
    .unwrap();
    let keys: Vec<String> = s.cells.iter().map(|c| c.key().0).collect();
    assert_eq!(keys, GOLDEN_QUICKSTART_KEYS);
    assert_eq!(
        crate::params::JobParams::default().key().0,
        GOLDEN_DEFAULT_KEY
    );
}

const GOLDEN_QUICKSTART_KEYS: [&str; 4] = [
    "efbd8f66ea7c3ec663aa94be33db4e70",
    "7ecd4c313aa553b67718a4f6e6d54427",
    "dcbf42a9eeb898f42bd77ee88e8e3f4a",
    "d62a999874ab6b02e38b7a49498d2b40",
];
const GOLDEN_DEFAULT_KEY: &str = "c2c1814fc4b103f76083804a6338a3c1";

#[test]
fn folder_paths_are_canonical_whatever_the_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("sweeps")).unwrap();
    std::fs::create_dir_all(root.join("data/faces/s1")).unwrap();
    std::os::unix::fs::symlink(root.join("sweeps"), root.join("link")).unwrap();
    let text = "name = \"f\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\n\
                dataset = [\"folder:../data/faces\", \"folder:../sweeps/../data/./faces/\"]\nmargin = 1.0\nlr = 1e-3\n";
    std::fs::write(root.join("sweeps/f.toml"), text).unwrap();
    let want = std::fs::canonicalize(root.join("data/faces")).unwrap();
    let mut keys = Vec::new();
    for spelling in [
        "sweeps/f.toml",
        "sweeps/./f.toml",
        "link/f.toml",
        "link/../sweeps/f.toml",
    ] {
        let (s, _) = load_sweep(&root.join(spelling), DEFAULT_MAX_CELLS).unwrap();
        assert_eq!(
            s.cells.len(),
            1,
            "{spelling}: two spellings of one folder are one cell"
        );
        assert_eq!(
            s.cells[0].dataset,
            Dataset::Folder(want.clone()),
            "{spelling}"
        );
        keys.push(s.cells[0].key());
    }
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    // A folder that does not exist here (only the workers have it) still gets one absolute form.
    let text = text.replace("faces", "elsewhere");
    std::fs::write(root.join("sweeps/g.toml"), text).unwrap();
    let (s, _) = load_sweep(&root.join("sweeps/./g.toml"), DEFAULT_MAX_CELLS).unwrap();
    let Dataset::Folder(p) = &s.cells[0].dataset else {
        panic!("a folder dataset")
    };
    assert!(p.is_absolute() && p.ends_with("data/elsewhere"), "{p:?}");
}

const PROTOCOL: &str = r#"
name = "p"
[grid]
network = "embedding-net"
loss = "contrastive"
dataset = ["mnist", "folder:/data/faces"]
margin = 1.0
lr = 1e-3
embedding_dim = [2, 32]
"#;

#[test]
fn an_absent_split_is_each_datasets_default() {
    let s = parse(PROTOCOL).unwrap();
    assert_eq!(s.cells.len(), 4);
    for c in &s.cells {
        assert_eq!(c.split, Split::default_for(&c.dataset), "{c:?}");
        assert_eq!((c.normalize, c.projection), (false, Projection::Pca));
        assert_eq!(c.val_fraction, crate::params::DEFAULT_VAL_FRACTION);
    }
    let folder = s
        .cells
        .iter()
        .find(|c| matches!(c.dataset, Dataset::Folder(_)))
        .unwrap();
    assert_eq!(folder.split, Split::Classes);
    // The default is resolved before exclusion, so a rule on `split` sees it.
    let text = format!("{PROTOCOL}[[exclude]]\nsplit = \"classes\"\n");
    let s = parse(&text).unwrap();
    assert_eq!(s.cells.len(), 2);
    assert!(s.cells.iter().all(|c| c.dataset == Dataset::Mnist));
    // An include that names no split gets its dataset's default too.
    let text = format!("{PROTOCOL}[[include]]\ndataset = \"folder:/data/other\"\nlr = 0.5\n");
    let s = parse(&text).unwrap();
    let inc = s.cells.iter().find(|c| c.lr == 0.5).unwrap();
    assert_eq!(inc.split, Split::Classes);
}

#[test]
fn protocol_axes_expand_and_filter() {
    let text = PROTOCOL.replace(
        "embedding_dim = [2, 32]",
        "embedding_dim = [2, 32]\nsplit = [\"samples\", \"classes\"]\nnormalize = [false, true]\n\
         projection = [\"pca\", \"tsne\"]\n[fixed]\nval_fraction = 0.25\n",
    );
    let s = parse(&text).unwrap();
    // 2 datasets x 2 splits x 2 normalize x (dim 2: pca only + dim 32: pca, tsne).
    assert_eq!(s.cells.len(), 2 * 2 * 2 * 3);
    assert!(s.cells.iter().all(|c| c.val_fraction == 0.25));
    assert!(
        s.cells
            .iter()
            .all(|c| c.embedding_dim > 2 || c.projection == Projection::Pca),
        "a 2-D embedding is never projected"
    );
    let count = |f: &dyn Fn(&JobParams) -> bool| s.cells.iter().filter(|c| f(c)).count();
    assert_eq!(count(&|c| c.split == Split::Classes), 12);
    assert_eq!(count(&|c| c.normalize), 12);
    assert_eq!(count(&|c| c.projection == Projection::Tsne), 8);
    // The split is explicit here, so a folder dataset also runs under `samples`.
    assert_eq!(
        count(&|c| matches!(c.dataset, Dataset::Folder(_)) && c.split == Split::Samples),
        6
    );

    let excluded = format!(
        "{text}[[exclude]]\nnormalize = true\nsplit = \"samples\"\n\
         [[exclude]]\nprojection = \"tsne\"\ndataset = \"mnist\"\n\
         [[include]]\nnormalize = true\nsplit = \"samples\"\nembedding_dim = 64\nprojection = \"tsne\"\n"
    );
    let s = parse(&excluded).unwrap();
    assert_eq!(s.cells.len(), 24 - 6 - 3 + 1);
    let inc = s.cells.last().unwrap();
    assert_eq!(
        (inc.embedding_dim, inc.normalize, inc.split, inc.projection),
        (64, true, Split::Samples, Projection::Tsne)
    );
    // A cell's axis values read back for include/exclude matching.
    assert_eq!(cell_value(inc, Axis::Normalize), Some(Value::Bool(true)));
    assert_eq!(
        cell_value(inc, Axis::Projection),
        Some(Value::Projection(Projection::Tsne))
    );
    assert_eq!(
        cell_value(inc, Axis::Split),
        Some(Value::Split(Split::Samples))
    );
}

#[test]
fn val_fraction_zero_means_no_validation_and_keeps_old_keys() {
    let text = format!("{PROTOCOL}[fixed]\nval_fraction = 0\n");
    let s = parse(&text).unwrap();
    assert!(s.cells.iter().all(|c| c.val_fraction == 0.0));
    let mnist = s
        .cells
        .iter()
        .find(|c| c.dataset == Dataset::Mnist)
        .unwrap();
    assert!(!mnist.canonical_json().contains("val_fraction"));
}

#[test]
fn the_faces_sweep_evaluates_on_unseen_subjects() {
    let s = parse_sweep(
        include_str!("../../../sweeps/att-faces.toml"),
        "att-faces.toml",
        DEFAULT_MAX_CELLS,
    )
    .unwrap();
    assert!(
        s.cells
            .iter()
            .all(|c| c.split == Split::Classes && c.val_fraction > 0.0)
    );
}

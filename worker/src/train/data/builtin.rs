//! The built-in IDX data sets (MNIST, Fashion-MNIST): where their files are looked up,
//! where they are downloaded from, and the checksums they are verified against.
//!
//! Look-up order for each of the four files (`<name>` or `<name>` without `.gz`):
//! 1. `data_dir/<name>`, then `data_dir/<set>/<name>` (`<set>` = `mnist` | `fashion-mnist`,
//!    the layout of `../shared/datasets` beside the checkout);
//! 2. the Debian package location `/usr/share/datasets/fashion-mnist/` (Fashion-MNIST only);
//! 3. the download cache `<cache>/<set>/<name>` where `<cache>` is `data_dir` if given,
//!    else `dirs::cache_dir()/latentsweep`;
//! 4. otherwise all missing files are downloaded from the mirror into the cache.
//!
//! Checksums are sha256 of the DECOMPRESSED IDX content, so they hold for the canonical
//! `.gz` files and for any re-compressed copy (e.g. Debian's). They were computed from
//! `../shared/datasets/mnist` (whose train-images md5 6bbc9ace898e44ae57da46a324031adb
//! matches the canonical MNIST release) and from Debian's `dataset-fashion-mnist`.

use std::path::{Path, PathBuf};

use super::DataError;
use super::download::{RemoteFile, download_verified};

/// One of the built-in IDX data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Mnist,
    FashionMnist,
}

/// Paths of the four IDX files of a built-in data set.
#[derive(Debug, Clone)]
pub struct IdxFiles {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

const MNIST_FILES: [RemoteFile; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        sha256_decompressed: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256_decompressed: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256_decompressed: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256_decompressed: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

const FASHION_FILES: [RemoteFile; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        sha256_decompressed: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256_decompressed: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256_decompressed: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256_decompressed: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
];

impl Builtin {
    /// Directory name used under data and cache directories.
    pub fn dir_name(self) -> &'static str {
        match self {
            Builtin::Mnist => "mnist",
            Builtin::FashionMnist => "fashion-mnist",
        }
    }

    /// Train images, train labels, test images, test labels.
    pub fn files(self) -> &'static [RemoteFile; 4] {
        match self {
            Builtin::Mnist => &MNIST_FILES,
            Builtin::FashionMnist => &FASHION_FILES,
        }
    }

    /// Canonical public mirror.
    pub fn default_mirror(self) -> &'static str {
        match self {
            Builtin::Mnist => "https://ossci-datasets.s3.amazonaws.com/mnist/",
            Builtin::FashionMnist => "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        }
    }

    /// Environment variable that overrides the mirror's base URL.
    pub fn mirror_env(self) -> &'static str {
        match self {
            Builtin::Mnist => "LATENTSWEEP_MNIST_MIRROR",
            Builtin::FashionMnist => "LATENTSWEEP_FASHION_MNIST_MIRROR",
        }
    }

    /// Mirror to download from: the environment override, else the canonical one.
    pub fn mirror(self) -> String {
        std::env::var(self.mirror_env())
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| self.default_mirror().to_owned())
    }

    /// Directories searched before the cache (see module docs).
    fn search_dirs(self, data_dir: Option<&Path>) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(d) = data_dir {
            dirs.push(d.to_path_buf());
            dirs.push(d.join(self.dir_name()));
        }
        if self == Builtin::FashionMnist {
            dirs.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
        }
        dirs
    }

    pub fn class_names(self) -> Vec<String> {
        match self {
            Builtin::Mnist => (0..10).map(|d| d.to_string()).collect(),
            Builtin::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// The root of the download caches: `data_dir` if given, else `dirs::cache_dir()/latentsweep`
/// (the cache `worker train` uses).
pub fn cache_root(data_dir: Option<&Path>) -> Result<PathBuf, DataError> {
    match data_dir {
        Some(d) => Ok(d.to_path_buf()),
        None => Ok(dirs::cache_dir()
            .ok_or_else(|| {
                DataError::Other("no cache directory on this system; pass a data dir".into())
            })?
            .join("latentsweep")),
    }
}

/// The download cache of a built-in set.
pub fn cache_dir(set: Builtin, data_dir: Option<&Path>) -> Result<PathBuf, DataError> {
    Ok(cache_root(data_dir)?.join(set.dir_name()))
}

fn find_in(dir: &Path, name: &str) -> Option<PathBuf> {
    let gz = dir.join(name);
    if gz.is_file() {
        return Some(gz);
    }
    let raw = dir.join(name.trim_end_matches(".gz"));
    raw.is_file().then_some(raw)
}

/// Locates (downloading if needed) the four files of `set`; `mirror` overrides the base URL.
pub fn locate(
    set: Builtin,
    data_dir: Option<&Path>,
    mirror: Option<&str>,
) -> Result<IdxFiles, DataError> {
    let cache = cache_dir(set, data_dir)?;
    let mut dirs = set.search_dirs(data_dir);
    dirs.push(cache.clone());
    let mut found: Vec<PathBuf> = Vec::with_capacity(4);
    for file in set.files() {
        let local = dirs.iter().find_map(|d| find_in(d, file.name));
        let path = match local {
            Some(p) => p,
            None => {
                let base = mirror.map(str::to_owned).unwrap_or_else(|| set.mirror());
                download_verified(&base, file, &cache)?
            }
        };
        found.push(path);
    }
    let mut it = found.into_iter();
    let mut next = || it.next().expect("four files");
    Ok(IdxFiles {
        train_images: next(),
        train_labels: next(),
        test_images: next(),
        test_labels: next(),
    })
}

//! Data sets for training: loading (IDX / image folders), class-stratified limiting and
//! per-data-set normalisation into one contiguous f32 buffer that batches gather from.

pub mod att_faces;
pub mod builtin;
pub mod download;
pub mod folder;
pub mod idx;
pub mod split;

use std::path::{Path, PathBuf};

use proto::Dataset;

pub use builtin::Builtin;

/// Errors while locating, downloading or decoding a data set. Each names the file or URL.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "checksum mismatch for {url}: expected sha256 {expected} of the decompressed content, got {actual}"
    )]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error(
        "checksum mismatch for {url}: expected tree digest {expected} of the unpacked images, got {actual}"
    )]
    TreeChecksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Other(String),
}

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        DataError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Grey 8-bit images of one split, row-major `[N, H, W]`, with their class labels.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Keeps only the images at `indices` (in that order).
    pub fn subset(&self, indices: &[usize], pixels_per_image: usize) -> ImageSet {
        let mut out = ImageSet {
            pixels: Vec::with_capacity(indices.len() * pixels_per_image),
            labels: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            out.pixels
                .extend_from_slice(&self.pixels[i * pixels_per_image..(i + 1) * pixels_per_image]);
            out.labels.push(self.labels[i]);
        }
        out
    }
}

/// A loaded data set: both splits at a common image size.
#[derive(Debug, Clone)]
pub struct LoadedDataset {
    pub h: usize,
    pub w: usize,
    pub class_names: Vec<String>,
    pub train: ImageSet,
    pub test: ImageSet,
}

/// Test split as the dashboard's retrieval view needs it.
#[derive(Debug, Clone)]
pub struct TestImages {
    /// One `H*W` grey image per test example, in test-split order.
    pub images: Vec<Vec<u8>>,
    pub h: usize,
    pub w: usize,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

/// Loads a data set (downloading built-in ones if needed, see [`builtin`]).
pub fn load(dataset: &Dataset, data_dir: Option<&Path>) -> Result<LoadedDataset, DataError> {
    load_with_mirror(dataset, data_dir, None)
}

/// [`load`] with an explicit mirror base URL for built-in data sets.
pub fn load_with_mirror(
    dataset: &Dataset,
    data_dir: Option<&Path>,
    mirror: Option<&str>,
) -> Result<LoadedDataset, DataError> {
    let set = match dataset {
        Dataset::Mnist => Builtin::Mnist,
        Dataset::FashionMnist => Builtin::FashionMnist,
        Dataset::Folder(p) => return folder::load_folder(p),
    };
    let files = builtin::locate(set, data_dir, mirror)?;
    let (train, h, w) = read_split(&files.train_images, &files.train_labels)?;
    let (test, th, tw) = read_split(&files.test_images, &files.test_labels)?;
    if (h, w) != (th, tw) {
        return Err(DataError::corrupt(
            &files.test_images,
            format!("test images are {th}x{tw} but training images are {h}x{w}"),
        ));
    }
    let class_names = set.class_names();
    for (labels, path) in [
        (&train.labels, &files.train_labels),
        (&test.labels, &files.test_labels),
    ] {
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= class_names.len()) {
            return Err(DataError::corrupt(
                path,
                format!("label {bad} is out of range"),
            ));
        }
    }
    Ok(LoadedDataset {
        h,
        w,
        class_names,
        train,
        test,
    })
}

fn read_split(images: &Path, labels: &Path) -> Result<(ImageSet, usize, usize), DataError> {
    let im = idx::read_idx(images)?;
    let lb = idx::read_idx(labels)?;
    idx::check_pair(&im, &lb, images, labels)?;
    let (h, w) = (im.dims[1], im.dims[2]);
    let set = ImageSet {
        pixels: im.data,
        labels: lb.data.into_iter().map(u32::from).collect(),
    };
    Ok((set, h, w))
}

/// Loads only what the dashboard needs to show test images by index.
pub fn load_test_images(
    dataset: &Dataset,
    data_dir: Option<&Path>,
) -> Result<TestImages, DataError> {
    let ds = load(dataset, data_dir)?;
    let px = ds.h * ds.w;
    Ok(TestImages {
        images: ds
            .test
            .pixels
            .chunks_exact(px)
            .map(<[u8]>::to_vec)
            .collect(),
        h: ds.h,
        w: ds.w,
        labels: ds.test.labels,
        class_names: ds.class_names,
    })
}

/// Indices of at most `limit` examples, class-stratified: classes are visited round-robin,
/// each contributing its examples in data-set order. The result is sorted ascending.
pub fn stratified_indices(labels: &[u32], limit: usize) -> Vec<usize> {
    if limit >= labels.len() {
        return (0..labels.len()).collect();
    }
    let n_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &l) in labels.iter().enumerate() {
        per_class[l as usize].push(i);
    }
    let mut out = Vec::with_capacity(limit);
    let mut round = 0;
    while out.len() < limit {
        for class in &per_class {
            if let Some(&i) = class.get(round) {
                out.push(i);
                if out.len() == limit {
                    break;
                }
            }
        }
        round += 1;
    }
    out.sort_unstable();
    out
}

/// Mean and standard deviation of the training pixels (in [0, 1] units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalizer {
    pub mean: f32,
    pub std: f32,
}

impl Normalizer {
    pub fn fit(pixels: &[u8]) -> Self {
        let n = pixels.len().max(1) as f64;
        let mut hist = [0u64; 256];
        for &p in pixels {
            hist[p as usize] += 1;
        }
        let (mut s, mut s2) = (0f64, 0f64);
        for (v, &c) in hist.iter().enumerate() {
            let x = v as f64 / 255.0;
            s += x * c as f64;
            s2 += x * x * c as f64;
        }
        let mean = s / n;
        let var = (s2 / n - mean * mean).max(0.0);
        Normalizer {
            mean: mean as f32,
            std: (var.sqrt() as f32).max(1e-6),
        }
    }

    /// `(p / 255 - mean) / std` for every pixel.
    pub fn apply(&self, pixels: &[u8]) -> Vec<f32> {
        let lut: Vec<f32> = (0..256)
            .map(|v| (v as f32 / 255.0 - self.mean) / self.std)
            .collect();
        pixels.iter().map(|&p| lut[p as usize]).collect()
    }
}

/// A split ready for training: normalised pixels `[N, H, W]` and labels.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub data: Vec<f32>,
    pub labels: Vec<u32>,
    pub h: usize,
    pub w: usize,
}

impl Prepared {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn pixels_per_image(&self) -> usize {
        self.h * self.w
    }
    pub fn new(set: &ImageSet, h: usize, w: usize, norm: &Normalizer) -> Self {
        Prepared {
            data: norm.apply(&set.pixels),
            labels: set.labels.clone(),
            h,
            w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_limit_balances_classes() {
        let labels: Vec<u32> = (0..100)
            .map(|i| if i < 80 { 0 } else { (i % 3) as u32 })
            .collect();
        let idx = stratified_indices(&labels, 12);
        assert_eq!(idx.len(), 12);
        let count = |c| idx.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(0), count(1), count(2)), (4, 4, 4));
        assert!(idx.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn normalizer_standardises() {
        let px: Vec<u8> = vec![0, 255, 0, 255];
        let n = Normalizer::fit(&px);
        assert!((n.mean - 0.5).abs() < 1e-6 && (n.std - 0.5).abs() < 1e-6);
        assert_eq!(n.apply(&px), vec![-1.0, 1.0, -1.0, 1.0]);
    }
}

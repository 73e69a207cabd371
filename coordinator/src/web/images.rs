//! Test-split images for the retrieval view: loaded once per data set, served as PNG.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use worker::train::data::{TestImages, load_test_images};

/// Error text for the dashboard (the data error types live in the worker crate).
pub type ImageError = String;

/// Caches decoded test splits by data-set name; a split is a few MB and loading it takes a while.
#[derive(Default)]
pub struct ImageCache {
    data_dir: Option<PathBuf>,
    sets: Mutex<HashMap<String, Arc<TestImages>>>,
}

impl ImageCache {
    pub fn new(data_dir: Option<PathBuf>) -> ImageCache {
        ImageCache {
            data_dir,
            sets: Mutex::default(),
        }
    }

    fn cached(&self, dataset: &str) -> Option<Arc<TestImages>> {
        self.sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(dataset)
            .cloned()
    }

    /// PNG of test image `index` of `dataset` (`None` if out of range). Blocks: call from
    /// `spawn_blocking`.
    pub fn png(&self, dataset: &str, index: u32) -> Result<Option<Vec<u8>>, ImageError> {
        let set = match self.cached(dataset) {
            Some(s) => s,
            None => {
                let ds: proto::Dataset = dataset
                    .parse()
                    .map_err(|e: proto::params::UnknownName| e.to_string())?;
                let loaded = Arc::new(
                    load_test_images(&ds, self.data_dir.as_deref()).map_err(|e| e.to_string())?,
                );
                self.sets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(dataset.to_owned(), loaded.clone());
                loaded
            }
        };
        let Some(pixels) = set.images.get(index as usize) else {
            return Ok(None);
        };
        encode_gray_png(pixels, set.w, set.h).map(Some)
    }
}

/// Encodes an 8-bit grey image as PNG.
pub fn encode_gray_png(pixels: &[u8], w: usize, h: usize) -> Result<Vec<u8>, ImageError> {
    let img = image::GrayImage::from_raw(w as u32, h as u32, pixels.to_vec())
        .ok_or_else(|| format!("image buffer of {} bytes is not {w}x{h}", pixels.len()))?;
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

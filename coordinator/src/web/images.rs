//! Test-split images for the retrieval view, served as PNG from a cache shared by all requests:
//! each data set is loaded at most once at a time (concurrent requests wait for that one load
//! instead of each loading the whole data set), and only the most recently used few are kept.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use worker::train::data::{TestImages, load_test_images};

/// Error text for the dashboard (the data error types live in the worker crate).
pub(crate) type ImageError = String;

/// Data sets kept in memory by default: a split is a few MB decoded, but loading one reads the
/// whole data set.
pub(crate) const DEFAULT_CAPACITY: usize = 3;

/// One data set's slot: its lock is held during the load, so requests for a data set being
/// loaded wait for it rather than loading it again.
type Slot = Arc<Mutex<Option<Arc<TestImages>>>>;

/// Caches decoded test splits by data-set name, least recently used evicted first.
pub(crate) struct ImageCache {
    data_dir: Option<PathBuf>,
    capacity: usize,
    /// Most recently used last.
    slots: Mutex<Vec<(String, Slot)>>,
    loads: AtomicU64,
}

impl ImageCache {
    pub fn new(data_dir: Option<PathBuf>) -> ImageCache {
        ImageCache::with_capacity(data_dir, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(data_dir: Option<PathBuf>, capacity: usize) -> ImageCache {
        ImageCache {
            data_dir,
            capacity: capacity.max(1),
            slots: Mutex::default(),
            loads: AtomicU64::new(0),
        }
    }

    /// How many times a split was loaded from disk.
    pub(crate) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The slot of `dataset`, created (evicting the least recently used) if absent.
    fn slot(&self, dataset: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match slots.iter().position(|(k, _)| k == dataset) {
            Some(i) => slots.remove(i).1,
            None => Slot::default(),
        };
        slots.push((dataset.to_owned(), slot.clone()));
        // An evicted slot being loaded finishes for its waiters, then is dropped with them.
        while slots.len() > self.capacity {
            slots.remove(0);
        }
        slot
    }

    /// The test split of `dataset`, loading it unless cached. Blocks.
    fn split(&self, dataset: &str) -> Result<Arc<TestImages>, ImageError> {
        let slot = self.slot(dataset);
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = guard.as_ref() {
            return Ok(set.clone());
        }
        let ds: proto::Dataset = dataset
            .parse()
            .map_err(|e: proto::params::UnknownName| e.to_string())?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        // A failed load is not cached: the data set may appear later (a download finishing).
        let loaded =
            Arc::new(load_test_images(&ds, self.data_dir.as_deref()).map_err(|e| e.to_string())?);
        *guard = Some(loaded.clone());
        Ok(loaded)
    }

    /// PNG of test image `index` of `dataset` (`None` if out of range). Blocks: call from
    /// `spawn_blocking`.
    pub fn png(&self, dataset: &str, index: u32) -> Result<Option<Vec<u8>>, ImageError> {
        let set = self.split(dataset)?;
        let Some(pixels) = set.images.get(index as usize) else {
            return Ok(None);
        };
        encode_gray_png(pixels, set.w, set.h).map(Some)
    }
}

/// Encodes an 8-bit grey image as PNG.
pub(crate) fn encode_gray_png(pixels: &[u8], w: usize, h: usize) -> Result<Vec<u8>, ImageError> {
    let img = image::GrayImage::from_raw(w as u32, h as u32, pixels.to_vec())
        .ok_or_else(|| format!("image buffer of {} bytes is not {w}x{h}", pixels.len()))?;
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_dataset(dir: &std::path::Path, name: &str) -> String {
        let root = dir.join(name);
        for class in ["a", "b"] {
            let d = root.join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..3u8 {
                let img = image::GrayImage::from_pixel(4, 4, image::Luma([i * 40]));
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
        format!("folder:{}", root.display())
    }

    #[test]
    fn concurrent_requests_load_once_and_lru_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let a = folder_dataset(dir.path(), "a");
        let cache = Arc::new(ImageCache::with_capacity(None, 1));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, a) = (cache.clone(), a.clone());
                std::thread::spawn(move || c.png(&a, 0).unwrap().is_some())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert_eq!(cache.loads(), 1);
        let b = folder_dataset(dir.path(), "b");
        cache.png(&b, 0).unwrap();
        assert_eq!(cache.loads(), 2);
        // Capacity one: `a` was evicted by `b`.
        cache.png(&a, 0).unwrap();
        assert_eq!(cache.loads(), 3);
        cache.png(&a, 1).unwrap();
        assert_eq!(cache.loads(), 3);
    }
}

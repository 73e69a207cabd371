//! Data loading against real files: IDX validation errors, the verified downloader served by
//! a real HTTP server on 127.0.0.1, and the AT&T faces folder data set.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use proto::Dataset;
use worker::train::data::{self, DataError, att_faces, builtin::Builtin, download, idx};

mod support;

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn idx_truncated_and_bad_magic_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let labels = gunzip(&support::mnist_dir().join("t10k-labels-idx1-ubyte.gz"));

    let truncated = dir.path().join("truncated-labels-idx1-ubyte");
    std::fs::write(&truncated, &labels[..labels.len() - 10]).unwrap();
    let e = idx::read_idx(&truncated).unwrap_err().to_string();
    assert!(
        e.contains("truncated-labels-idx1-ubyte") && e.contains("truncated"),
        "{e}"
    );

    // Truncated *gzip* stream: the decoder must fail, not return a short array.
    let gz = std::fs::read(support::mnist_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let cut = dir.path().join("cut.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let e = idx::read_idx(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.gz"), "{e}");

    let mut bad = labels.clone();
    bad[0] = 0x12;
    let bad_magic = dir.path().join("bad-magic-idx1-ubyte");
    std::fs::write(&bad_magic, &bad).unwrap();
    let e = idx::read_idx(&bad_magic).unwrap_err().to_string();
    assert!(
        e.contains("bad-magic-idx1-ubyte") && e.contains("magic"),
        "{e}"
    );

    let ok = idx::read_idx(&support::mnist_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(ok.dims, vec![10_000]);
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    /// Serves the decompressed file with one byte flipped: valid IDX, wrong content.
    Corrupt,
    /// Announces the full length, sends half the body and closes the connection.
    DropMidBody,
}

/// A real HTTP/1.1 server on 127.0.0.1 serving files of `dir`; returns its base URL.
fn serve(dir: PathBuf, mode: Mode) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || handle(stream, &dir, mode));
        }
    });
    url
}

fn handle(mut stream: TcpStream, dir: &Path, mode: Mode) {
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        req.push(byte[0]);
    }
    let req = String::from_utf8_lossy(&req);
    let path = req
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let Ok(mut body) = std::fs::read(dir.join(path)) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    if mode == Mode::Corrupt {
        body = gunzip(&dir.join(path));
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let send = if mode == Mode::DropMidBody {
        body.len() / 2
    } else {
        body.len()
    };
    let _ = stream.write_all(&body[..send]);
    let _ = stream.flush();
    // Dropping the stream closes the connection (mid-body for DropMidBody).
}

fn dir_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn downloader_fetches_verifies_and_caches_real_files() {
    let url = serve(support::mnist_dir(), Mode::Serve);
    let cache = tempfile::tempdir().unwrap();
    let ds = data::load_with_mirror(&Dataset::Mnist, Some(cache.path()), Some(&url)).unwrap();
    assert_eq!(
        (ds.train.len(), ds.test.len(), ds.h, ds.w),
        (60_000, 10_000, 28, 28)
    );
    let mut files = dir_entries(&cache.path().join("mnist"));
    files.sort();
    assert_eq!(
        files,
        vec![
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz"
        ]
    );
    // Second load uses the cache: a dead mirror is never contacted.
    let again = data::load_with_mirror(
        &Dataset::Mnist,
        Some(cache.path()),
        Some("http://127.0.0.1:9/"),
    )
    .unwrap();
    assert_eq!(again.test.labels, ds.test.labels);
}

#[test]
fn downloader_rejects_corrupted_file_and_leaves_nothing() {
    let url = serve(support::mnist_dir(), Mode::Corrupt);
    let cache = tempfile::tempdir().unwrap();
    let file = &Builtin::Mnist.files()[3];
    let err = download::download_verified(&url, file, cache.path()).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-labels-idx1-ubyte.gz") && msg.contains("checksum"),
        "{msg}"
    );
    assert_eq!(dir_entries(cache.path()), Vec::<String>::new());
}

#[test]
fn downloader_reports_dropped_connection_and_leaves_nothing() {
    let url = serve(support::mnist_dir(), Mode::DropMidBody);
    let cache = tempfile::tempdir().unwrap();
    let err = data::load_with_mirror(&Dataset::Mnist, Some(cache.path()), Some(&url)).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1") && msg.contains("train-images-idx3-ubyte.gz"),
        "{msg}"
    );
    assert_eq!(
        dir_entries(&cache.path().join("mnist")),
        Vec::<String>::new()
    );
}

#[test]
fn att_faces_folder_is_split_per_class_and_downscaled() {
    let root = support::att_faces();
    let ds = data::load(&Dataset::Folder(root.clone()), None).unwrap();
    assert_eq!((ds.h, ds.w), (56, 46));
    assert_eq!(ds.class_names.len(), 40);
    assert_eq!(&ds.class_names[..3], &["s1", "s2", "s3"]);
    assert_eq!(ds.class_names[9], "s10");
    assert_eq!((ds.train.len(), ds.test.len()), (280, 120));
    for c in 0..40u32 {
        assert_eq!(ds.train.labels.iter().filter(|&&l| l == c).count(), 7);
    }
    assert_eq!(ds.train.pixels.len(), 280 * 56 * 46);
    // Stable: a second load gives identical splits.
    let again = data::load(&Dataset::Folder(root), None).unwrap();
    assert_eq!(again.test.pixels, ds.test.pixels);
}

#[test]
fn test_images_for_the_dashboard() {
    let t = data::load_test_images(&Dataset::Mnist, Some(&support::datasets_dir())).unwrap();
    assert_eq!((t.images.len(), t.h, t.w), (10_000, 28, 28));
    assert_eq!(t.images[0].len(), 784);
    assert_eq!(t.labels[0], 7); // the first MNIST test digit is a 7
    assert_eq!(t.class_names[7], "7");
    let f = data::load_test_images(&Dataset::FashionMnist, None).unwrap();
    assert_eq!(f.class_names[9], "Ankle boot");
    assert_eq!(f.labels[0], 9); // the first Fashion-MNIST test item is an ankle boot
}

#[test]
fn pinned_checksums_are_those_of_the_decompressed_files() {
    let sets = [
        (Builtin::Mnist, support::mnist_dir()),
        (
            Builtin::FashionMnist,
            PathBuf::from("/usr/share/datasets/fashion-mnist"),
        ),
    ];
    for (set, dir) in sets {
        for file in set.files() {
            let path = dir.join(file.name);
            let bytes = std::fs::read(&path).unwrap();
            let sum = download::content_sha256(&bytes, &path).unwrap();
            assert_eq!(sum, file.sha256_decompressed, "{}", path.display());
        }
    }
    let faces = support::att_faces();
    assert_eq!(
        att_faces::tree_digest(&faces).unwrap(),
        att_faces::TREE_SHA256,
        "{}",
        faces.display()
    );
}

/// Packs the faces under `root` into `zip_path` inside an `att_faces/` folder with a README, as
/// the public archive; with `flip`, one byte of one image is altered (a valid archive, wrong data).
fn pack_faces(root: &Path, zip_path: &Path, flip: bool) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("att_faces/README", opts).unwrap();
    zip.write_all(b"The ORL face database\n").unwrap();
    let mut classes = dir_entries(root);
    classes.retain(|c| c.starts_with('s'));
    classes.sort();
    for (n, class) in classes.iter().enumerate() {
        let mut images = dir_entries(&root.join(class));
        images.sort();
        for (m, image) in images.iter().enumerate() {
            let mut bytes = std::fs::read(root.join(class).join(image)).unwrap();
            if flip && n == 7 && m == 3 {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
            }
            zip.start_file(format!("att_faces/{class}/{image}"), opts)
                .unwrap();
            zip.write_all(&bytes).unwrap();
        }
    }
    zip.finish().unwrap();
}

#[test]
fn att_faces_download_installs_only_a_verified_tree() {
    let faces = support::att_faces();
    let (good, bad, cut) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    pack_faces(&faces, &good.path().join(att_faces::ARCHIVE), false);
    pack_faces(&faces, &bad.path().join(att_faces::ARCHIVE), true);
    let whole = std::fs::read(good.path().join(att_faces::ARCHIVE)).unwrap();
    std::fs::write(
        cut.path().join(att_faces::ARCHIVE),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();

    let url = serve(bad.path().to_path_buf(), Mode::Serve);
    let err = att_faces::download_verified(&url, cache.path()).unwrap_err();
    assert!(matches!(err, DataError::TreeChecksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("att_faces.zip") && msg.contains(att_faces::TREE_SHA256),
        "{msg}"
    );
    assert_eq!(dir_entries(cache.path()), Vec::<String>::new());

    let url = serve(cut.path().to_path_buf(), Mode::Serve);
    let err = att_faces::locate(Some(cache.path()), Some(&url)).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(err.to_string().contains("zip"), "{err}");
    assert_eq!(dir_entries(cache.path()), Vec::<String>::new());

    let url = serve(good.path().to_path_buf(), Mode::Serve);
    let dir = att_faces::locate(Some(cache.path()), Some(&url)).unwrap();
    assert_eq!(dir, cache.path().join("att_faces"));
    assert_eq!(dir_entries(cache.path()), vec!["att_faces".to_owned()]);
    assert_eq!(
        att_faces::tree_digest(&dir).unwrap(),
        att_faces::TREE_SHA256
    );
    let ds = data::load(&Dataset::Folder(dir.clone()), None).unwrap();
    assert_eq!(
        (ds.class_names.len(), ds.train.len(), ds.test.len()),
        (40, 280, 120)
    );

    // Installed: a dead mirror is never contacted again.
    let again = att_faces::locate(Some(cache.path()), Some("http://127.0.0.1:9/")).unwrap();
    assert_eq!(again, dir);
}

//! Tests of the GIF export: decoded with the `gif` crate's own decoder.

use proto::SnapshotProjection;

use super::*;

/// Three jittered classes on a triangle, the whole picture turned by `turn` radians; 30 points,
/// fixed test indices.
fn snapshot(job: i64, epoch: i64, turn: f64, projection: SnapshotProjection) -> Snapshot {
    let mut points = Vec::new();
    let mut labels = Vec::new();
    for i in 0..30u32 {
        let c = i % 3;
        let a = f64::from(c) * std::f64::consts::TAU / 3.0;
        let jitter = f64::from(i / 3) * 0.02;
        let (x, y) = (3.0 * a.cos() + jitter, 3.0 * a.sin() - jitter);
        let (cos, sin) = (turn.cos(), turn.sin());
        points.push([(cos * x - sin * y) as f32, (sin * x + cos * y) as f32]);
        labels.push(c);
    }
    Snapshot {
        job_id: job,
        attempt_id: 1,
        epoch,
        projection,
        points,
        labels,
        indices: (100..130).collect(),
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

struct Decoded {
    width: u16,
    height: u16,
    palette: Vec<u8>,
    frames: Vec<Vec<u8>>,
}

fn decode(bytes: &[u8]) -> Decoded {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut d = opts.read_info(bytes).expect("a GIF");
    let (width, height) = (d.width(), d.height());
    let palette = d.global_palette().expect("a global palette").to_vec();
    let mut frames = Vec::new();
    while let Some(f) = d.read_next_frame().unwrap() {
        assert_eq!((f.width, f.height), (width, height), "full-size frames");
        frames.push(f.buffer.to_vec());
    }
    Decoded {
        width,
        height,
        palette,
        frames,
    }
}

fn slot(label: u32) -> u8 {
    FIXED.len() as u8 + label as u8
}

#[test]
fn one_frame_per_snapshot_in_class_colours() {
    let snaps: Vec<Snapshot> = (1..=5)
        .map(|e| snapshot(7, e, 0.0, SnapshotProjection::Tsne))
        .collect();
    let bytes = latent_gif(&[vec![Some(Panel {
        title: "#7".into(),
        snapshots: snaps,
    })]])
    .unwrap();
    let g = decode(&bytes);
    assert_eq!(g.frames.len(), 5);
    assert_eq!(
        (usize::from(g.width), usize::from(g.height)),
        (CELL_W, CELL_H)
    );
    for label in 0..3u32 {
        let i = usize::from(slot(label)) * 3;
        assert_eq!(g.palette[i..i + 3], crate::plot::class_rgb(label));
        for f in &g.frames {
            assert!(
                f.contains(&slot(label)),
                "class {label} drawn in every frame"
            );
        }
    }
    assert!(
        !g.frames[0].contains(&slot(3)),
        "no colour of an absent class"
    );
    // The epoch caption differs between frames; the points do not move.
    assert_ne!(g.frames[0], g.frames[4]);
}

#[test]
fn turning_snapshots_are_aligned_into_a_still_picture() {
    // Each epoch turns the layout a further 90°: Procrustes undoes it, so the plot area of every
    // frame is the same picture; unaligned, the classes would swap places.
    let snaps: Vec<Snapshot> = (0..4)
        .map(|e| {
            snapshot(
                1,
                e,
                e as f64 * std::f64::consts::FRAC_PI_2,
                SnapshotProjection::Pca,
            )
        })
        .collect();
    let bytes = latent_gif(&[vec![Some(Panel {
        title: "#1".into(),
        snapshots: snaps,
    })]])
    .unwrap();
    let g = decode(&bytes);
    let w = usize::from(g.width);
    let plot = |f: &[u8]| -> Vec<u8> {
        (PAD + LINE..PAD + LINE + PLOT)
            .flat_map(|y| f[y * w + PAD..y * w + PAD + PLOT].to_vec())
            .collect()
    };
    let first = plot(&g.frames[0]);
    for f in &g.frames[1..] {
        let moved = first.iter().zip(plot(f)).filter(|(a, b)| **a != *b).count();
        assert!(
            moved <= 20,
            "{moved} plot pixels changed between aligned frames"
        );
    }
}

#[test]
fn a_row_of_runs_shares_the_union_of_epochs() {
    let a: Vec<Snapshot> = [1, 2, 3]
        .iter()
        .map(|&e| snapshot(1, e, 0.0, SnapshotProjection::Identity))
        .collect();
    let b: Vec<Snapshot> = [2, 4]
        .iter()
        .map(|&e| snapshot(2, e, 0.0, SnapshotProjection::Tsne))
        .collect();
    let row = vec![
        Some(Panel {
            title: "#1".into(),
            snapshots: a,
        }),
        Some(Panel {
            title: "#2".into(),
            snapshots: b,
        }),
    ];
    let g = decode(&latent_gif(&[row]).unwrap());
    assert_eq!(g.frames.len(), 4, "epochs 1, 2, 3, 4");
    assert_eq!(usize::from(g.width), 2 * CELL_W);
    let w = usize::from(g.width);
    // Both panels hold points in every frame.
    for f in &g.frames {
        for panel in 0..2 {
            let x0 = panel * CELL_W;
            let has = (0..usize::from(g.height))
                .any(|y| f[y * w + x0..y * w + x0 + CELL_W].contains(&slot(0)));
            assert!(has, "panel {panel} drawn");
        }
    }
}

#[test]
fn nothing_to_animate_is_an_error_naming_the_runs() {
    let err = latent_gif(&[vec![Some(Panel {
        title: "#9".into(),
        snapshots: Vec::new(),
    })]])
    .unwrap_err();
    assert!(
        matches!(err, GifError::NoSnapshots(ref s) if s == "#9"),
        "{err}"
    );
    let many: Vec<Option<Panel>> = (0..=MAX_PANELS)
        .map(|i| {
            Some(Panel {
                title: format!("#{i}"),
                snapshots: Vec::new(),
            })
        })
        .collect();
    assert!(matches!(
        latent_gif(&[many]),
        Err(GifError::TooManyPanels { got }) if got == MAX_PANELS + 1
    ));
}

#[test]
fn class_rgb_matches_the_svg_colours() {
    assert_eq!(crate::plot::class_rgb(0), [0x1f, 0x77, 0xb4]);
    // Label 10: hsl(1375.08 mod 360 ≈ 295, 62%, 46%).
    assert_eq!(crate::plot::class_color(10), "hsl(295,62%,46%)");
    let [r, g, b] = crate::plot::class_rgb(10);
    assert!(r > g && b > g, "a magenta hue: {r} {g} {b}");
}

//! Animated GIFs of latent spaces forming: the Procrustes-aligned 2-D snapshots of one run, or of
//! a grid of runs side by side, one frame per epoch, in the dashboard's class colours.
//!
//! Each panel keeps one square scale over all its frames, so movement in the animation is
//! movement of the points, not of the axes. A panel's frame at epoch `e` is its latest snapshot
//! at or before `e` (its first one before that), as on the latent-space page.

use std::collections::BTreeSet;
use std::io::Cursor;

use font8x8::legacy::BASIC_LEGACY;

use crate::data::Snapshot;
use crate::pages::latent::{Aligned, align_run};
use crate::plot::class_rgb;

/// Side of a panel's square plot area, in pixels.
pub const PLOT: usize = 240;
/// Margin around a panel.
const PAD: usize = 6;
/// Glyph height and width of the caption font.
const GLYPH: usize = 8;
/// Height of a panel's title line and of its epoch line (glyph plus spacing).
const LINE: usize = GLYPH + 4;
/// Height of the epoch progress bar under each panel.
const BAR: usize = 3;
/// Panel size including title, plot, epoch line, bar and margins.
const CELL_W: usize = PLOT + 2 * PAD;
const CELL_H: usize = LINE + PLOT + LINE + BAR + 2 * PAD;
/// Most panels one GIF draws (the latent grid's 8 × 8).
pub const MAX_PANELS: usize = 64;
/// Frame delay in hundredths of a second; the last frame stays longer before the loop restarts.
const DELAY: u16 = 40;
const LAST_DELAY: u16 = 200;

/// Palette slots before the class colours.
const WHITE: u8 = 0;
const INK: u8 = 1;
const RULE: u8 = 2;
const FIXED: [[u8; 3]; 3] = [[255, 255, 255], [51, 51, 51], [210, 210, 210]];
/// Class colours a GIF palette (256 entries) can hold; labels beyond repeat colours.
const CLASS_SLOTS: usize = 256 - FIXED.len();

/// One run's panel: a caption and its snapshots (any attempts; the latest attempt per epoch is
/// drawn).
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub snapshots: Vec<Snapshot>,
}

/// Why no GIF was made.
#[derive(Debug, thiserror::Error)]
pub enum GifError {
    #[error("no snapshots to animate: {0}")]
    NoSnapshots(String),
    #[error("too many runs for one GIF: {got} (at most {MAX_PANELS})")]
    TooManyPanels { got: usize },
    #[error("encoding the GIF failed: {0}")]
    Encode(#[from] gif::EncodingError),
}

/// A panel ready to draw.
struct Prepared {
    title: String,
    aligned: Aligned,
    /// Lower-left corner and side of the square in embedding units.
    origin: [f64; 2],
    span: f64,
}

/// Encodes `rows` of panels (`None`: an empty cell) as an endlessly looping GIF with one frame per
/// epoch that any panel has a snapshot of.
pub fn latent_gif(rows: &[Vec<Option<Panel>>]) -> Result<Vec<u8>, GifError> {
    let count = rows.iter().flatten().flatten().count();
    if count > MAX_PANELS {
        return Err(GifError::TooManyPanels { got: count });
    }
    let prepared: Vec<Vec<Option<Prepared>>> = rows
        .iter()
        .map(|row| row.iter().map(|p| p.as_ref().and_then(prepare)).collect())
        .collect();
    let epochs: BTreeSet<i64> = prepared
        .iter()
        .flatten()
        .flatten()
        .flat_map(|p| p.aligned.epochs.iter().copied())
        .collect();
    if epochs.is_empty() {
        let titles: Vec<&str> = rows
            .iter()
            .flatten()
            .flatten()
            .map(|p| p.title.as_str())
            .collect();
        let what = if titles.is_empty() {
            "no runs".to_owned()
        } else {
            titles.join(", ")
        };
        return Err(GifError::NoSnapshots(what));
    }
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (w, h) = (cols * CELL_W, rows.len().max(1) * CELL_H);
    let mut palette: Vec<u8> = FIXED.iter().flatten().copied().collect();
    for label in 0..CLASS_SLOTS as u32 {
        palette.extend(class_rgb(label));
    }
    // Sizes are bounded by MAX_PANELS × CELL_*, far below u16::MAX.
    let mut enc = gif::Encoder::new(Cursor::new(Vec::new()), w as u16, h as u16, &palette)?;
    enc.set_repeat(gif::Repeat::Infinite)?;
    let epochs: Vec<i64> = epochs.into_iter().collect();
    for (f, &epoch) in epochs.iter().enumerate() {
        let mut canvas = Canvas::new(w, h);
        for (r, row) in prepared.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                let (x0, y0) = (c * CELL_W + PAD, r * CELL_H + PAD);
                match cell {
                    Some(p) => draw_panel(&mut canvas, x0, y0, p, epoch),
                    None => canvas.text(x0, y0 + LINE + PLOT / 2, "no snapshot", INK),
                }
            }
        }
        let mut frame = gif::Frame::from_indexed_pixels(w as u16, h as u16, canvas.px, None);
        frame.delay = if f + 1 == epochs.len() {
            LAST_DELAY
        } else {
            DELAY
        };
        enc.write_frame(&frame)?;
    }
    Ok(enc.into_inner()?.into_inner())
}

fn prepare(p: &Panel) -> Option<Prepared> {
    let refs: Vec<&Snapshot> = p.snapshots.iter().collect();
    let aligned = align_run(&refs)?;
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for q in aligned.points.iter().flatten() {
        if q[0].is_finite() && q[1].is_finite() {
            for k in 0..2 {
                lo[k] = lo[k].min(q[k]);
                hi[k] = hi[k].max(q[k]);
            }
        }
    }
    let (origin, span) = if lo[0].is_finite() {
        let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-9) * 1.06;
        let c = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
        ([c[0] - span / 2.0, c[1] - span / 2.0], span)
    } else {
        ([-1.0, -1.0], 2.0)
    };
    let label = aligned.projection.label();
    let title = if label.is_empty() {
        p.title.clone()
    } else {
        format!("{} {label}", p.title)
    };
    Some(Prepared {
        title,
        aligned,
        origin,
        span,
    })
}

fn draw_panel(cv: &mut Canvas, x0: usize, y0: usize, p: &Prepared, epoch: i64) {
    let a = &p.aligned;
    let k = a.epochs.iter().rposition(|e| *e <= epoch).unwrap_or(0);
    cv.text(x0, y0, &p.title, INK);
    let (px, py) = (x0, y0 + LINE);
    cv.frame(px, py, PLOT, PLOT, RULE);
    let scale = (PLOT - 4) as f64 / p.span;
    for (q, &label) in a.points[k].iter().zip(&a.labels) {
        if !(q[0].is_finite() && q[1].is_finite()) {
            continue;
        }
        let x = 2.0 + (q[0] - p.origin[0]) * scale;
        // Image rows grow downwards; flip so the picture keeps the embedding's orientation.
        let y = 2.0 + (p.origin[1] + p.span - q[1]) * scale;
        let colour = FIXED.len() as u8 + (label as usize % CLASS_SLOTS) as u8;
        cv.dot(px + x as usize, py + y as usize, colour);
    }
    let last = a.epochs.last().copied().unwrap_or(0);
    let caption = format!("epoch {} of {last}", a.epochs[k]);
    let ty = py + PLOT + 2;
    cv.text(x0, ty, &caption, INK);
    // Progress: how far through this run's snapshots the frame is.
    let done = (k + 1) * PLOT / a.epochs.len();
    cv.fill(x0, ty + LINE, PLOT, BAR, RULE);
    cv.fill(x0, ty + LINE, done, BAR, INK);
}

/// An indexed-colour image.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![WHITE; w * h],
        }
    }

    fn set(&mut self, x: usize, y: usize, c: u8) {
        if x < self.w && y < self.h {
            self.px[y * self.w + x] = c;
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: u8) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    fn frame(&mut self, x: usize, y: usize, w: usize, h: usize, c: u8) {
        self.fill(x, y, w, 1, c);
        self.fill(x, y + h - 1, w, 1, c);
        self.fill(x, y, 1, h, c);
        self.fill(x + w - 1, y, 1, h, c);
    }

    /// A point: a 3 × 3 square centred on (x, y).
    fn dot(&mut self, x: usize, y: usize, c: u8) {
        self.fill(x.saturating_sub(1), y.saturating_sub(1), 3, 3, c);
    }

    /// ASCII text in the 8 × 8 font, cut to the plot's width; other characters show as `?`.
    fn text(&mut self, x: usize, y: usize, s: &str, c: u8) {
        for (i, ch) in s.chars().take(PLOT / GLYPH).enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                '?' as usize
            };
            for (row, bits) in BASIC_LEGACY[code].iter().enumerate() {
                for col in 0..GLYPH {
                    // Bit 0 is the leftmost column.
                    if bits & (1 << col) != 0 {
                        self.set(x + i * GLYPH + col, y + row, c);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "anim_tests.rs"]
mod tests;

//! Exact blocked k-nearest-neighbour search (squared Euclidean) over row-major `f32` embeddings.
//!
//! The reference set is re-laid out in tiles of [`TILE`] points stored dimension-major (`[dim][TILE]`),
//! so the distance kernel vectorises across points whatever the embedding width (D = 2 included).
//! Query blocks are processed in parallel (scoped threads, one per core); each block sweeps over all
//! reference tiles, so a tile is loaded once per block and stays in L1 while every query of the block
//! uses it. Each query keeps a bounded candidate buffer (see [`TopK`]), so memory is
//! O(queries · k + reference), never a full distance matrix.
//!
//! Distances are computed as `Σ_d (q_d − x_d)²`, summed sequentially over `d` in `f32`. This is
//! deliberately not the `‖q‖² + ‖x‖² − 2 q·x` expansion: the expansion cancels catastrophically when
//! points are close relative to their norm (tight clusters far from the origin, exactly what a
//! converged contrastive or triplet loss produces), which would reorder near neighbours. The
//! difference form costs one extra subtraction per term, keeps a relative error of about `D·ε`, and
//! yields bit-identical values to the scalar [`sq_dist`], so results do not depend on blocking,
//! thread count or tile position.
//!
//! Neighbours are ordered by `(distance, index)`: distance ties go to the lower reference index.

use std::cmp::Ordering;
use std::sync::Mutex;

/// Reference points per tile; the kernel's accumulators are one `[f32; TILE]` array.
const TILE: usize = 16;

/// Bytes of query data per block; sized so a block of queries stays cache-resident.
const BLOCK_BYTES: usize = 64 * 1024;

/// The `k` nearest reference points of every query, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    k: usize,
    indices: Vec<u32>,  // [Nq * k]
    sq_dists: Vec<f32>, // [Nq * k]
}

impl Neighbours {
    /// Neighbours stored per query (the requested `k`, capped at the number of eligible references).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.indices.len().checked_div(self.k).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Reference indices of query `q`'s neighbours, nearest first.
    pub fn indices(&self, q: usize) -> &[u32] {
        &self.indices[q * self.k..(q + 1) * self.k]
    }

    /// Squared distances matching [`Neighbours::indices`].
    pub fn sq_dists(&self, q: usize) -> &[f32] {
        &self.sq_dists[q * self.k..(q + 1) * self.k]
    }
}

/// Squared Euclidean distance, summed sequentially; the search kernel reproduces it bit for bit.
#[inline]
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let t = x - y;
        s += t * t;
    }
    s
}

/// Total order used for neighbour lists: distance, then index (`total_cmp` keeps it a total order).
#[inline]
fn key_cmp(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// The `k` nearest of `refs` for every row of `queries` (both `[N * dim]` row-major).
///
/// With `exclude_self`, `queries` and `refs` must be the same set and query `i` never returns
/// reference `i` (other exact duplicates of it are still returned, as in pytorch-metric-learning,
/// which removes the query's own index). `k` is capped at the number of eligible references.
/// Inputs are expected to be finite; the order is still total (via `f32::total_cmp`) otherwise.
pub fn knn_search(
    queries: &[f32],
    refs: &[f32],
    dim: usize,
    k: usize,
    exclude_self: bool,
) -> Neighbours {
    assert!(dim > 0, "knn_search: dim must be positive");
    assert_eq!(queries.len() % dim, 0, "knn_search: queries not a multiple of dim");
    assert_eq!(refs.len() % dim, 0, "knn_search: refs not a multiple of dim");
    let nq = queries.len() / dim;
    let nr = refs.len() / dim;
    assert!(nr <= u32::MAX as usize, "knn_search: too many reference points");
    if exclude_self {
        assert_eq!(nq, nr, "knn_search: exclude_self needs queries == refs");
    }
    let k = k.min(nr.saturating_sub(usize::from(exclude_self)));
    let mut indices = vec![0u32; nq * k];
    let mut sq_dists = vec![0f32; nq * k];
    if k == 0 || nq == 0 {
        return Neighbours { k, indices: Vec::new(), sq_dists: Vec::new() };
    }

    let tiles = tile_refs(refs, dim, nr);
    let block = (BLOCK_BYTES / (4 * dim)).clamp(32, 512);
    let n_blocks = nq.div_ceil(block);
    let work: Vec<_> = indices
        .chunks_mut(block * k)
        .zip(sq_dists.chunks_mut(block * k))
        .enumerate()
        .collect();
    let queue = Mutex::new(work.into_iter());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(n_blocks);
    let ctx = BlockCtx { queries, tiles: &tiles, dim, nr, k, block, exclude_self };
    let run = || {
        let mut tops = Vec::new();
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((b, idx_out, dist_out)) = next else { break };
            ctx.search_block(b, &mut tops, idx_out, dist_out);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(run);
        }
        run();
    });
    Neighbours { k, indices, sq_dists }
}

/// Re-lays `refs` out as `[n_tiles][dim][TILE]`, zero-padding the last tile.
fn tile_refs(refs: &[f32], dim: usize, nr: usize) -> Vec<f32> {
    let mut tiles = vec![0f32; nr.div_ceil(TILE) * dim * TILE];
    for (i, row) in refs.chunks_exact(dim).enumerate() {
        let (t, p) = (i / TILE, i % TILE);
        for (d, &v) in row.iter().enumerate() {
            tiles[(t * dim + d) * TILE + p] = v;
        }
    }
    tiles
}

/// Squared distances from `q` to the `TILE` points of one tile (`[dim][TILE]`).
#[inline(always)]
fn tile_dists(q: &[f32], tile: &[f32]) -> [f32; TILE] {
    let mut acc = [0f32; TILE];
    for (&qd, row) in q.iter().zip(tile.chunks_exact(TILE)) {
        let row: &[f32; TILE] = row.try_into().unwrap();
        for p in 0..TILE {
            let t = qd - row[p];
            acc[p] += t * t;
        }
    }
    acc
}

struct BlockCtx<'a> {
    queries: &'a [f32],
    tiles: &'a [f32],
    dim: usize,
    nr: usize,
    k: usize,
    block: usize,
    exclude_self: bool,
}

impl BlockCtx<'_> {
    fn search_block(&self, b: usize, tops: &mut Vec<TopK>, idx_out: &mut [u32], dist_out: &mut [f32]) {
        let (dim, k) = (self.dim, self.k);
        let q0 = b * self.block;
        let nq = idx_out.len() / k;
        let qs = &self.queries[q0 * dim..(q0 + nq) * dim];
        tops.resize_with(nq, || TopK::new(k));
        for t in tops.iter_mut() {
            t.reset(k);
        }
        for (t, tile) in self.tiles.chunks_exact(dim * TILE).enumerate() {
            let base = t * TILE;
            let valid = TILE.min(self.nr - base);
            for (j, (q, top)) in qs.chunks_exact(dim).zip(tops.iter_mut()).enumerate() {
                let acc = tile_dists(q, tile);
                if top.pruned {
                    // Branch-free screen so the common "nothing closer" case stays vectorised.
                    let mut hit = false;
                    for &d in &acc {
                        hit |= d < top.thr;
                    }
                    if !hit {
                        continue;
                    }
                }
                let skip = if self.exclude_self { q0 + j } else { usize::MAX };
                for (p, &d) in acc[..valid].iter().enumerate() {
                    if base + p != skip {
                        top.offer(d, (base + p) as u32);
                    }
                }
            }
        }
        for (j, top) in tops.iter_mut().enumerate() {
            top.finish(&mut idx_out[j * k..(j + 1) * k], &mut dist_out[j * k..(j + 1) * k]);
        }
    }
}

/// Bounded top-k accumulator: appends candidates below the current k-th best and, when the buffer
/// fills, keeps the k best by selection (amortised O(1) per candidate, any k).
///
/// Candidates arrive in increasing reference index, so once pruned a newcomer beats the k-th best
/// `(thr, i_k)` exactly when its distance is strictly below `thr`: equal distances lose on index.
struct TopK {
    buf: Vec<(f32, u32)>,
    k: usize,
    cap: usize,
    thr: f32,
    pruned: bool,
}

impl TopK {
    fn new(k: usize) -> Self {
        let mut t = TopK { buf: Vec::new(), k, cap: 0, thr: f32::INFINITY, pruned: false };
        t.reset(k);
        t
    }

    fn reset(&mut self, k: usize) {
        self.buf.clear();
        self.k = k;
        self.cap = 2 * k + 64;
        self.thr = f32::INFINITY;
        self.pruned = false;
    }

    #[inline]
    fn offer(&mut self, d: f32, i: u32) {
        if !self.pruned || d < self.thr {
            self.buf.push((d, i));
            if self.buf.len() >= self.cap {
                self.prune();
            }
        }
    }

    fn prune(&mut self) {
        self.buf.select_nth_unstable_by(self.k - 1, key_cmp);
        self.buf.truncate(self.k);
        self.thr = self.buf[self.k - 1].0;
        self.pruned = true;
    }

    fn finish(&mut self, idx_out: &mut [u32], dist_out: &mut [f32]) {
        if self.buf.len() > self.k {
            self.prune();
        }
        self.buf.sort_unstable_by(key_cmp);
        debug_assert_eq!(self.buf.len(), idx_out.len());
        for ((&(d, i), io), dout) in self.buf.iter().zip(idx_out).zip(dist_out) {
            *io = i;
            *dout = d;
        }
    }
}

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

use std::sync::Mutex;

/// Reference points per tile; the kernel's accumulators are one `[f32; TILE]` array.
const TILE: usize = 16;
const _: () = assert!(
    TILE < 32 && TILE.is_power_of_two(),
    "tile candidates live in a u32 bit mask"
);

/// Bytes of query data per block; sized so a block of queries stays cache-resident.
const BLOCK_BYTES: usize = 64 * 1024;

/// The `k` nearest reference points of every query, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Neighbours {
    queries: usize,
    k: usize,
    indices: Vec<u32>,  // [Nq * k]
    sq_dists: Vec<f32>, // [Nq * k]
}

impl Neighbours {
    /// Neighbours stored per query (the requested `k`, capped at the number of eligible references).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Number of queries.
    pub(crate) fn len(&self) -> usize {
        self.queries
    }

    /// Reference indices of query `q`'s neighbours, nearest first.
    pub(crate) fn indices(&self, q: usize) -> &[u32] {
        &self.indices[q * self.k..(q + 1) * self.k]
    }

    /// Neighbour lists computed elsewhere (`indices` is `[queries * k]`, nearest first), for the
    /// metrics of a search under another similarity than the Euclidean one.
    pub(crate) fn from_indices(queries: usize, k: usize, indices: Vec<u32>) -> Self {
        assert_eq!(
            indices.len(),
            queries * k,
            "Neighbours: queries × k indices"
        );
        Neighbours {
            queries,
            k,
            sq_dists: vec![f32::NAN; indices.len()],
            indices,
        }
    }

    /// Squared distances matching [`Neighbours::indices`].
    #[cfg(test)]
    pub(crate) fn sq_dists(&self, q: usize) -> &[f32] {
        &self.sq_dists[q * self.k..(q + 1) * self.k]
    }
}

/// Squared Euclidean distance, summed sequentially; the search kernel reproduces it bit for bit.
#[inline]
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let t = x - y;
        s += t * t;
    }
    s
}

/// Packs (distance, index) so that integer order is neighbour order: squared distances are
/// non-negative (never −0.0: they are sums of squares), and the bit patterns of non-negative
/// floats, +∞ included, are ordered like their values.
#[inline]
fn key(d: f32, i: u32) -> u64 {
    (u64::from(d.to_bits()) << 32) | u64::from(i)
}

#[inline]
fn unkey(key: u64) -> (f32, u32) {
    (f32::from_bits((key >> 32) as u32), key as u32)
}

/// The `k` nearest of `refs` for every row of `queries` (both `[N * dim]` row-major).
///
/// With `exclude_self`, `queries` and `refs` must be the same set and query `i` never returns
/// reference `i` (other exact duplicates of it are still returned, as in pytorch-metric-learning,
/// which removes the query's own index). `k` is capped at the number of eligible references.
/// Inputs are expected to be finite; otherwise the order is still deterministic but unspecified.
pub(crate) fn knn_search(
    queries: &[f32],
    refs: &[f32],
    dim: usize,
    k: usize,
    exclude_self: bool,
) -> Neighbours {
    assert!(dim > 0, "knn_search: dim must be positive");
    assert_eq!(
        queries.len() % dim,
        0,
        "knn_search: queries not a multiple of dim"
    );
    assert_eq!(
        refs.len() % dim,
        0,
        "knn_search: refs not a multiple of dim"
    );
    let nq = queries.len() / dim;
    let nr = refs.len() / dim;
    assert!(
        nr <= u32::MAX as usize,
        "knn_search: too many reference points"
    );
    if exclude_self {
        assert_eq!(nq, nr, "knn_search: exclude_self needs queries == refs");
    }
    let k = k.min(nr.saturating_sub(usize::from(exclude_self)));
    let mut indices = vec![0u32; nq * k];
    let mut sq_dists = vec![0f32; nq * k];
    if k == 0 || nq == 0 {
        return Neighbours {
            queries: nq,
            k,
            indices,
            sq_dists,
        };
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
    let ctx = BlockCtx {
        queries,
        tiles: &tiles,
        dim,
        nr,
        k,
        block,
        exclude_self,
    };
    let run = || {
        let mut tops = Vec::new();
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((b, (idx_out, dist_out))) = next else {
                break;
            };
            ctx.search_block(b, &mut tops, idx_out, dist_out);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(run);
        }
        run();
    });
    Neighbours {
        queries: nq,
        k,
        indices,
        sq_dists,
    }
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

/// [`tile_dists`] for two queries at once (same per-pair summation order).
#[inline(always)]
fn tile_dists2(qa: &[f32], qb: &[f32], tile: &[f32]) -> ([f32; TILE], [f32; TILE]) {
    let (mut acc_a, mut acc_b) = ([0f32; TILE], [0f32; TILE]);
    for ((&a, &b), row) in qa.iter().zip(qb).zip(tile.chunks_exact(TILE)) {
        let row: &[f32; TILE] = row.try_into().unwrap();
        for p in 0..TILE {
            let ta = a - row[p];
            let tb = b - row[p];
            acc_a[p] += ta * ta;
            acc_b[p] += tb * tb;
        }
    }
    (acc_a, acc_b)
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
    fn search_block(
        &self,
        b: usize,
        tops: &mut Vec<TopK>,
        idx_out: &mut [u32],
        dist_out: &mut [f32],
    ) {
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
            // Two queries at a time: eight independent accumulator chains hide the add latency.
            let mut pairs = qs.chunks_exact(2 * dim).zip(tops.chunks_exact_mut(2));
            let mut j = 0;
            for (q2, top2) in pairs.by_ref() {
                let (qa, qb) = q2.split_at(dim);
                let (acc_a, acc_b) = tile_dists2(qa, qb, tile);
                let [top_a, top_b] = top2 else { unreachable!() };
                self.consider(top_a, &acc_a, valid, base, q0 + j);
                self.consider(top_b, &acc_b, valid, base, q0 + j + 1);
                j += 2;
            }
            if nq % 2 == 1 {
                let acc = tile_dists(&qs[(nq - 1) * dim..], tile);
                self.consider(&mut tops[nq - 1], &acc, valid, base, q0 + nq - 1);
            }
        }
        for (j, top) in tops.iter_mut().enumerate() {
            top.finish(
                &mut idx_out[j * k..(j + 1) * k],
                &mut dist_out[j * k..(j + 1) * k],
            );
        }
    }

    /// Offers one tile's distances for query `qi` to its accumulator.
    #[inline(always)]
    fn consider(&self, top: &mut TopK, acc: &[f32; TILE], valid: usize, base: usize, qi: usize) {
        if top.pruned {
            // Branch-free screen so the common "nothing closer" case stays vectorised.
            let mut hit = false;
            for &d in acc {
                hit |= d < top.thr;
            }
            if !hit {
                return;
            }
        }
        let skip = if self.exclude_self {
            qi.wrapping_sub(base)
        } else {
            usize::MAX
        };
        top.offer_tile(acc, valid, base, skip);
    }
}

/// Bounded top-k accumulator: appends candidates below the current k-th best and, when the buffer
/// fills, keeps the k best by selection (amortised O(1) per candidate, any k).
///
/// Candidates arrive in increasing reference index, so once pruned a newcomer beats the k-th best
/// `(thr, i_k)` exactly when its distance is strictly below `thr`: equal distances lose on index.
/// Before the first prune every candidate is kept (so even infinite distances fill the list).
struct TopK {
    /// `buf[..len]` holds candidates; `TILE` spare slots let a whole tile land before a prune.
    buf: Vec<u64>, // keys, see `key`
    len: usize,
    k: usize,
    cap: usize,
    thr: f32,
    pruned: bool,
}

impl TopK {
    fn new(k: usize) -> Self {
        let mut t = TopK {
            buf: Vec::new(),
            len: 0,
            k,
            cap: 0,
            thr: f32::INFINITY,
            pruned: false,
        };
        t.reset(k);
        t
    }

    fn reset(&mut self, k: usize) {
        self.k = k;
        self.cap = 2 * k + 64;
        self.buf.resize(self.cap + TILE, 0);
        self.len = 0;
        self.thr = f32::INFINITY;
        self.pruned = false;
    }

    /// Appends the qualifying candidates among `acc[..valid]` (reference `base + p`), except
    /// position `skip`. Kept out of line so the distance kernel around it stays clean.
    #[inline(never)]
    fn offer_tile(&mut self, acc: &[f32; TILE], valid: usize, base: usize, skip: usize) {
        // Bit p = candidate p qualifies, built branch-free (compare + movemask); then only set bits
        // are visited, so the cost follows the accepted count, not the tile size.
        let thr = if self.pruned { self.thr } else { f32::INFINITY };
        let mut mask = 0u32;
        for (p, &d) in acc.iter().enumerate() {
            mask |= u32::from(d < thr || !self.pruned) << p;
        }
        mask &= (1u32 << valid) - 1; // valid ≤ TILE < 32
        if skip < TILE {
            mask &= !(1u32 << skip);
        }
        let slots = &mut self.buf[self.len..self.len + TILE];
        let mut n = 0;
        while mask != 0 {
            let p = mask.trailing_zeros() as usize;
            slots[n & (TILE - 1)] = key(acc[p], (base + p) as u32); // n < TILE: the mask is a no-op
            n += 1;
            mask &= mask - 1;
        }
        self.len += n;
        if self.len >= self.cap {
            self.prune();
        }
    }

    fn prune(&mut self) {
        let live = &mut self.buf[..self.len];
        live.select_nth_unstable(self.k - 1);
        self.len = self.k;
        self.thr = unkey(live[self.k - 1]).0;
        self.pruned = true;
    }

    fn finish(&mut self, idx_out: &mut [u32], dist_out: &mut [f32]) {
        if self.len > self.k {
            self.prune();
        }
        let live = &mut self.buf[..self.len];
        live.sort_unstable();
        debug_assert_eq!(live.len(), idx_out.len());
        for ((&kv, io), dout) in live.iter().zip(idx_out).zip(dist_out) {
            (*dout, *io) = unkey(kv);
        }
    }
}

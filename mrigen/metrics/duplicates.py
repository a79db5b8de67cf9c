"""Near-duplicate share: how often a generator repeats itself within its own output.

Memorization (memorization.py) asks whether generated images copy training
images; this asks whether they copy each other, the mark of a partial mode
collapse that diversity averages such as MS-SSIM can hide. The threshold
comes from real data: the L2 distance of the closest pair among n real
images. The share is the fraction of the n (n - 1) / 2 pairs of n generated
images that are closer than that; a real set measured the same way against
another real set gives about 1 / (number of pairs), the floor.
"""

import threading

import numpy as np

from mrigen.metrics._util import chunks, flat, subsample, thread_map
from mrigen.metrics.memorization import _block_sums, _bound, _residual, pool_factor
from mrigen.metrics.pca import column_mean, sq_norms

_CANDIDATES = 16  # closest approximate pairs re-measured exactly for the threshold
_BAND = 1e-3  # relative band around the threshold where a pair is re-measured exactly
_MEASURE_BATCH = 64  # pairs measured per block


def _sq_distance_matrix(x: np.ndarray) -> np.ndarray:
    """[n, n] float64 approximate squared L2 distances of x's rows [n, D], from float32 products."""
    gram = x @ x.T  # BLAS syrk would do half the work, but OpenBLAS's takes as long
    sq = np.diag(gram).astype(np.float64)
    d2 = sq[:, None] + sq[None, :] - 2 * gram.astype(np.float64)
    return np.maximum(d2, 0.0, out=d2)


def _exact(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.empty(len(i))
    for k, (a, b) in enumerate(zip(i, j)):
        diff = x[a].astype(np.float64) - x[b]
        out[k] = np.sqrt(diff @ diff)
    return out


def _subset(images, n: int, seed: int, stream: int):
    """(sorted row indices, [n, D] float32 rows) of a seeded random choice of n images."""
    rows = subsample(len(images), n, np.random.default_rng([seed, stream]))
    return rows, flat(np.asarray(images)[rows])  # converts only the chosen uint8 images


class PairTable:
    """Every pair among a seeded random choice of n images of one set, for resampling.

    rows: [n] indices of the chosen images; x: [n, D] float32 the images;
    sq: [n, n] float64 squared L2 distances, the diagonal 0. Stream 0 is the
    choice closest_pair_distance makes of the real set, stream 1 the one
    duplicate_share makes of a generated set.

    From 128 px, sq starts as a lower bound of every pair's squared
    distance from pooled images (memorization.pooled's bound, blocks of
    2f x 2f pixels, f = memorization.pool_factor: 1/64 of the pixels at 256
    px, less a rounding slack), and pairs are measured, closest bound first,
    only as far as a question needs (ensure, ensure_smallest): a measured
    pair holds its approximate squared distance (float32 differences,
    float64 sums, relative error ~1e-7), and every pair not measured has a
    bound of at least `cutoff`, so all its values below cutoff are measured
    ones. The few pairs near the smallest distances are all that the
    duplicate share and its resamples read. Below 128 px every pair is
    measured at once (float32 products of centered images, relative error
    ~1e-6).
    """

    def __init__(self, images, n_images: int, seed: int = 0, stream: int = 1):
        self.rows, self.x = _subset(images, n_images, seed, stream)
        n = len(self.rows)
        shape = np.shape(images)[1:3]
        f = pool_factor(shape)
        self._lock = threading.Lock()
        if f == 1 or n < 2 or shape[0] % (2 * f) or shape[1] % (2 * f):
            center = self.x.mean(axis=0, dtype=np.float64).astype(np.float32)
            self.sq = _sq_distance_matrix(self.x - center)
            self.cutoff = np.inf
            self._pairs, self._sorted_bounds, self._next = (), np.empty(0), 0
            return
        center = column_mean(self.x).astype(np.float32)  # only for the bound's rounding
        xc = pooled_centered(self.x, center, shape, 2 * f)
        self.sq = np.maximum(_bound(xc, xc, sq_norms(xc[0])), 0.0)
        np.fill_diagonal(self.sq, 0.0)
        i, j = np.triu_indices(n, k=1)
        bounds = self.sq[i, j]
        order = np.argsort(bounds, kind='stable')
        self._pairs = (i[order], j[order])
        self._sorted_bounds = bounds[order]
        self._next = 0  # the first pair not measured, in bound order
        self.cutoff = float(self._sorted_bounds[0]) if len(order) else np.inf

    def ensure(self, value: float) -> None:
        """Measures every pair whose bound is below value (then cutoff >= value)."""
        if value <= self.cutoff:
            return
        with self._lock:
            stop = int(np.searchsorted(self._sorted_bounds, value, side='left'))
            self._measure(stop)

    def ensure_smallest(self, k: int) -> None:
        """Measures pairs until the k smallest values of sq are measured ones (below cutoff)."""
        with self._lock:
            while self._next < len(self._sorted_bounds):
                i, j = self._pairs[0][:self._next], self._pairs[1][:self._next]
                if np.count_nonzero(self.sq[i, j] < self.cutoff) >= k:
                    return
                self._measure(min(max(2 * self._next, self._next + k), len(self._sorted_bounds)))

    def _measure(self, stop: int) -> None:
        i_all, j_all = self._pairs
        for start in range(self._next, stop, _MEASURE_BATCH):
            end = min(start + _MEASURE_BATCH, stop)
            i, j = i_all[start:end], j_all[start:end]
            d2 = sq_norms(self.x[i] - self.x[j])
            self.sq[i, j] = d2
            self.sq[j, i] = d2
        self._next = max(self._next, stop)
        self.cutoff = (float(self._sorted_bounds[self._next]) if self._next < len(self._sorted_bounds)
                       else np.inf)


def pooled_centered(x: np.ndarray, center: np.ndarray, image_shape, f: int):
    """memorization.pooled of the centered images x - center (one chunk at a time, no full copy)."""
    h, w = image_shape
    out = np.empty((len(x), (h // f) * (w // f)), np.float32)
    total = np.empty(len(x))

    def chunk(bounds):
        start, stop = bounds
        c = x[start:stop] - center
        total[start:stop] = sq_norms(c)
        out[start:stop] = _block_sums(c, h, w, f)

    thread_map(chunk, chunks(len(x), 64))
    out /= np.float32(f)
    return out, _residual(out, total), total


def _min_within(table: PairTable, rows) -> float:
    """The smallest value of table.sq over pairs of rows, measured: the true smallest squared
    distance (approximate) among them."""
    i, j = np.triu_indices(len(rows), k=1)
    while True:
        m = float(table.sq[np.ix_(rows, rows)][i, j].min())
        if m < table.cutoff:
            return m
        table.ensure(np.nextafter(m, np.inf))


def resampled_share(real: PairTable, generated: PairTable, real_rows, gen_rows) -> float:
    """duplicate_share on a subset of each table: the share of the generated subset's pairs
    closer than the closest pair of the real subset, from the approximate distances.

    real_rows, gen_rows: distinct indices into each table (at least 2). Cheap:
    no pixel is read but those of the few pairs near the threshold. For
    resampling, not for reporting (no exact re-measure). Safe to call from
    several threads at once.
    """
    threshold = _min_within(real, real_rows)
    generated.ensure(threshold)
    i, j = np.triu_indices(len(gen_rows), k=1)
    return float(np.mean(generated.sq[np.ix_(gen_rows, gen_rows)][i, j] < threshold))


def closest_pair_distance(real, n_images: int | None = 1000, seed: int = 0,
                          table: PairTable | None = None) -> float:
    """L2 distance of the closest pair among n = min(n_images, N) real images (seeded choice).

    real: [N, H, W(, 1)] float32 in [-1, 1] (or uint8). The threshold of
    duplicate_share; compute it once to measure several generated sets
    against one real set (same n_images and seed). table: PairTable(real, n,
    seed, stream=0), to reuse (built here if None). Cost: one n x n float32
    product over D pixels (2 s for n = 1000 at 256 px on 2 cores), then the
    16 closest candidate pairs exactly.
    """
    if table is None:
        n = min(n_images or len(real), len(real))
        if n < 2:
            raise ValueError('need at least 2 real images')
        table = PairTable(real, n, seed, stream=0)
    i, j = np.triu_indices(len(table.rows), k=1)
    table.ensure_smallest(_CANDIDATES)
    d2 = table.sq[i, j]
    cand = np.argpartition(d2, min(_CANDIDATES, len(d2)) - 1)[:_CANDIDATES]
    return float(_exact(table.x, i[cand], j[cand]).min())


def duplicate_share(real, generated, n_images: int | None = 1000, seed: int = 0,
                    k_pairs: int = 8, threshold: float | None = None,
                    table: PairTable | None = None) -> dict:
    """Share of pairs of generated images closer than the closest pair of real images.

    real, generated: [N, H, W(, 1)] float32 in [-1, 1] (or uint8), same H, W.
    n = min(n_images, N_real, N_generated) images of each (a seeded random
    choice; all if n_images is None); all pairs within each set are measured
    (one n x n product over D pixels per set). threshold:
    closest_pair_distance(real, n, seed), computed here if None; 0 when the
    real images hold an exact copy, and then no pair is closer. table:
    PairTable(generated, n, seed, stream=1), to reuse (built here if None).
    Distances are L2 over all pixels in [-1, 1] units, from float32 products
    of centered images; the threshold pair and generated pairs within 0.1% of
    it are re-measured exactly in float64, so an exact copy is at distance 0.
    Returns {'share' in [0, 1], 'threshold' (the closest real pair's
    distance), 'n_images', 'n_pairs', 'n_close_pairs', 'closest_pairs':
    [[i, j, distance], ...] the k_pairs closest generated pairs, i < j
    indices into `generated`}.
    """
    if np.shape(real)[1:3] != np.shape(generated)[1:3]:
        raise ValueError(f'image sizes differ: {np.shape(real)[1:3]} vs {np.shape(generated)[1:3]}')
    n = min(n_images or len(real), len(real), len(generated))
    if n < 2:
        raise ValueError('need at least 2 images per set')
    if threshold is None:
        threshold = closest_pair_distance(real, n, seed)
    if table is None:
        table = PairTable(generated, n, seed, stream=1)
    elif len(table.rows) != n:
        raise ValueError(f'table holds {len(table.rows)} images, expected {n}')
    rows, x = table.rows, table.x
    i, j = np.triu_indices(n, k=1)
    t2 = threshold ** 2
    table.ensure(t2 * (1 + 2 * _BAND))
    table.ensure_smallest(k_pairs)
    d2 = table.sq[i, j]
    close = d2 < t2
    if t2 > 0:
        band = np.flatnonzero(np.abs(d2 - t2) <= _BAND * t2)
        close[band] = _exact(x, i[band], j[band]) < threshold
    order = np.argpartition(d2, min(k_pairs, len(d2)) - 1)[:k_pairs]
    exact = _exact(x, i[order], j[order])
    closest = sorted(zip(rows[i[order]].tolist(), rows[j[order]].tolist(), exact.tolist()),
                     key=lambda p: p[2])
    return {'share': float(close.mean()), 'threshold': float(threshold), 'n_images': n,
            'n_pairs': len(d2), 'n_close_pairs': int(close.sum()),
            'closest_pairs': [list(p) for p in closest]}

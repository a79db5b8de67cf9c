"""Near-duplicate share: how often a generator repeats itself within its own output.

Memorization (memorization.py) asks whether generated images copy training
images; this asks whether they copy each other, the mark of a partial mode
collapse that diversity averages such as MS-SSIM can hide. The threshold
comes from real data: the L2 distance of the closest pair among n real
images. The share is the fraction of the n (n - 1) / 2 pairs of n generated
images that are closer than that; a real set measured the same way against
another real set gives about 1 / (number of pairs), the floor.
"""

import numpy as np

from mrigen.metrics._util import flat, subsample

_CANDIDATES = 16  # closest approximate pairs re-measured exactly for the threshold
_BAND = 1e-3  # relative band around the threshold where a pair is re-measured exactly


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
    sq: [n, n] float64 approximate squared L2 distances (float32 products of
    centered images, relative error ~1e-6), the diagonal 0. Stream 0 is the
    choice closest_pair_distance makes of the real set, stream 1 the one
    duplicate_share makes of a generated set.
    """

    def __init__(self, images, n_images: int, seed: int = 0, stream: int = 1):
        self.rows, self.x = _subset(images, n_images, seed, stream)
        center = self.x.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.sq = _sq_distance_matrix(self.x - center)


def resampled_share(real: PairTable, generated: PairTable, real_rows, gen_rows) -> float:
    """duplicate_share on a subset of each table: the share of the generated subset's pairs
    closer than the closest pair of the real subset, from the approximate distances.

    real_rows, gen_rows: distinct indices into each table (at least 2). Cheap:
    no pixel is read. For resampling, not for reporting (no exact re-measure).
    """
    i, j = np.triu_indices(len(real_rows), k=1)
    threshold = real.sq[np.ix_(real_rows, real_rows)][i, j].min()
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
    d2 = table.sq[i, j]
    t2 = threshold ** 2
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

"""k-nearest-neighbour precision, recall, density and coverage on feature vectors.

Each point of a set gets a ball whose radius is its distance to its k-th
nearest neighbour in the same set (itself left out).
- Precision (Kynkaanniemi et al. 2019, k = 3): the share of generated points
  inside at least one real ball: fidelity, how much of the generated set looks
  real. Recall: the share of real points inside at least one generated ball:
  how much of the real variety is produced.
- Density (Naeem et al. 2020, k = 5): (1 / kM) sum over the M generated
  points of the number of real balls containing each; about 1 when the sets
  match, above 1 when generated points crowd where real ones are dense, and
  unlike precision not inflated by real outliers' large balls. Coverage: the
  share of real points whose ball holds at least one generated point.
"Inside" is distance <= radius. Distances are Euclidean in the feature space,
squared distances formed in float32 from products of centered features
(relative error ~1e-6, far below the spacing of neighbours), one block of
rows at a time, never N x N at once.
"""

import numpy as np

from mrigen.metrics._util import chunks

_CHUNK_ROWS = 512


def _prepare(real, generated):
    real, generated = np.asarray(real), np.asarray(generated)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f'expected [N, d] features of one d, got {real.shape} and {generated.shape}')
    center = real.mean(axis=0, dtype=np.float64)  # distances do not move; rounding shrinks
    return (np.asarray(real - center, np.float32), np.asarray(generated - center, np.float32))


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum('ij,ij->i', x, x, dtype=np.float64).astype(np.float32)


def _sq_distance_blocks(a: np.ndarray, b: np.ndarray):
    """Yields (start, stop, squared distances [stop - start, len(b)] float32) for row blocks of a.

    A value can be slightly negative where two points coincide.
    """
    a_sq, b_sq = _sq_norms(a), _sq_norms(b)
    for start, stop in chunks(len(a), _CHUNK_ROWS):
        d2 = a[start:stop] @ b.T  # in place from here: these blocks are most of the time
        d2 *= -2
        d2 += a_sq[start:stop, None]
        d2 += b_sq[None, :]
        yield start, stop, d2


def knn_radii(features: np.ndarray, ks=(3,)) -> dict:
    """Distance of each point to its k-th nearest other point, for each k in ks.

    features: [N, d], N > max(ks). Returns {k: [N] float64 >= 0}. An exact
    copy of a point counts as a neighbour at distance 0.
    """
    x = np.asarray(features)
    sq = _knn_sq_radii(np.asarray(x - x.mean(axis=0, dtype=np.float64), np.float32), ks)
    return {k: np.sqrt(np.maximum(v, 0).astype(np.float64)) for k, v in sq.items()}


def _knn_sq_radii(x: np.ndarray, ks) -> dict:
    """{k: [N] float32 squared distance to the k-th nearest other row of x}."""
    ks = sorted({int(k) for k in ks})
    if len(x) <= ks[-1]:
        raise ValueError(f'need more than k = {ks[-1]} points, got {len(x)}')
    out = {k: np.empty(len(x), np.float32) for k in ks}
    for start, stop, d2 in _sq_distance_blocks(x, x):
        d2[np.arange(stop - start), np.arange(start, stop)] = np.inf  # not its own neighbour
        part = np.partition(d2, [k - 1 for k in ks], axis=1)
        for k in ks:
            out[k][start:stop] = part[:, k - 1]
    return out


def prdc(real: np.ndarray, generated: np.ndarray, k_pr: int = 3, k_dc: int = 5,
         real_radii: dict | None = None) -> dict:
    """Precision and recall (k_pr) and density and coverage (k_dc) in one pass.

    real: [N, d], generated: [M, d] feature vectors (e.g. random_features).
    real_radii: knn_radii(real, (k_pr, k_dc)), to share between several
    generated sets measured against one real set (computed here if None).
    Returns {'precision', 'recall', 'coverage'} in [0, 1], 'density' in
    [0, N / k_dc] (about 1 for matching sets), and 'k_pr', 'k_dc'. Cost: the
    real-real, generated-generated and generated-real distances, (N^2 + M^2 +
    N M) d multiply-adds, in blocks of 512 rows.
    """
    return _prdc(*_prepare(real, generated), k_pr, k_dc, with_recall=True, real_radii=real_radii)


def _prdc(x: np.ndarray, y: np.ndarray, k_pr: int, k_dc: int, with_recall: bool,
          real_radii: dict | None = None) -> dict:
    if real_radii is None:
        real_sq = _knn_sq_radii(x, (k_pr, k_dc))
    else:
        real_sq = {k: np.square(real_radii[k]).astype(np.float32) for k in (k_pr, k_dc)}
    r_pr, r_dc = real_sq[k_pr], real_sq[k_dc]
    # Recall alone needs the generated set's own radii (the third distance block).
    gen_pr = _knn_sq_radii(y, (k_pr,))[k_pr] if with_recall else np.full(len(y), -np.inf, np.float32)
    in_real_ball = np.empty(len(y), bool)
    n_real_balls = np.empty(len(y), np.int64)
    nearest_gen = np.full(len(x), np.inf)
    real_in_gen_ball = np.zeros(len(x), bool)
    for start, stop, d2 in _sq_distance_blocks(y, x):
        in_real_ball[start:stop] = (d2 <= r_pr).any(axis=1)
        n_real_balls[start:stop] = (d2 <= r_dc).sum(axis=1)
        np.minimum(nearest_gen, d2.min(axis=0), out=nearest_gen)
        real_in_gen_ball |= (d2 <= gen_pr[start:stop, None]).any(axis=0)
    return {'precision': float(in_real_ball.mean()), 'recall': float(real_in_gen_ball.mean()),
            'density': float(n_real_balls.sum() / (k_dc * len(y))),
            'coverage': float(np.mean(nearest_gen <= r_dc)), 'k_pr': k_pr, 'k_dc': k_dc}


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> dict:
    """{'precision', 'recall'} in [0, 1] (Kynkaanniemi et al. 2019); see prdc."""
    result = _prdc(*_prepare(real, generated), k, k, with_recall=True)
    return {'precision': result['precision'], 'recall': result['recall']}


def density_coverage(real: np.ndarray, generated: np.ndarray, k: int = 5) -> dict:
    """{'density' >= 0, 'coverage' in [0, 1]} (Naeem et al. 2020); see prdc."""
    result = _prdc(*_prepare(real, generated), k, k, with_recall=False)
    return {'density': result['density'], 'coverage': result['coverage']}


def squared_distance_table(real: np.ndarray, others: dict) -> dict:
    """Every squared distance that prdc needs, once, for resampling without recomputing features.

    real: [N, d]; others: {name: [M, d]} feature sets. Returns {'real': [N, N]
    real-real, name: ([M, M] within the set, [M, N] set-real)}, float32, each
    point's distance to itself set to +inf. Computed blockwise exactly as prdc
    does (centered on the real mean), so prdc_from_table over all rows equals
    prdc. Memory: (N^2 + sum of M^2 + M N) float32 values, 500 MB for three
    sets of 5000.
    """
    x = _prepare(real, real)[0]
    out = {'real': _full_block(x, x, self_distance=True)}
    for name, y in others.items():
        y = _prepare(real, y)[1]
        out[name] = (_full_block(y, y, self_distance=True), _full_block(y, x))
    return out


def _full_block(a: np.ndarray, b: np.ndarray, self_distance: bool = False) -> np.ndarray:
    out = np.empty((len(a), len(b)), np.float32)
    for start, stop, d2 in _sq_distance_blocks(a, b):
        if self_distance:
            d2[np.arange(stop - start), np.arange(start, stop)] = np.inf
        out[start:stop] = d2
    return out


def real_radii_from_table(real_real: np.ndarray, real_rows=None, k_pr: int = 3, k_dc: int = 5):
    """(squared k_pr-th, squared k_dc-th neighbour distance) of each chosen real point within the
    chosen ones: [len(real_rows)] float32 each (all rows if real_rows is None)."""
    rr = real_real if real_rows is None else real_real[np.ix_(real_rows, real_rows)]
    if len(rr) <= k_dc:
        raise ValueError(f'need more than k = {k_dc} real points, got {len(rr)}')
    part = np.partition(rr, [k_pr - 1, k_dc - 1], axis=1)
    return part[:, k_pr - 1], part[:, k_dc - 1]


_NEIGHBOURS = 64  # nearest points kept per point by NeighbourLists


class NeighbourLists:
    """Each point's nearest points in a squared distance block [N, N] (self at +inf), sorted:
    the k-th nearest point within a subset of the points, without touching the block.

    For a subset, a point's k-th nearest neighbour among the subset is the
    k-th of its sorted list that belongs to the subset: with the 64 nearest
    kept and half the points chosen, the list runs short with probability
    ~1e-12, and then that point's row is partitioned in full. The values
    are the block's own entries, so they equal np.partition's exactly.
    """

    def __init__(self, block: np.ndarray, keep: int = _NEIGHBOURS):
        self.block = block
        keep = min(keep, len(block) - 1)
        part = np.argpartition(block, keep - 1, axis=1)[:, :keep] if keep < len(block) else \
            np.tile(np.arange(len(block)), (len(block), 1))
        d = np.take_along_axis(block, part, axis=1)
        order = np.argsort(d, axis=1, kind='stable')
        self.index = np.take_along_axis(part, order, axis=1)
        self.sq = np.take_along_axis(d, order, axis=1)

    def kth(self, rows, ks) -> list:
        """[len(rows)] float32 squared distance from each chosen point to its k-th nearest other
        chosen point, for each k of ks (rows: distinct indices, or None for all points)."""
        n = len(self.block)
        if rows is None:
            rows = np.arange(n)
        member = np.zeros(n, bool)
        member[rows] = True
        inside = member[self.index[rows]]  # [len(rows), keep]
        seen = np.cumsum(inside, axis=1)
        out = []
        for k in ks:
            if k > len(rows) - 1:
                raise ValueError(f'need more than k = {k} points, got {len(rows)}')
            pos = np.argmax(seen >= k, axis=1)
            value = self.sq[rows, pos]
            short = np.flatnonzero(seen[:, -1] < k)
            for i in short:  # the list ran out: the whole row among the chosen points
                row = self.block[rows[i], rows]
                value[i] = np.partition(row, k - 1)[k - 1]
            out.append(value)
        return out


def prdc_from_table(real_real: np.ndarray, gen_gen: np.ndarray, gen_real: np.ndarray,
                    real_rows=None, gen_rows=None, k_pr: int = 3, k_dc: int = 5,
                    real_radii=None, gen_radius=None) -> dict:
    """prdc of a subset of the real and generated points, from squared_distance_table's blocks.

    real_real [N, N], gen_gen [M, M], gen_real [M, N]: one set's blocks.
    real_rows, gen_rows: distinct row indices (all rows if None); each
    point's neighbours are taken within its own subset. real_radii:
    real_radii_from_table(real_real, real_rows, k_pr, k_dc), to share between
    sets (computed here if None). gen_radius: each chosen generated point's
    squared k_pr-th neighbour distance among the chosen ones (from
    gen_gen if None; NeighbourLists(gen_gen).kth gives it). Returns prdc's dict.
    """
    if real_radii is None:
        real_radii = real_radii_from_table(real_real, real_rows, k_pr, k_dc)
    r_pr, r_dc = real_radii
    n_gen = len(gen_gen) if gen_rows is None else len(gen_rows)
    if n_gen <= k_pr:
        raise ValueError(f'need more than k = {k_pr} generated points, got {n_gen}')
    if gen_radius is None:
        gg = gen_gen if gen_rows is None else gen_gen[np.ix_(gen_rows, gen_rows)]
        gen_radius = np.partition(gg, k_pr - 1, axis=1)[:, k_pr - 1]
    gen_pr = gen_radius
    if gen_rows is None and real_rows is None:
        d2 = gen_real
    else:
        d2 = gen_real[np.ix_(np.arange(len(gen_real)) if gen_rows is None else gen_rows,
                             np.arange(gen_real.shape[1]) if real_rows is None else real_rows)]
    return {'precision': float((d2 <= r_pr).any(axis=1).mean()),
            'recall': float((d2 <= gen_pr[:, None]).any(axis=0).mean()),
            'density': float((d2 <= r_dc).sum() / (k_dc * n_gen)),
            'coverage': float(np.mean(d2.min(axis=0) <= r_dc)), 'k_pr': k_pr, 'k_dc': k_dc}

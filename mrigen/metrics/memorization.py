"""Memorization check beyond the paper (docs/metrics.md).

Each generated image's L2 distance to its nearest training image, set
against the training images' own nearest-neighbour distances (leave one
out). A generator that copies its training data shows generated distances
well below the training set's own.
"""

import numpy as np

from mrigen.metrics._util import chunks, flat, save_grid_png, subsample, thread_map
from mrigen.metrics.pca import sq_norms

_CHUNK_QUERIES = 256


def nearest_neighbours(queries: np.ndarray, reference: np.ndarray, query_rows=None,
                       exclude=None, candidates: int = 4):
    """L2 nearest neighbour in reference of each selected query row.

    queries: [Q, D], reference: [R, D] float32. query_rows: [q] indices into
    queries (all rows if None). exclude: [q] index into reference that each
    query may not match (its own copy, for leave-one-out), or None.
    Squared distances come from the float32 expansion ||a||^2 + ||b||^2 - 2ab,
    one chunk of queries at a time (a chunk x R block, never q x R x D); the
    best `candidates` of each query are then re-measured exactly in float64,
    so an exact copy is at distance 0.
    Returns (distance [q] float64, index [q] int64 into reference).
    """
    rows = np.arange(len(queries)) if query_rows is None else np.asarray(query_rows)
    if len(reference) < 1 + (exclude is not None):
        raise ValueError('reference set too small')
    ref_sq = sq_norms(reference)
    candidates = min(candidates, len(reference) - (exclude is not None))
    dist, index = np.empty(len(rows)), np.empty(len(rows), np.int64)
    for start, stop in chunks(len(rows), _CHUNK_QUERIES):
        q = queries[rows[start:stop]]
        q_sq = sq_norms(q)
        d2 = q_sq[:, None] + ref_sq[None, :] - 2 * (q @ reference.T).astype(np.float64)
        if exclude is not None:
            d2[np.arange(len(q)), np.asarray(exclude)[start:stop]] = np.inf
        cand = np.argpartition(d2, candidates - 1, axis=1)[:, :candidates]
        exact = _exact_distances(q, reference, cand)
        best = np.argmin(exact, axis=1)
        dist[start:stop] = exact[np.arange(len(q)), best]
        index[start:stop] = cand[np.arange(len(q)), best]
    return dist, index


def _exact_distances(q: np.ndarray, reference: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """[len(q), K] float64 distances of q's rows to their K candidate references, in float64.

    Differences in float64 (exact for float32 inputs), a query's K rows at a
    time, each squared norm a float64 dot product.
    """
    out = np.empty(cand.shape)
    if cand.shape[1] == 0:
        return out
    buf = np.empty((cand.shape[1], q.shape[1]))
    for i in range(len(q)):
        np.subtract(reference[cand[i]], q[i], out=buf, dtype=np.float64)
        out[i] = np.sqrt(np.einsum('ij,ij->i', buf, buf))
    return out


# Pruned search for large images: a lower bound of every distance from
# pooled images, exact distances only where the bound leaves a chance.
_POOLED_SIDE = 64  # images are pooled to about this side
_PRUNE_CANDIDATES = 4  # measured exactly per query before the bound is checked
_BOUND_SLACK = 1e-4  # relative rounding allowance on the float32 bound


def pool_factor(image_shape) -> int:
    """Side of the pooling blocks for images of image_shape (H, W): 1 (no pruning) up to 127 px."""
    h, w = image_shape
    f = min(h, w) // _POOLED_SIDE
    while f > 1 and (h % f or w % f):
        f -= 1
    return max(f, 1)


def pooled(x: np.ndarray, image_shape, f: int):
    """(p [N, D / f^2] float32, residual norm [N], squared norm [N] float64) of flat images x [N, D].

    p = f * (block means over f x f blocks): the orthogonal projection of each
    image onto block-constant images, in coordinates that keep its norm, so
    ||p(a) - p(b)|| <= ||a - b||; the residual (the image minus its block
    means) has norm sqrt(||x||^2 - ||p||^2). Since the residual of a - b is
    at least | ||res(a)|| - ||res(b)|| | long,
    ||a - b||^2 >= ||p(a) - p(b)||^2 + (||res(a)|| - ||res(b)||)^2.
    Chunks of images go on all cores (thread_map).
    """
    h, w = image_shape
    out = np.empty((len(x), (h // f) * (w // f)), np.float32)

    def chunk(bounds):
        start, stop = bounds
        out[start:stop] = _block_sums(x[start:stop], h, w, f)
        out[start:stop] /= np.float32(f)  # f * mean of f * f values
        return sq_norms(x[start:stop])

    total = np.concatenate(thread_map(chunk, chunks(len(x), _CHUNK_QUERIES)) or [np.empty(0)])
    return out, _residual(out, total), total


def _block_sums(x: np.ndarray, h: int, w: int, f: int) -> np.ndarray:
    """[c, (h / f) (w / f)] float32 sums over f x f blocks of flat images x [c, h w], f >= 2."""
    c = len(x)
    b = x.reshape(c, h // f, f, w)
    rows = b[:, :, 0] + b[:, :, 1]
    for i in range(2, f):
        rows += b[:, :, i]
    r = rows.reshape(c, h // f, w // f, f)
    out = r[..., 0] + r[..., 1]
    for i in range(2, f):
        out += r[..., i]
    return out.reshape(c, -1)


def _residual(p: np.ndarray, total: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(total - sq_norms(p), 0.0))


def coarser(pooled_images, image_shape, f: int):
    """pooled(x, image_shape, 2 f) from pooled(x, image_shape, f) (its 2 x 2 block sums / 2),
    with no pass over the images: the first, coarse bound of the pruned search."""
    p, _, total = pooled_images
    out = _block_sums(p, image_shape[0] // f, image_shape[1] // f, 2)
    out /= np.float32(2)
    return out, _residual(out, total), total


def _can_coarsen(image_shape, f: int) -> bool:
    return f > 1 and image_shape[0] % (2 * f) == 0 and image_shape[1] % (2 * f) == 0


def _bound(q, ref, ref_sq) -> np.ndarray:
    """[len(q), R] float64 lower bounds of the squared distances, less the rounding slack,
    from pooled forms (pooled()'s triples) and the references' squared pooled norms."""
    q_p, q_res, _ = q
    ref_p, ref_res, _ = ref
    q_sq = sq_norms(q_p)
    bound = (q_p @ ref_p.T).astype(np.float64)
    bound *= -2
    bound += (1 - _BOUND_SLACK) * (q_sq[:, None] + ref_sq[None, :])
    bound += (q_res[:, None] - ref_res[None, :]) ** 2
    return bound


def nearest_neighbours_pruned(queries: np.ndarray, reference: np.ndarray, image_shape,
                              query_rows=None, exclude=None, reference_pooled=None,
                              reference_coarse=None):
    """nearest_neighbours for images of image_shape, exact, most distances never measured in full.

    queries [Q, D], reference [R, D] float32 flat images of shape (H, W).
    Every distance gets a lower bound from pooled images: first from blocks
    of 2f x 2f pixels (coarser(); 32 x 32 values at 256 px), then, for the
    references that bound leaves in, from blocks of f x f (pooled(), f =
    pool_factor: 1/16 of the pixels at 256 px). The 4 best-bounded
    references are measured exactly; every other reference whose bounds,
    less a rounding slack, are below the best exact distance is measured in
    float32 products, and exactly when that leaves it a chance. The result
    is the exact nearest neighbour a full search finds (tests compare with
    brute force), at a small part of its cost: most bounds rule a
    reference out. reference_pooled: pooled(reference, image_shape, f),
    reference_coarse: coarser(reference_pooled, image_shape, f), to share
    between query sets (computed here if None). Chunks of 256 queries go on
    all cores (thread_map).
    Returns (distance [q] float64, index [q] int64 into reference).
    """
    f = pool_factor(image_shape)
    rows = np.arange(len(queries)) if query_rows is None else np.asarray(query_rows)
    if len(reference) < 1 + (exclude is not None):
        raise ValueError('reference set too small')
    ref = pooled(reference, image_shape, f) if reference_pooled is None else reference_pooled
    two_levels = _can_coarsen(image_shape, f)
    if two_levels and reference_coarse is None:
        reference_coarse = coarser(ref, image_shape, f)
    ref_sq = sq_norms(ref[0])
    first = reference_coarse if two_levels else ref
    first_sq = sq_norms(first[0]) if two_levels else ref_sq
    ref_full = ref[2]
    k = min(_PRUNE_CANDIDATES, len(reference) - (exclude is not None))
    exclude = None if exclude is None else np.asarray(exclude)

    def chunk(bounds):
        start, stop = bounds
        q = queries[rows[start:stop]]
        q_pooled = pooled(q, image_shape, f)
        bound = _bound(coarser(q_pooled, image_shape, f) if two_levels else q_pooled, first, first_sq)
        ar = np.arange(len(q))
        if exclude is not None:
            bound[ar, exclude[start:stop]] = np.inf
        cand = np.argpartition(bound, k - 1, axis=1)[:, :k]
        exact = _exact_distances(q, reference, cand)
        best = np.argmin(exact, axis=1)
        d = exact[ar, best]
        i = cand[ar, best]
        bound[ar[:, None], cand] = np.inf  # measured already
        q_full = q_pooled[2]
        for j in np.flatnonzero((bound < (d * d)[:, None]).any(axis=1)):
            more = np.flatnonzero(bound[j] < d[j] * d[j])
            if two_levels:  # the finer bound, for those the coarse one left
                fine = _bound(tuple(v[j:j + 1] for v in q_pooled), tuple(v[more] for v in ref),
                              ref_sq[more])[0]
                more = more[fine < d[j] * d[j]]
            approx = q_full[j] + ref_full[more] - 2 * (reference[more] @ q[j]).astype(np.float64)
            more = more[approx - _BOUND_SLACK * (q_full[j] + ref_full[more]) < d[j] * d[j]]
            if len(more):
                more_d = _exact_distances(q[j:j + 1], reference, more[None, :])[0]
                if more_d.min() < d[j]:
                    d[j], i[j] = more_d.min(), more[np.argmin(more_d)]
        return d, i

    parts = thread_map(chunk, chunks(len(rows), _CHUNK_QUERIES))
    if not parts:
        return np.empty(0), np.empty(0, np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class TrainingIndex:
    """A training set ready for nearest-neighbour queries, its pooled forms made once.

    train: [N, H, W(, 1)] in [-1, 1]. nearest(queries, ...): nearest_neighbours'
    result for flat queries [Q, D], by the pruned search from 128 px up.
    """

    def __init__(self, train):
        self.x = flat(train)
        self.image_shape = tuple(np.shape(train)[1:3])
        f = pool_factor(self.image_shape)
        self.pooled = pooled(self.x, self.image_shape, f) if f > 1 else None
        self.coarse = (coarser(self.pooled, self.image_shape, f)
                       if f > 1 and _can_coarsen(self.image_shape, f) else None)

    def nearest(self, queries: np.ndarray, query_rows=None, exclude=None):
        if self.pooled is None:
            return nearest_neighbours(queries, self.x, query_rows, exclude)
        return nearest_neighbours_pruned(queries, self.x, self.image_shape, query_rows, exclude,
                                         self.pooled, self.coarse)


def train_nn_distances(train, n_queries: int | None = 1000, seed: int = 0,
                       index: TrainingIndex | None = None):
    """Leave-one-out nearest-neighbour distances within the training set.

    train: [N, H, W(, 1)] in [-1, 1]. n_queries training images (a seeded
    random choice; all if None) each matched against all the others.
    index: TrainingIndex(train), to share (made here if None).
    Returns (query index [q] int64, distance [q] float64).
    """
    index = index or TrainingIndex(train)
    rows = subsample(len(index.x), n_queries, np.random.default_rng([seed, 1]))
    dist, _ = index.nearest(index.x, query_rows=rows, exclude=rows)
    return rows, dist


def memorization(generated, train, n_queries: int | None = 1000,
                 n_train_queries: int | None = 1000, seed: int = 0, k_pairs: int = 8,
                 train_nn=None, index: TrainingIndex | None = None) -> dict:
    """Nearest training image of generated images vs the training set's own spacing.

    generated, train: [N, H, W(, 1)] in [-1, 1]. n_queries generated images
    (seeded random choice, all if None) are matched against every training
    image; train_nn: train_nn_distances' output, computed here with
    n_train_queries if None. index: TrainingIndex(train), to share between
    generated sets (made here if None). Distances are L2 over all pixels in
    [-1, 1] units.
    Returns {'summary': {...floats...}, 'closest_pairs': [[generated index,
    train index, distance], ...] (the k_pairs closest), and the arrays
    'query_index', 'nn_distance', 'nn_index', 'train_query_index',
    'train_nn_distance'}. summary['frac_below_train_p5'] is the fraction of
    generated images closer to a training image than the 5th percentile of
    the training set's own nearest-neighbour distances (about 0.05 when the
    generator does not copy).
    """
    index = index or TrainingIndex(train)
    gen = flat(generated)
    if gen.shape[1] != index.x.shape[1]:
        raise ValueError(f'pixel counts differ: {gen.shape[1]} vs {index.x.shape[1]}')
    rows = subsample(len(gen), n_queries, np.random.default_rng([seed, 0]))
    train_rows, train_dist = train_nn if train_nn is not None else train_nn_distances(
        train, n_train_queries, seed, index)
    dist, nn_index = index.nearest(gen, query_rows=rows)
    p5 = float(np.percentile(train_dist, 5))
    order = np.argsort(dist, kind='stable')[:k_pairs]
    return {
        'summary': {
            'n_queries': len(rows), 'n_train_queries': len(train_rows),
            'nn_mean': float(dist.mean()), 'nn_median': float(np.median(dist)),
            'nn_min': float(dist.min()),
            'train_nn_mean': float(train_dist.mean()),
            'train_nn_median': float(np.median(train_dist)),
            'train_nn_min': float(train_dist.min()), 'train_nn_p5': p5,
            'frac_below_train_p5': float(np.mean(dist < p5)),
        },
        'closest_pairs': [[int(rows[i]), int(nn_index[i]), float(dist[i])] for i in order],
        'query_index': rows, 'nn_distance': dist, 'nn_index': nn_index,
        'train_query_index': train_rows, 'train_nn_distance': train_dist,
    }


def save_closest_pairs_png(generated, train, result: dict, path, k: int = 8) -> None:
    """PNG with one row per closest pair: the generated image, then its nearest training image.

    generated, train: [N, H, W(, 1)] in [-1, 1]; result: memorization's output.
    """
    pairs = result['closest_pairs'][:k]
    gen, tr = np.asarray(generated), np.asarray(train)
    save_grid_png([np.stack([gen[g], tr[t]]) for g, t, _ in pairs], path)

"""Memorization check beyond the paper (docs/metrics.md).

Each generated image's L2 distance to its nearest training image, set
against the training images' own nearest-neighbour distances (leave one
out). A generator that copies its training data shows generated distances
well below the training set's own.
"""

import numpy as np

from mrigen.metrics._util import chunks, flat, save_grid_png, subsample
from mrigen.metrics.pca import row_stats

_CHUNK_QUERIES = 256
_CHUNK_EXACT = 32


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
    ref_sq = row_stats(reference, np.zeros(reference.shape[1]))[0]
    candidates = min(candidates, len(reference) - (exclude is not None))
    dist, index = np.empty(len(rows)), np.empty(len(rows), np.int64)
    for start, stop in chunks(len(rows), _CHUNK_QUERIES):
        q = queries[rows[start:stop]]
        q_sq = row_stats(q, np.zeros(q.shape[1]))[0]
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
    out = np.empty(cand.shape)
    for start, stop in chunks(len(q), _CHUNK_EXACT):
        diff = reference[cand[start:stop]].astype(np.float64) - q[start:stop, None].astype(np.float64)
        out[start:stop] = np.sqrt(np.einsum('ijk,ijk->ij', diff, diff))
    return out


def train_nn_distances(train, n_queries: int | None = 1000, seed: int = 0):
    """Leave-one-out nearest-neighbour distances within the training set.

    train: [N, H, W(, 1)] in [-1, 1]. n_queries training images (a seeded
    random choice; all if None) each matched against all the others.
    Returns (query index [q] int64, distance [q] float64).
    """
    x = flat(train)
    rows = subsample(len(x), n_queries, np.random.default_rng([seed, 1]))
    dist, _ = nearest_neighbours(x, x, query_rows=rows, exclude=rows)
    return rows, dist


def memorization(generated, train, n_queries: int | None = 1000,
                 n_train_queries: int | None = 1000, seed: int = 0, k_pairs: int = 8,
                 train_nn=None) -> dict:
    """Nearest training image of generated images vs the training set's own spacing.

    generated, train: [N, H, W(, 1)] in [-1, 1]. n_queries generated images
    (seeded random choice, all if None) are matched against every training
    image; train_nn: train_nn_distances' output, computed here with
    n_train_queries if None. Distances are L2 over all pixels in [-1, 1] units.
    Returns {'summary': {...floats...}, 'closest_pairs': [[generated index,
    train index, distance], ...] (the k_pairs closest), and the arrays
    'query_index', 'nn_distance', 'nn_index', 'train_query_index',
    'train_nn_distance'}. summary['frac_below_train_p5'] is the fraction of
    generated images closer to a training image than the 5th percentile of
    the training set's own nearest-neighbour distances (about 0.05 when the
    generator does not copy).
    """
    gen, tr = flat(generated), flat(train)
    if gen.shape[1] != tr.shape[1]:
        raise ValueError(f'pixel counts differ: {gen.shape[1]} vs {tr.shape[1]}')
    rows = subsample(len(gen), n_queries, np.random.default_rng([seed, 0]))
    dist, index = nearest_neighbours(gen, tr, query_rows=rows)
    train_rows, train_dist = train_nn if train_nn is not None else train_nn_distances(
        train, n_train_queries, seed)
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
        'closest_pairs': [[int(rows[i]), int(index[i]), float(dist[i])] for i in order],
        'query_index': rows, 'nn_distance': dist, 'nn_index': index,
        'train_query_index': train_rows, 'train_nn_distance': train_dist,
    }


def save_closest_pairs_png(generated, train, result: dict, path, k: int = 8) -> None:
    """PNG with one row per closest pair: the generated image, then its nearest training image.

    generated, train: [N, H, W(, 1)] in [-1, 1]; result: memorization's output.
    """
    pairs = result['closest_pairs'][:k]
    gen, tr = np.asarray(generated), np.asarray(train)
    save_grid_png([np.stack([gen[g], tr[t]]) for g, t, _ in pairs], path)

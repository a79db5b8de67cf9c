"""Kernel Inception Distance on any fixed features (Binkowski et al. 2018).

Squared maximum mean discrepancy between two feature sets with the cubic
polynomial kernel k(a, b) = (a . b / d + 1)^3, d the feature dimension,
estimated without bias: the within-set means leave out the diagonal terms
k(x_i, x_i). Unlike a Frechet distance it does not shrink as N grows, so sets
of different sizes compare fairly; it is averaged over random subsets of
equal size, which also gives a spread. Here the features are usually the
random network's (features.random_features), not Inception's: "KID" names the
estimator, not the network.
"""

import numpy as np

from mrigen.metrics._util import one_blas_thread


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a b^T / d + 1)^3 for a [n, d], b [m, d]: [n, m] float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = a @ b.T  # a symmetric product when b is a
    t /= a.shape[1]
    t += 1.0
    k = t * t  # the cube as two products: several times faster than ** 3
    k *= t
    return k


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD of x [m, d] and y [n, d] under polynomial_kernel, m, n >= 2.

    mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j).
    Its expectation is 0 when x and y come from one distribution, so a single
    estimate can be slightly negative.
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f'need at least 2 samples per set, got {m} and {n}')
    return _mmd2(_within(x), x, y)


def _within(x: np.ndarray):
    """mean_{i != j} k(x_i, x_j), x's own part of mmd2_unbiased."""
    k_xx, m = polynomial_kernel(x, x), len(x)
    return (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))


def _mmd2(within_x, x: np.ndarray, y: np.ndarray) -> float:
    return float(within_x + _within(y) - 2 * polynomial_kernel(x, y).mean())


def kid(features_a: np.ndarray, features_b: np.ndarray, subset_size: int = 100,
        n_subsets: int = 100, seed: int = 0) -> dict:
    """KID between two feature sets: mmd2_unbiased averaged over random subsets.

    features_a: [N_a, d], features_b: [N_b, d]. Each of n_subsets rounds draws
    m = min(subset_size, N_a, N_b) rows of each set without replacement
    (numpy Generator seeded with seed). Returns {'mean', 'std' (over the
    subsets; 0 when m covers both sets), 'subset_size': m, 'n_subsets'}. The
    mean is about 0 for two samples of one distribution and grows with their
    difference; usually reported x 1e3.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f'expected [N, d] features of one d, got {a.shape} and {b.shape}')
    m = min(subset_size, len(a), len(b))
    if m == len(a) == len(b):  # every round would take both sets whole
        value = mmd2_unbiased(a, b)
        return {'mean': value, 'std': 0.0, 'subset_size': m, 'n_subsets': n_subsets}
    rng = np.random.default_rng(seed)
    values = []
    # Hundreds of 100 x d products: BLAS threads cost more to wake than the
    # work (20x slower on a busy 2-core machine); one thread does them all.
    with one_blas_thread():
        for _ in range(n_subsets):
            xa = a if m == len(a) else a[rng.choice(len(a), m, replace=False)]
            xb = b if m == len(b) else b[rng.choice(len(b), m, replace=False)]
            values.append(mmd2_unbiased(xa, xb))
    return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'subset_size': m,
            'n_subsets': n_subsets}


def kid_many(features_a: np.ndarray, others: dict, subset_size: int = 100,
             n_subsets: int = 100, seed: int = 0) -> dict:
    """{name: kid(features_a, b, subset_size, n_subsets, seed)} for each b of others.

    Sets of one size meet the same subsets of features_a in every round (kid
    draws a's rows, then b's, from the same seed), so a's kernel of each
    round is computed once for all of them: the same values as separate kid
    calls.
    """
    a = np.asarray(features_a, np.float64)
    sets = {name: np.asarray(b, np.float64) for name, b in others.items()}
    sizes = {b.shape for b in sets.values()}
    m = min([subset_size, len(a)] + [len(b) for b in sets.values()])
    if len(sizes) != 1 or a.ndim != 2 or next(iter(sizes))[1:] != a.shape[1:] or \
            m == len(a) == len(next(iter(sets.values()))) or m < 2:
        return {name: kid(a, b, subset_size, n_subsets, seed) for name, b in sets.items()}
    n_b = len(next(iter(sets.values())))
    rng = np.random.default_rng(seed)
    values = {name: [] for name in sets}
    with one_blas_thread():  # as kid: many small products
        for _ in range(n_subsets):
            xa = a if m == len(a) else a[rng.choice(len(a), m, replace=False)]
            rows = None if m == n_b else rng.choice(n_b, m, replace=False)
            within_a = _within(xa)
            for name, b in sets.items():
                values[name].append(_mmd2(within_a, xa, b if rows is None else b[rows]))
    return {name: {'mean': float(np.mean(v)), 'std': float(np.std(v)), 'subset_size': m,
                   'n_subsets': n_subsets} for name, v in values.items()}

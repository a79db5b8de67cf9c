"""Evaluation metrics (docs/metrics.md), pure numpy, no pretrained networks.

The paper's rho, sigma, delta (pca), and beyond the paper SWD (swd), MS-SSIM
diversity (msssim), PCA-FD (frechet) and a nearest-neighbour memorization
check (memorization). evaluate_sets computes all of them for a generated set
and a held-out real set against a training set; report.write_report writes
them out.
"""

import numpy as np

from mrigen.metrics import frechet, memorization, msssim, pca, swd
from mrigen.metrics._util import as_float_images, subsample

METRICS = {
    'realism': pca.realism,
    'total_variation': pca.total_variation,
    'swd': swd.swd,
    'ms_ssim': msssim.ms_ssim_diversity,
    'pca_fd': frechet.pca_frechet_distance,
    'memorization': memorization.memorization,
}


def get_metric(name: str):
    """The metric function registered under name."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f'unknown metric {name!r}; known: {", ".join(sorted(METRICS))}') from None


def evaluate_sets(train, generated, real_holdout=None, basis=None, rng_seed: int = 0, *,
                  n_msssim_pairs: int = 1000, swd_max_images: int | None = 2048,
                  memorization_queries: int | None = 1000) -> dict:
    """All metrics for a generated set (and a held-out real set) against a training set.

    train, generated, real_holdout: [N, H, W(, 1)] float32 in [-1, 1] or uint8.
    basis: a PCABasis of the training set (fitted here, 16 components, if None).
    Rows 'training data', 'generated' and 'held-out real' (the real-vs-real
    floor) each get n, rho, sigma, delta and ms_ssim; the last two also get
    SWD, PCA-FD and the memorization summary against the training set. SWD
    uses the same number of images from every set. When set sizes differ,
    every row also gets sigma and delta of a seeded random subset of the
    smallest set's size (sigma_common, delta_common, n_common).
    Returns a JSON-ready dict (report.write_report writes it).
    """
    sets = {'training data': as_float_images(train), 'generated': as_float_images(generated)}
    if real_holdout is not None:
        sets['held-out real'] = as_float_images(real_holdout)
    shapes = {x.shape[1:] for x in sets.values()}
    if len(shapes) != 1:
        raise ValueError(f'image shapes differ: {shapes}')
    train = sets['training data']
    if basis is None:
        basis = pca.fit_pca_basis(train, seed=rng_seed)
    n_common = min(len(x) for x in sets.values())
    n_swd = min(n_common, swd_max_images or n_common)
    train_nn = memorization.train_nn_distances(train, memorization_queries, rng_seed)
    rows, coords = {}, {}
    for name, x in sets.items():
        coords[name], sq_norm = pca.project(x, basis)
        row = {'n': len(x), 'rho': float(pca.realism_from_projection(coords[name], sq_norm).mean())}
        row.update(_spectrum_row(x, rng_seed))
        if n_common < len(x):
            subset = x[subsample(len(x), n_common, np.random.default_rng([rng_seed, 3]))]
            row.update({f'{k}_common': v for k, v in _spectrum_row(subset, rng_seed).items()})
        row['ms_ssim'] = msssim.ms_ssim_diversity(x, n_msssim_pairs, rng_seed)
        if name == 'training data':
            row['memorization'] = {'train_nn_median': float(np.median(train_nn[1])),
                                   'train_nn_mean': float(np.mean(train_nn[1])),
                                   'n_train_queries': len(train_nn[0])}
        else:
            row['swd'] = swd.swd(train, x, max_images=n_swd, seed=rng_seed)
            row['pca_fd'] = frechet.frechet_distance(
                *frechet.gaussian_stats(coords['training data']),
                *frechet.gaussian_stats(coords[name]))
            mem = memorization.memorization(x, train, memorization_queries, seed=rng_seed,
                                            train_nn=train_nn)
            row['memorization'] = mem['summary']
            row['closest_pairs'] = mem['closest_pairs']
        rows[name] = row
    return {
        'sets': rows,
        'basis': {'n_components': basis.n_components,
                  'explained_variance_16': float(basis.explained_variance_ratio[:16].sum())},
        'config': {'rng_seed': rng_seed, 'n_msssim_pairs': n_msssim_pairs,
                   'swd_images': n_swd, 'memorization_queries': memorization_queries},
    }


def _spectrum_row(x: np.ndarray, seed: int) -> dict:
    spectrum = pca.covariance_spectrum(x, seed=seed)
    return {'n': spectrum.n, 'sigma': spectrum.sigma, 'delta': spectrum.count_above(),
            'delta_certified': spectrum.certified}


__all__ = ['METRICS', 'as_float_images', 'evaluate_sets', 'get_metric']

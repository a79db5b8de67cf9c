"""PCA-FD: Frechet distance between Gaussians fitted in the training set's PCA space.

An offline stand-in for FID (docs/metrics.md): no pretrained network, the
features are the coordinates of each image (centered on the training mean)
along the training basis directions.
"""

import numpy as np

from mrigen.metrics.pca import PCABasis, project


def gaussian_stats(features: np.ndarray):
    """Mean [K] and covariance [K, K] (ddof=1) of [N, K] features, float64."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError('need at least 2 samples for a covariance')
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def resampled_stats(features: np.ndarray, rows: np.ndarray):
    """gaussian_stats(features[rows]) for rows drawn with replacement, from each distinct row
    once with its count as a weight: the same mean and covariance (to float64 rounding) at
    about 63% of the products for a bootstrap draw."""
    counts = np.bincount(np.asarray(rows), minlength=len(features))
    if len(rows) < 2:
        raise ValueError('need at least 2 samples for a covariance')
    distinct = np.flatnonzero(counts)
    x = np.asarray(features[distinct], np.float64)
    weight = counts[distinct].astype(np.float64)
    mu = weight @ x / len(rows)
    x -= mu
    x *= np.sqrt(weight)[:, None]
    return mu, np.atleast_2d(x.T @ x / (len(rows) - 1))


def frechet_distance(mu_a, cov_a, mu_b, cov_b, root_a=None, chol_a=None) -> float:
    """||mu_a - mu_b||^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2)), >= 0.

    tr((cov_a cov_b)^(1/2)) is computed as the sum of square roots of the
    eigenvalues of the symmetric PSD matrix cov_a^(1/2) cov_b cov_a^(1/2),
    which has the same spectrum and avoids a non-symmetric sqrtm. root_a:
    psd_sqrt(cov_a), to reuse against several b (computed here if None).
    chol_a: instead, a Cholesky factor L of cov_a (cov_a = L L^T): then the
    same spectrum is that of L^T cov_b L, without cov_a's eigenvectors.
    """
    if chol_a is not None:
        middle = chol_a.T @ cov_b @ chol_a
    else:
        if root_a is None:
            root_a = psd_sqrt(cov_a)
        middle = root_a @ cov_b @ root_a
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)))
    diff = np.asarray(mu_a) - np.asarray(mu_b)
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross, 0.0))


def psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix [K, K] (negative eigenvalues taken as 0)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def pca_frechet_distance(images_a, images_b, basis: PCABasis,
                         n_components: int | None = None) -> float:
    """PCA-FD between two image sets.

    images_a, images_b: [N, H, W(, 1)] in [-1, 1]. Features: coordinates along
    the first n_components directions of the basis (all of them by default;
    a basis fitted with more than 16 components gives a finer distance).
    Returns the Frechet distance in squared pixel units (images in [-1, 1]).
    """
    feat_a, _ = project(images_a, basis, n_components)
    feat_b, _ = project(images_b, basis, n_components)
    return frechet_distance(*gaussian_stats(feat_a), *gaussian_stats(feat_b))

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


def frechet_distance(mu_a, cov_a, mu_b, cov_b, root_a=None) -> float:
    """||mu_a - mu_b||^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2)), >= 0.

    tr((cov_a cov_b)^(1/2)) is computed as the sum of square roots of the
    eigenvalues of the symmetric PSD matrix cov_a^(1/2) cov_b cov_a^(1/2),
    which has the same spectrum and avoids a non-symmetric sqrtm. root_a:
    psd_sqrt(cov_a), to reuse against several b (computed here if None).
    """
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

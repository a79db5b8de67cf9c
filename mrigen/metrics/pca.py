"""The paper's metrics (docs/metrics.md): PCA basis, realism rho, total variation sigma and delta.

All image inputs are [N, H, W, 1] or [N, H, W], float32 in [-1, 1] (uint8 is
mapped by x / 127.5 - 1). Images are flattened to D = H * W values.
"""

import dataclasses
import io
import os
import warnings

import numpy as np
from sklearn.decomposition import PCA

from mrigen.metrics._util import (
    atomic_write,
    chunks,
    flat,
    matmul,
    matmul_t,
    one_blas_thread,
    thread_map,
)

_CHUNK_ROWS = 256  # rows per float32 work buffer: 256 x 65536 x 4 B = 64 MB


@dataclasses.dataclass(frozen=True, eq=False)
class PCABasis:
    """Leading principal directions of a training set.

    mean: [D] float64, the training set's mean image.
    components: [K, D] float64, orthonormal rows E_1..E_K, leading first.
    explained_variance_ratio: [K] float64, each direction's share of the total variance.
    image_shape: (H, W) of the images the basis was fitted on.
    """
    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    image_shape: tuple[int, int]

    @property
    def n_components(self) -> int:
        return self.components.shape[0]


def fit_pca_basis(train_images, n_components: int = 16, svd_solver: str = 'randomized',
                  seed: int = 0, n_oversamples: int = 50, iterated_power: int = 10) -> PCABasis:
    """Fits the 16-direction PCA basis of the paper's metrics with scikit-learn.

    train_images: [N, H, W(, 1)] in [-1, 1]. Returns the mean image and the
    n_components leading unit directions. The randomized solver is seeded;
    scikit-learn's default 10 extra vectors and 7 power iterations left rho
    off by 0.4% on MRI-like sets (eigenvalues 15 to 17 are close), 50 and 10
    agree with svd_solver='full' (the exact reference) to ~1e-6.
    """
    x = flat(train_images)
    pca = PCA(n_components=n_components, svd_solver=svd_solver, random_state=seed,
              n_oversamples=n_oversamples, iterated_power=iterated_power)
    pca.fit(x)
    return PCABasis(mean=column_mean(x),
                    components=_orthonormal_rows(pca.components_.astype(np.float64)),
                    explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float64),
                    image_shape=tuple(int(s) for s in np.shape(train_images)[1:3]))


def _orthonormal_rows(c: np.ndarray) -> np.ndarray:
    """Rows made orthonormal in float64 (float32 fits are so to ~1e-6), each kept on its side."""
    q, r = np.linalg.qr(c.T)
    return (q * np.sign(np.diag(r))).T


def save_basis(basis: PCABasis, path) -> None:
    """Writes the basis as an .npz of plain arrays (no pickle), atomically."""
    buf = io.BytesIO()
    np.savez(buf, mean=basis.mean, components=basis.components,
             explained_variance_ratio=basis.explained_variance_ratio,
             image_shape=np.asarray(basis.image_shape, np.int64))
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def load_basis(path) -> PCABasis:
    """Reads a basis written by save_basis; refuses pickled content."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        return PCABasis(mean=z['mean'], components=z['components'],
                        explained_variance_ratio=z['explained_variance_ratio'],
                        image_shape=tuple(int(s) for s in z['image_shape']))


def column_mean(x: np.ndarray) -> np.ndarray:
    """Mean row of x [N, D] float32 as [D] float64: float32 sums of row chunks, added in float64
    (in chunk order; the chunks summed on all cores)."""
    total = np.zeros(x.shape[1])
    for part in thread_map(lambda c: x[c[0]:c[1]].sum(axis=0), chunks(x.shape[0], _CHUNK_ROWS)):
        total += part
    return total / x.shape[0]


def row_stats(x: np.ndarray, center: np.ndarray, directions: np.ndarray | None = None,
              shift: np.ndarray | None = None):
    """Statistics of the rows of x - center, one chunk of rows at a time.

    x: [N, D] float32. center: [D]. directions: [K, D] or None.
    Returns float64 (sq_norm [N], mean [N], proj [N, K] or None): each
    centered row's squared L2 norm, its mean over the D values, and its dot
    products with the directions. The work is float32 (numpy's float64 passes
    over 3 GB cost twice as much); sums run over short blocks and the
    partial sums are added in float64, which keeps them to ~1e-7 relative.
    shift: [D] or None; if given, also (sq_norm, mean) of the rows of
    x - center - shift (a second center), from the same pass over x, as
    two more values (the chunk is still in cache).
    """
    n, d = x.shape
    center = np.asarray(center, np.float32)
    sq_norm, mean = np.empty(n), np.empty(n)
    proj = None if directions is None else np.empty((n, directions.shape[0]))
    dirs_t = None if directions is None else np.ascontiguousarray(directions, np.float32).T
    shift = None if shift is None else np.asarray(shift, np.float32)
    sq_norm2, mean2 = (np.empty(n), np.empty(n)) if shift is not None else (None, None)
    block = _sum_block(d)

    def norms(b, start, stop, sq_out, mean_out):
        b3 = b.reshape(len(b), -1, block)
        sq_out[start:stop] = np.einsum('ijk,ijk->ij', b3, b3).sum(axis=1, dtype=np.float64)
        mean_out[start:stop] = b.sum(axis=1).astype(np.float64) / d  # pairwise summation

    def chunk(bounds):  # chunks on all cores, each written in place
        start, stop = bounds
        b = np.subtract(x[start:stop], center)
        norms(b, start, stop, sq_norm, mean)
        if proj is not None:
            proj[start:stop] = b @ dirs_t
        if shift is not None:
            b -= shift
            norms(b, start, stop, sq_norm2, mean2)

    rows = _CHUNK_ROWS if shift is None else _CHUNK_ROWS // 8  # 8 MB chunks: reread from cache
    thread_map(chunk, chunks(n, rows))
    if shift is not None:
        return sq_norm, mean, proj, sq_norm2, mean2
    return sq_norm, mean, proj


def sq_norms(x: np.ndarray) -> np.ndarray:
    """Squared L2 norm of each row of x [N, D] float32, [N] float64: row_stats(x, 0)[0]
    (the same float32 partial sums added in float64) without its copy and mean."""
    n, d = x.shape
    block = _sum_block(d)
    out = np.empty(n)

    def chunk(bounds):
        start, stop = bounds
        b3 = x[start:stop].reshape(stop - start, -1, block)
        out[start:stop] = np.einsum('ijk,ijk->ij', b3, b3).sum(axis=1, dtype=np.float64)

    thread_map(chunk, chunks(n, _CHUNK_ROWS))
    return out


def _sum_block(d: int) -> int:
    """Largest divisor of d not above 256: the length of the float32 partial sums."""
    return max(b for b in range(1, min(d, 256) + 1) if d % b == 0)


def project(images, basis: PCABasis, n_components: int | None = None):
    """Coordinates of the images, centered on the basis mean, in the basis.

    images: [N, H, W(, 1)] in [-1, 1]. Returns (coords [N, K] float64,
    sq_norm [N] float64 = ||g - mu||^2), K = n_components or all of the basis.
    """
    x = flat(images)
    if x.shape[1] != basis.mean.shape[0]:
        raise ValueError(f'images have {x.shape[1]} pixels, the basis {basis.mean.shape[0]}')
    k = basis.n_components if n_components is None else n_components
    sq_norm, _, coords = row_stats(x, basis.mean, basis.components[:k])
    return coords, sq_norm


def realism_from_projection(coords: np.ndarray, sq_norm: np.ndarray, n_components: int = 16):
    """rho per image from project()'s output: ||E (g - mu)|| / ||g - mu||, [N] in [0, 1]."""
    if coords.shape[1] < n_components:
        raise ValueError(f'realism needs {n_components} components, got {coords.shape[1]}')
    cos2 = np.sum(coords[:, :n_components] ** 2, axis=1) / sq_norm
    return np.sqrt(np.minimum(cos2, 1.0))


def realism(images, basis: PCABasis, n_components: int = 16):
    """Realism rho (docs/metrics.md) of a set against the training basis.

    images: [N, H, W(, 1)] in [-1, 1]. For each image g, v = (g - mu) / ||g - mu||
    and rho(g) = sqrt(sum_i (E_i . v)^2) over the n_components leading
    directions: the cosine between the centered image and that subspace.
    Returns (rho [N] float64 in [0, 1], mean rho as a float).
    """
    if basis.n_components < n_components:
        raise ValueError(f'basis has {basis.n_components} components, realism needs {n_components}')
    coords, sq_norm = project(images, basis, n_components)
    rho = realism_from_projection(coords, sq_norm, n_components)
    return rho, float(rho.mean())


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """Leading spectrum of a set's N x N pixel covariance (np.cov with images as rows).

    sigma: trace of the covariance. eigenvalues: [M] float64, sorted descending:
    all N of them (exact path), or the M Ritz values of the Krylov basis
    (iterative path), converged only as far as the count needs: each one at
    or above half the threshold lies on the same side of the threshold as a
    true eigenvalue (within its residual norm); each is a lower bound of its
    eigenvalue, the largest ones within ~1e-3 of it (the basis stops growing
    once the count is certain).
    n: number of images. certified: whether that convergence test passed.
    """
    sigma: float
    eigenvalues: np.ndarray
    n: int
    certified: bool

    def count_above(self, fraction: float = 0.01) -> int:
        return int(np.count_nonzero(self.eigenvalues > fraction * self.sigma))


MIN_RANDOM_START = 8  # random columns in the Krylov start, beside any given start vectors


def covariance_spectrum(images, *, fraction: float = 0.01, exact_max_n: int = 256,
                        block_size: int = 24, max_basis: int = 1024, seed: int = 0,
                        start: np.ndarray | None = None) -> Spectrum:
    """sigma and the leading eigenvalues of the set's covariance, never forming N x N.

    images: [N, H, W(, 1)] in [-1, 1]. Y is the data with the set's mean image
    subtracted and then each image's own pixel mean (np.cov(X) semantics);
    the covariance is C = Y Y^T / (D - 1) and sigma its trace.

    Up to exact_max_n images: all eigenvalues, from a thin SVD of Y (float64).
    Above: seeded block Krylov (block Lanczos with full reorthogonalization)
    on C, applied as two float32 products with the N x D data per block, with
    Rayleigh-Ritz on the whole basis after each block. It stops once the
    basis has a converged Ritz value below half the threshold fraction *
    sigma and every Ritz value above that is closer to an eigenvalue
    (residual norm) than to the threshold: the count above the threshold is
    then exact, barring a random start orthogonal to an eigenvector. At most
    1 / fraction eigenvalues can exceed the threshold, so the basis stays
    small.

    The first block holds start's columns, if given ([N, j] image-space
    vectors, e.g. the images' coordinates along the training set's PCA
    basis, pca.project, which lie close to the leading eigenvectors), and Y
    times max(block_size - j, MIN_RANDOM_START) seeded random pixel-space
    vectors, taken in the same pass over the data as sigma. The start only
    decides how soon the test passes, never the count it certifies: on the
    benchmark sets of 4,096 and 11,328 MRI-like images, 16 PCA coordinates
    and 8 random vectors pass it after 2 blocks of 24 (4 more passes, 104
    columns in all, where 64 random vectors needed 2 blocks of 64: 320).
    """
    x = flat(images)
    n, d = x.shape
    if n < 2 or d < 2:
        raise ValueError(f'need at least 2 images of at least 2 pixels, got {x.shape}')
    set_mean = column_mean(x)
    if n <= exact_max_n:
        sq_norm, row_mean, _ = row_stats(x, set_mean)
        sigma = float(np.sum(sq_norm - d * row_mean ** 2) / (d - 1))
        return Spectrum(sigma, _exact_eigenvalues(x, set_mean), n, True)
    given = np.zeros((n, 0)) if start is None else np.asarray(start, np.float64).reshape(n, -1)
    n_random = min(max(block_size - given.shape[1], MIN_RANDOM_START), n - given.shape[1])
    omega = _centered(np.random.default_rng(seed).standard_normal((d, n_random)))
    sq_norm, row_mean, y_omega = row_stats(x, set_mean, omega.T)  # one pass: sigma and Y omega
    sigma = float(np.sum(sq_norm - d * row_mean ** 2) / (d - 1))
    threshold = fraction * sigma
    with one_blas_thread():  # the small dense algebra; the passes over x share out the cores
        eig, certified = _leading_eigenvalues(x, threshold, np.hstack([given, y_omega]),
                                              min(max_basis, n))
    if not certified:
        warnings.warn(f'delta not certified: eigenvalues near the threshold {threshold:.6g} '
                      f'did not converge within a basis of {max_basis}', RuntimeWarning)
    return Spectrum(sigma, eig, n, certified)


def project_and_spectrum(images, basis: PCABasis, *, fraction: float = 0.01,
                         exact_max_n: int = 256, block_size: int = 24, max_basis: int = 1024,
                         seed: int = 0):
    """project(images, basis) and covariance_spectrum(images, start=its coordinates, ...)
    with one pass over the images fewer.

    The pass that projects the images (centered on the basis mean) also
    takes the Krylov start's random products and, the chunk still in
    cache, the images centered on their own mean for sigma: the same sums
    as the two functions make (to float32 rounding; the training set the
    basis was fitted on, whose mean is the basis mean, gets the same
    bits). Returns (coords [N, K], sq_norm [N], Spectrum).
    """
    x = flat(images)
    n, d = x.shape
    if x.shape[1] != basis.mean.shape[0]:
        raise ValueError(f'images have {x.shape[1]} pixels, the basis {basis.mean.shape[0]}')
    if n <= exact_max_n or n < 2 or d < 2:
        coords, sq_norm = project(images, basis)
        return coords, sq_norm, covariance_spectrum(
            images, fraction=fraction, exact_max_n=exact_max_n, block_size=block_size,
            max_basis=max_basis, seed=seed, start=coords)
    k = basis.n_components
    set_mean = column_mean(x)
    center = np.asarray(basis.mean, np.float32)
    # x - set mean as (x - basis mean) - shift, both in float32 as row_stats does.
    shift = set_mean.astype(np.float32) - center
    same_center = not np.any(shift)  # the basis's own training set: x - set mean is x - center
    n_random = min(max(block_size - k, MIN_RANDOM_START), n - k)
    omega = _centered(np.random.default_rng(seed).standard_normal((d, n_random)))
    directions = np.vstack([basis.components, omega.T])
    if same_center:
        sq_norm, mean_set, proj = row_stats(x, basis.mean, directions)
        sq_set = sq_norm
    else:
        sq_norm, _, proj, sq_set, mean_set = row_stats(x, basis.mean, directions, shift=shift)
    coords = proj[:, :k]
    sigma = float(np.sum(sq_set - d * mean_set ** 2) / (d - 1))
    threshold = fraction * sigma
    with one_blas_thread():
        # The random part of the start is (x - basis mean) omega, which differs from
        # (x - set mean) omega by one row for all images: the centering removes it.
        eig, certified = _leading_eigenvalues(x, threshold, proj, min(max_basis, n))
    if not certified:
        warnings.warn(f'delta not certified: eigenvalues near the threshold {threshold:.6g} '
                      f'did not converge within a basis of {max_basis}', RuntimeWarning)
    return coords, sq_norm, Spectrum(sigma, eig, n, certified)


def total_variation(images, **kwargs):
    """Total variation sigma and delta (docs/metrics.md).

    images: [N, H, W(, 1)] in [-1, 1]. Returns (sigma, delta, N): sigma the trace
    of np.cov(Y) with images as rows (it grows with N: compare equal-size
    sets), delta the number of its eigenvalues greater than 1% of sigma.
    kwargs go to covariance_spectrum.
    """
    spectrum = covariance_spectrum(images, **kwargs)
    return spectrum.sigma, spectrum.count_above(kwargs.get('fraction', 0.01)), spectrum.n


def _exact_eigenvalues(x: np.ndarray, set_mean: np.ndarray) -> np.ndarray:
    y = x - set_mean
    y -= y.mean(axis=1, keepdims=True)
    s = np.linalg.svd(y, compute_uv=False)
    return s ** 2 / (x.shape[1] - 1)


def _leading_eigenvalues(x, threshold, start, max_basis):
    """Ritz values (descending) of C = Y Y^T / (D - 1), Y = P_N x P_D, by block Krylov.

    start: [N, k] the first block, before centering and orthonormalization.
    The centering projections are applied to the thin factors, so x is only
    ever read, never copied. Returns (ritz values, certified).
    """
    n, d = x.shape

    def cov_dot(q):  # [N, k] -> C q, [N, k]
        z = matmul_t(q.astype(np.float32), x).astype(np.float64)  # q is centered: P_N q = q
        z -= z.mean(axis=1, keepdims=True)
        w = matmul(x, z.T.astype(np.float32)).astype(np.float64)
        return (w - w.mean(axis=0)) / (d - 1)

    # Starting from Y times random pixel-space vectors (one pass, shared with
    # sigma's) rather than random image-space vectors puts the start half a
    # step into the Krylov space: it saves about one block of two passes.
    block = _orthonormal(_centered(start))
    q_all = np.zeros((n, 0))
    w_all = np.zeros((n, 0))
    h = np.zeros((0, 0))
    while True:
        w_block = cov_dot(block)
        cross = q_all.T @ w_block
        h = np.block([[h, cross], [cross.T, block.T @ w_block]])
        q_all = np.hstack([q_all, block])
        w_all = np.hstack([w_all, w_block])
        theta, s = np.linalg.eigh((h + h.T) / 2)
        theta, s = theta[::-1], s[:, ::-1]
        m = q_all.shape[1]
        r = min(m, int(np.count_nonzero(theta >= threshold / 2)) + 1)
        residual = np.linalg.norm(w_all @ s[:, :r] - q_all @ (s[:, :r] * theta[:r]), axis=0)
        if m >= n or _converged(theta[:r], residual, threshold):
            return theta, True
        k = min(block.shape[1], max_basis - m)
        if k <= 0:
            return theta, False
        block = _next_block(w_block[:, :k], q_all)


def _next_block(w, q_all):
    """Orthonormal block spanning w with the basis q_all projected out (twice, for rounding)."""
    w = _centered(w)
    for _ in range(2):
        w = w - q_all @ (q_all.T @ w)
    return _orthonormal(w)


def _centered(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=0)


def _converged(theta, residual, threshold) -> bool:
    """theta: the leading Ritz values down to the first one below threshold / 2."""
    # The j-th Ritz value is a lower bound of the j-th eigenvalue (interlacing),
    # and some eigenvalue lies within its residual norm of it. Every interval
    # must exclude the threshold. The last Ritz value, below threshold / 2,
    # must also be a real approximation (residual under half its value, which
    # a Rayleigh quotient of a still random direction is not): the basis has
    # then resolved the spectrum down past the threshold, and an eigenvalue
    # above it could only be missed if the random start were orthogonal to
    # its eigenvector.
    if theta[-1] >= threshold / 2:
        return False
    return bool(np.all(residual < np.abs(theta - threshold)) and residual[-1] < theta[-1] / 2)


def _orthonormal(a: np.ndarray) -> np.ndarray:
    return np.linalg.qr(a)[0]

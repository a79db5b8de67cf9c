"""MS-SSIM diversity of one image set (docs/metrics.md).

Mean MS-SSIM over random pairs of images of the same set: lower is more
diverse. 5 scales with weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333;
Gaussian window 11, sigma 1.5 ('valid' filtering); K1 0.01, K2 0.03; 2x2
average downsampling between scales; each scale's value clipped to >= 0
before the weighted product (as tf.image.ssim_multiscale).

Images in [-1, 1] have data range L = 2. Where a coarse scale is smaller
than 11 pixels (images under 176 pixels a side) the window shrinks to the
scale's size instead of failing as TensorFlow's does; 256x256 images never
need it.
"""

import functools

import numpy as np

from mrigen.metrics._util import as_float_images, chunks, separable

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03
WINDOW, SIGMA = 11, 1.5
DATA_RANGE = 2.0  # images in [-1, 1]
_CHUNK_PAIRS = 32


def gaussian_window(size: int, sigma: float = SIGMA) -> np.ndarray:
    """[size] float64 Gaussian weights centered at (size - 1) / 2, summing to 1."""
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


@functools.lru_cache(maxsize=None)
def _valid_filter_matrix(n: int) -> np.ndarray:
    """[n - size + 1, n] float32, size = min(WINDOW, n): row i holds the Gaussian
    window at columns i .. i + size - 1 ('valid' filtering)."""
    # At coarse scales of small images the 11-pixel window does not fit: it
    # shrinks to the image (same sigma, renormalized), so the coarsest
    # scales of a 32x32 image use 8, 4 and 2 pixel windows.
    window = gaussian_window(min(WINDOW, n))
    size = len(window)
    m = np.zeros((n - size + 1, n), np.float32)
    for i in range(n - size + 1):
        m[i, i:i + size] = window
    m.flags.writeable = False  # cached and shared
    return m


_BAND_BLOCK = 64  # output rows per block of the banded filter


def _valid_filter(x: np.ndarray) -> np.ndarray:
    """The Gaussian window over both axes of x [N, h, w], 'valid': [N, h - s + 1, w - s + 1].

    The same product as separable(x, _valid_filter_matrix(h), ...), taken in
    blocks of 64 output rows that read only the 64 + s - 1 input rows they
    need: at 256 px a quarter of the dense product's multiply-adds.
    """
    n, h, w = x.shape
    rows, cols = _valid_filter_matrix(h), _valid_filter_matrix(w)
    if min(h, w) < 4 * _BAND_BLOCK:
        return separable(x, rows, cols)
    reach = h - rows.shape[0]  # window size - 1
    y = np.empty((n, rows.shape[0], w), np.float32)
    for i0 in range(0, rows.shape[0], _BAND_BLOCK):
        i1 = min(i0 + _BAND_BLOCK, rows.shape[0])
        y[:, i0:i1] = np.moveaxis(np.tensordot(rows[i0:i1, i0:i1 + reach], x[:, i0:i1 + reach],
                                               axes=(1, 1)), 0, 1)
    out = np.empty((n, rows.shape[0], cols.shape[0]), np.float32)
    reach = w - cols.shape[0]
    for j0 in range(0, cols.shape[0], _BAND_BLOCK):
        j1 = min(j0 + _BAND_BLOCK, cols.shape[0])
        out[:, :, j0:j1] = y[:, :, j0:j1 + reach] @ cols[j0:j1, j0:j1 + reach].T
    return out


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average; an odd last row or column is dropped."""
    n, h, w = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def _ssim_terms(x: np.ndarray, y: np.ndarray):
    """Per pair mean of the contrast-structure map and of the full SSIM map, float64 [P]."""
    p = len(x)
    maps = _valid_filter(np.concatenate([x, y, x * x, y * y, x * y]))
    mu_x, mu_y, xx, yy, xy = maps.reshape(5, p, *maps.shape[1:])
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return cs.mean(axis=(1, 2), dtype=np.float64), (lum * cs).mean(axis=(1, 2), dtype=np.float64)


def ms_ssim(images_a, images_b) -> np.ndarray:
    """MS-SSIM of each pair (a[i], b[i]).

    images_a, images_b: [P, H, W(, 1)] in [-1, 1] (data range 2), H, W >= 16.
    They are shifted to [0, 2] first: SSIM's luminance term assumes
    non-negative intensities, and on [0, 2] with range 2 the value equals
    MS-SSIM of the 8-bit images with range 255 (up to quantization).
    Returns [P] float64 in [0, 1]; identical images give 1.
    """
    x = as_float_images(images_a) + np.float32(1)
    y = as_float_images(images_b) + np.float32(1)
    if x.shape != y.shape:
        raise ValueError(f'shapes differ: {x.shape} vs {y.shape}')
    if min(x.shape[1:]) < 2 ** (len(WEIGHTS) - 1):
        raise ValueError(f'{len(WEIGHTS)} scales need images of at least '
                         f'{2 ** (len(WEIGHTS) - 1)} pixels a side, got {x.shape[1:]}')
    values = []
    for scale in range(len(WEIGHTS)):
        if scale:
            x, y = _downsample(x), _downsample(y)
        cs, ssim = _ssim_terms(x, y)
        values.append(cs if scale < len(WEIGHTS) - 1 else ssim)
    values = np.maximum(np.stack(values, axis=1), 0.0)
    return np.prod(values ** np.asarray(WEIGHTS), axis=1)


def random_pairs(n: int, n_pairs: int, seed: int = 0) -> np.ndarray:
    """[n_pairs, 2] int indices of seeded random pairs of distinct images of range(n)."""
    if n < 2:
        raise ValueError('need at least 2 images to form pairs')
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, n_pairs)
    second = (first + rng.integers(1, n, n_pairs)) % n
    return np.stack([first, second], axis=1)


def ms_ssim_diversity(images, n_pairs: int = 1000, seed: int = 0) -> float:
    """Mean MS-SSIM over n_pairs seeded random pairs of distinct images of one set.

    images: [N, H, W(, 1)] in [-1, 1]. Returns a float in [0, 1]; lower is more
    diverse. Compare with the same number of pairs of a real set.
    """
    return float(ms_ssim_pairs(images, n_pairs, seed)[1].mean())


def ms_ssim_pairs(images, n_pairs: int = 1000, seed: int = 0):
    """The pairs ms_ssim_diversity averages, and each pair's MS-SSIM.

    images: [N, H, W(, 1)] in [-1, 1]. Returns (pairs [n_pairs, 2] int, from
    random_pairs(N, n_pairs, seed); values [n_pairs] float64 in [0, 1]).
    """
    x = as_float_images(images)
    pairs = random_pairs(len(x), n_pairs, seed)
    values = np.empty(len(pairs))
    for start, stop in chunks(len(pairs), _CHUNK_PAIRS):
        p = pairs[start:stop]
        values[start:stop] = ms_ssim(x[p[:, 0]], x[p[:, 1]])
    return pairs, values

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

from mrigen.metrics._util import (  # noqa: F401 (separable: the tests' dense reference)
    as_float_images,
    band_blocks,
    banded_first,
    banded_last,
    chunks,
    separable,
    thread_map,
)

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03
WINDOW, SIGMA = 11, 1.5
DATA_RANGE = 2.0  # images in [-1, 1]
_CHUNK_PAIRS = 8  # pairs per chunk: its maps (8 MB at 256 px) stay in cache


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


_BAND_BLOCK = 32  # output rows (columns) per block of the banded filter


@functools.cache
def _band_blocks(n: int) -> tuple:
    """_valid_filter_matrix(n) as band_blocks: blocks of 32 output rows from 128 px, else one."""
    return band_blocks(_valid_filter_matrix(n), _BAND_BLOCK if n >= 4 * _BAND_BLOCK else n)


def _filter_hmw(x: np.ndarray) -> np.ndarray:
    """The Gaussian window over axes 0 and 2 of x [h, M, w] float32, 'valid': [h - s + 1, M, w - s + 1].

    Images are laid out rows first ([row, image, column]), so that both
    axes are plain 2-D products, no transposes: along the columns
    x.reshape(h M, w) times the window matrix, along the rows the window
    matrix times x.reshape(h, M w). From 128 px the window matrices are
    applied in blocks of 32 output rows that read only the 32 + s - 1
    input rows they need (band_blocks): at 256 px a sixth of the dense
    product's multiply-adds.
    """
    h, m, w = x.shape
    y = banded_last(x.reshape(h * m, w), _band_blocks(w))
    w_out = y.shape[1]
    return banded_first(y.reshape(h, m * w_out), _band_blocks(h)).reshape(-1, m, w_out)


def _valid_filter(x: np.ndarray) -> np.ndarray:
    """The Gaussian window over both axes of x [N, h, w], 'valid': [N, h - s + 1, w - s + 1].

    The same product as separable(x, _valid_filter_matrix(h), ...), by _filter_hmw.
    """
    out = _filter_hmw(np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float32), 0, 1)))
    return np.ascontiguousarray(np.moveaxis(out, 1, 0))


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average of x [h, P, w] over axes 0 and 2; an odd last row or column is dropped."""
    h, _, w = x.shape
    x = x[:h // 2 * 2, :, :w // 2 * 2]
    return 0.25 * (x[0::2, :, 0::2] + x[1::2, :, 0::2] + x[0::2, :, 1::2] + x[1::2, :, 1::2])


def _map_mean(m: np.ndarray) -> np.ndarray:
    """Mean of each map of m [h, P, w] float32, float64 [P]: float32 row sums added in float64."""
    return m.sum(axis=2).sum(axis=0, dtype=np.float64) / (m.shape[0] * m.shape[2])


def _ssim_terms(x: np.ndarray, y: np.ndarray, luminance: bool = True):
    """Per pair mean of the contrast-structure map, and of the full SSIM map if luminance
    (else None), float64 [P], for x, y [h, P, w] in [0, 2].

    Four filtered maps per pair: mu_x, mu_y, and those of x^2 + y^2 and x y,
    since SSIM needs the variances only as var_x + var_y.
    """
    h, p, w = x.shape
    maps = np.empty((h, 4 * p, w), np.float32)
    maps[:, :p], maps[:, p:2 * p] = x, y
    sq, xy = maps[:, 2 * p:3 * p], maps[:, 3 * p:]
    np.multiply(x, x, out=sq)
    np.multiply(y, y, out=xy)
    sq += xy
    np.multiply(x, y, out=xy)
    f = _filter_hmw(maps)  # a fresh array: worked on in place from here
    mu_x, mu_y, sq, xy = f[:, :p], f[:, p:2 * p], f[:, 2 * p:3 * p], f[:, 3 * p:]
    c1, c2 = np.float32((K1 * DATA_RANGE) ** 2), np.float32((K2 * DATA_RANGE) ** 2)
    mu_xy = mu_x * mu_y
    mu_sq = mu_x * mu_x
    mu_y *= mu_y
    mu_sq += mu_y
    xy -= mu_xy  # the covariance
    xy *= 2
    xy += c2
    sq -= mu_sq  # var_x + var_y
    sq += c2
    cs = np.divide(xy, sq, out=xy)
    if not luminance:
        return _map_mean(cs), None
    lum = np.multiply(mu_xy, 2, out=mu_xy)
    lum += c1
    mu_sq += c1
    lum /= mu_sq
    lum *= cs
    return _map_mean(cs), _map_mean(lum)


def _ms_ssim_rows_first(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """MS-SSIM of each pair of x, y [H, P, W] float32 in [0, 2] (rows-first layout): [P] float64."""
    values = []
    for scale in range(len(WEIGHTS)):
        last = scale == len(WEIGHTS) - 1
        if scale:
            x, y = _downsample(x), _downsample(y)
        cs, ssim = _ssim_terms(x, y, luminance=last)
        values.append(ssim if last else cs)
    values = np.maximum(np.stack(values, axis=1), 0.0)
    return np.prod(values ** np.asarray(WEIGHTS), axis=1)


def _rows_first(images: np.ndarray, index=None) -> np.ndarray:
    """images[index] [P, H, W] (all if None) shifted to [0, 2] and laid out [H, P, W]."""
    x = images if index is None else images[index]
    out = np.empty((x.shape[1], x.shape[0], x.shape[2]), np.float32)
    np.add(np.moveaxis(x, 0, 1), np.float32(1), out=out)
    return out


def ms_ssim(images_a, images_b) -> np.ndarray:
    """MS-SSIM of each pair (a[i], b[i]).

    images_a, images_b: [P, H, W(, 1)] in [-1, 1] (data range 2), H, W >= 16.
    They are shifted to [0, 2] first: SSIM's luminance term assumes
    non-negative intensities, and on [0, 2] with range 2 the value equals
    MS-SSIM of the 8-bit images with range 255 (up to quantization).
    Returns [P] float64 in [0, 1]; identical images give 1. Pairs go in
    chunks of 8, spread over the cores (thread_map).
    """
    a, b = as_float_images(images_a), as_float_images(images_b)
    if a.shape != b.shape:
        raise ValueError(f'shapes differ: {a.shape} vs {b.shape}')
    _check_size(a.shape[1:])
    parts = thread_map(lambda c: _ms_ssim_rows_first(_rows_first(a[c[0]:c[1]]), _rows_first(b[c[0]:c[1]])),
                       chunks(len(a), _CHUNK_PAIRS))
    return np.concatenate(parts) if parts else np.empty(0)


def _check_size(shape) -> None:
    if min(shape) < 2 ** (len(WEIGHTS) - 1):
        raise ValueError(f'{len(WEIGHTS)} scales need images of at least '
                         f'{2 ** (len(WEIGHTS) - 1)} pixels a side, got {tuple(shape)}')


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
    _check_size(x.shape[1:])
    pairs = random_pairs(len(x), n_pairs, seed)

    def chunk(c):  # the same chunks as ms_ssim(x[pairs[:, 0]], x[pairs[:, 1]]), gathered here
        p = pairs[c[0]:c[1]]
        return _ms_ssim_rows_first(_rows_first(x, p[:, 0]), _rows_first(x, p[:, 1]))

    parts = thread_map(chunk, chunks(len(pairs), _CHUNK_PAIRS))
    return pairs, (np.concatenate(parts) if parts else np.empty(0))

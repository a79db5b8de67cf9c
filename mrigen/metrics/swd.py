"""Sliced Wasserstein distance between two image sets on Laplacian pyramids.

Karras et al. 2018 (ProGAN), as docs/metrics.md restates it: pyramid levels
from full resolution down to 16x16 (5x5 binomial filter, mirror padding),
128 random 7x7 patches per image per level, each set's patches normalized by
their own mean and standard deviation, 4 repeats x 128 random unit
directions, distance = mean absolute difference of the sorted projections,
reported x 1e3 per level and averaged over levels.
"""

import functools

import numpy as np

from mrigen.metrics._util import as_float_images, chunks, separable, subsample

_BINOMIAL = np.array([1, 4, 6, 4, 1], np.float64) / 16
_PATCH = 7
_CHUNK_IMAGES = 128


@functools.lru_cache(maxsize=None)
def filter_matrix(n: int) -> np.ndarray:
    """[n, n] matrix applying the 5-tap binomial filter along one axis, mirror padding.

    Mirror as scipy.ndimage's 'mirror' (numpy's 'reflect'): d c b | a b c d | c b a.
    """
    m = np.zeros((n, n))
    for i in range(n):
        for offset, weight in zip(range(-2, 3), _BINOMIAL):
            m[i, _mirror(i + offset, n)] += weight
    m.flags.writeable = False  # cached and shared
    return m


def _mirror(j: int, n: int) -> int:
    if n == 1:
        return 0
    period = 2 * (n - 1)
    j %= period
    return j if j < n else period - j


def laplacian_pyramid(images, min_resolution: int = 16) -> list[np.ndarray]:
    """Laplacian pyramid, finest level first, down to the last side >= min_resolution.

    images: [N, H, W(, 1)] in [-1, 1]. Returns float32 levels [N, h, w]: band-pass
    levels G_i - up(G_{i+1}), then the low-pass G_last. Down: binomial filter
    (mirror padding), keep even pixels. Up: zeros between pixels, filter, x4
    (cv2.pyrDown / pyrUp, as Karras et al.'s sliced_wasserstein.py).
    """
    gauss = [as_float_images(images)]
    while min(gauss[-1].shape[1:]) // 2 >= min_resolution:
        g = gauss[-1]
        down = [filter_matrix(s)[::2].astype(np.float32) for s in g.shape[1:]]
        gauss.append(separable(g, *down))
    levels = []
    for fine, coarse in zip(gauss[:-1], gauss[1:]):
        up = [(2 * filter_matrix(s)[:, ::2]).astype(np.float32) for s in fine.shape[1:]]
        levels.append(fine - separable(coarse, *up))
    return levels + [gauss[-1]]


def _patches(level: np.ndarray, rng: np.random.Generator, per_image: int) -> np.ndarray:
    """per_image random 7x7 patches of each image: [N * per_image, 49] float32."""
    n, h, w = level.shape
    half = _PATCH // 2
    ys = rng.integers(half, h - half, size=(n, per_image))
    xs = rng.integers(half, w - half, size=(n, per_image))
    offsets = np.arange(-half, half + 1)
    patches = level[np.arange(n)[:, None, None, None],
                    ys[:, :, None, None] + offsets[:, None],
                    xs[:, :, None, None] + offsets[None, :]]
    return patches.reshape(n * per_image, _PATCH * _PATCH)


def descriptors(images, seed: int = 0, per_image: int = 128, min_resolution: int = 16):
    """Normalized patch descriptors per pyramid level.

    images: [N, H, W(, 1)] in [-1, 1]. Returns (resolutions, [M, 49] float32 per
    level), M = N * per_image, normalized to zero mean and unit standard
    deviation per level. Patch positions depend only on (seed, level, image
    index), so two sets of equal size are sampled at the same places.
    """
    x = as_float_images(images)
    per_level, resolutions = None, None
    for start, stop in chunks(len(x), _CHUNK_IMAGES):
        pyramid = laplacian_pyramid(x[start:stop], min_resolution)
        if per_level is None:
            resolutions = [lvl.shape[1] for lvl in pyramid]
            per_level = [[] for _ in pyramid]
        for i, lvl in enumerate(pyramid):
            rng = np.random.default_rng([seed, 0, i, start])
            per_level[i].append(_patches(lvl, rng, per_image))
    out = []
    for parts in per_level:
        desc = np.concatenate(parts)
        desc -= desc.mean(dtype=np.float64)
        desc /= desc.std(dtype=np.float64)
        out.append(desc)
    return resolutions, out


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       repeats: int = 4, directions: int = 128) -> float:
    """SWD between two [M, C] descriptor sets: mean over repeats of the mean
    absolute difference of sorted projections onto random unit directions."""
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], directions))
        dirs = (dirs / np.linalg.norm(dirs, axis=0)).astype(np.float32)
        proj_a, proj_b = dirs.T @ a.T, dirs.T @ b.T  # [directions, M]: rows sort fast
        proj_a.sort(axis=1)
        proj_b.sort(axis=1)
        results.append(np.mean(np.abs(proj_a - proj_b), dtype=np.float64))
    return float(np.mean(results))


def _take(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if n == len(x) else x[subsample(len(x), n, rng)]


def swd(images_a, images_b, max_images: int | None = 2048, seed: int = 0) -> dict:
    """SWD between two image sets (docs/metrics.md), x 1e3, per level and averaged.

    images_a, images_b: [N, H, W(, 1)] in [-1, 1], same H, W. Both sets are cut
    to the same size, min(N_a, N_b, max_images), by a seeded random choice.
    Returns {'resolutions': [H, H/2, ..., 16], 'per_level': [...], 'avg': float}.
    A set against itself gives exactly 0: both are sampled at the same patch
    positions and projected on the same directions.
    """
    a, b = as_float_images(images_a), as_float_images(images_b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f'image shapes differ: {a.shape[1:]} vs {b.shape[1:]}')
    n = min(len(a), len(b), max_images or len(a))
    a = _take(a, n, np.random.default_rng([seed, 2, 0]))
    b = _take(b, n, np.random.default_rng([seed, 2, 1]))
    resolutions, desc_a = descriptors(a, seed)
    _, desc_b = descriptors(b, seed)
    per_level = [1e3 * sliced_wasserstein(da, db, np.random.default_rng([seed, 1, i]))
                 for i, (da, db) in enumerate(zip(desc_a, desc_b))]
    return {'resolutions': resolutions, 'per_level': per_level, 'avg': float(np.mean(per_level)),
            'n': n}

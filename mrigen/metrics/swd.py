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

from mrigen.metrics._util import (
    as_float_images,
    chunks,
    separable,
    sort_rows,
    subsample,
)

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


def raw_descriptors(images, seed: int = 0, per_image: int = 128, min_resolution: int = 16):
    """Patch descriptors per pyramid level, before normalization.

    images: [N, H, W(, 1)] in [-1, 1]. Returns (resolutions, [N * per_image,
    49] float32 per level), image-major: rows i * per_image .. (i + 1) *
    per_image - 1 are image i's patches. Patch positions depend only on
    (seed, level, image index), so two sets of equal size are sampled at the
    same places.
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
    return resolutions, [np.concatenate(parts) for parts in per_level]


def normalized(desc: np.ndarray) -> np.ndarray:
    """A copy of one level's descriptors with zero mean and unit standard deviation (over all values)."""
    desc = desc.copy()
    desc -= desc.mean(dtype=np.float64)  # in place: stays float32
    desc /= desc.std(dtype=np.float64)
    return desc


def descriptors(images, seed: int = 0, per_image: int = 128, min_resolution: int = 16):
    """Normalized patch descriptors per pyramid level.

    images: [N, H, W(, 1)] in [-1, 1]. Returns (resolutions, [M, 49] float32 per
    level), M = N * per_image, normalized to zero mean and unit standard
    deviation per level (raw_descriptors, then normalized).
    """
    resolutions, raw = raw_descriptors(images, seed, per_image, min_resolution)
    return resolutions, [normalized(d) for d in raw]


def _directions(rng: np.random.Generator, channels: int, directions: int) -> np.ndarray:
    dirs = rng.standard_normal((channels, directions))
    return (dirs / np.linalg.norm(dirs, axis=0)).astype(np.float32)


def _sorted_projections(desc: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    return sort_rows(dirs.T @ desc.T)  # [directions, M]: rows sort fast


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       repeats: int = 4, directions: int = 128) -> float:
    """SWD between two [M, C] descriptor sets: mean over repeats of the mean
    absolute difference of sorted projections onto random unit directions."""
    return sliced_wasserstein_many(a, [b], rng, repeats, directions)[0]


def sliced_wasserstein_many(a: np.ndarray, others: list, rng: np.random.Generator,
                            repeats: int = 4, directions: int = 128) -> list[float]:
    """sliced_wasserstein(a, b, rng) for each b of others, sorting a's projections once.

    Every b meets the same directions, so each value equals a separate
    sliced_wasserstein call with an equally seeded rng.
    """
    results = [[] for _ in others]
    for _ in range(repeats):
        dirs = _directions(rng, a.shape[1], directions)
        proj_a = _sorted_projections(a, dirs)
        for out, b in zip(results, others):
            out.append(np.mean(np.abs(proj_a - _sorted_projections(b, dirs)), dtype=np.float64))
    return [float(np.mean(r)) for r in results]


def _take(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if n == len(x) else x[subsample(len(x), n, rng)]


def swd(images_a, images_b, max_images: int | None = 2048, seed: int = 0) -> dict:
    """SWD between two image sets (docs/metrics.md), x 1e3, per level and averaged.

    images_a, images_b: [N, H, W(, 1)] in [-1, 1], same H, W. Both sets are cut
    to the same size, min(N_a, N_b, max_images), by a seeded random choice.
    Returns {'resolutions': [H, H/2, ..., 16], 'per_level': [...], 'avg': float,
    'n'}. A set against itself gives exactly 0: both are sampled at the same
    patch positions and projected on the same directions.
    """
    a, b = as_float_images(images_a), as_float_images(images_b)
    n = min(len(a), len(b), max_images or len(a))
    return swd_against(a, {'b': b}, n, seed)['b']


def swd_against(reference, others: dict, n: int, seed: int = 0, raw: dict | None = None) -> dict:
    """swd(reference, other, max_images=n, seed) for each other set, the reference's work done once.

    reference, others' values: [N, H, W(, 1)] in [-1, 1], each with at least
    n images. raw: an empty dict to receive each set's raw_descriptors of the
    n images used ('reference' and the others' names), for resampled_swd.
    Returns {name: swd's dict}.
    """
    ref = as_float_images(reference)
    sets = {name: as_float_images(x) for name, x in others.items()}
    for x in sets.values():
        if x.shape[1:] != ref.shape[1:]:
            raise ValueError(f'image shapes differ: {ref.shape[1:]} vs {x.shape[1:]}')
    resolutions, ref_raw = raw_descriptors(_take(ref, n, np.random.default_rng([seed, 2, 0])), seed)
    other_raw = {name: raw_descriptors(_take(x, n, np.random.default_rng([seed, 2, 1])), seed)[1]
                 for name, x in sets.items()}
    if raw is not None:
        raw.update(reference=ref_raw, **other_raw)
    per_level = {name: [] for name in sets}
    for i, ref_level in enumerate(ref_raw):
        values = sliced_wasserstein_many(normalized(ref_level),
                                         [normalized(other_raw[name][i]) for name in sets],
                                         np.random.default_rng([seed, 1, i]))
        for name, v in zip(sets, values):
            per_level[name].append(1e3 * v)
    return {name: {'resolutions': resolutions, 'per_level': p, 'avg': float(np.mean(p)), 'n': n}
            for name, p in per_level.items()}


# Resampled SWD: the spread of the SWD over resampled image sets, on a
# quarter of the patches (32 of 128 per image) and one repeat of 64
# directions, so that a resample costs a few sorts instead of 40.
_RESAMPLE_PATCHES = 32
_RESAMPLE_DIRECTIONS = 64


class ResamplingProjections:
    """One set's raw descriptors projected once, for resampled_swd.

    raw: raw_descriptors' per-level list for n images (128 patches each).
    Per level it keeps the first 32 patches of each image projected on 64
    seeded directions, [n, 32, 64] float32, and per image the sum and sum of
    squares of those patches' values, so a resample's normalization (the
    set's own mean and standard deviation, as in swd) is a scalar affine map
    of the projections.
    """

    def __init__(self, raw: list, seed: int = 0, per_image: int = 128):
        self.levels = []
        for i, desc in enumerate(raw):
            n = len(desc) // per_image
            patches = desc.reshape(n, per_image, -1)[:, :_RESAMPLE_PATCHES]
            dirs = _directions(np.random.default_rng([seed, 4, i]), patches.shape[-1],
                               _RESAMPLE_DIRECTIONS)
            sums = patches.sum(axis=(1, 2), dtype=np.float64)
            squares = np.einsum('ijk,ijk->i', patches, patches, dtype=np.float64)
            self.levels.append((patches @ dirs, sums, squares, dirs.sum(axis=0)))
        self.n = len(raw[0]) // per_image

    def sorted_level(self, i: int, rows: np.ndarray) -> np.ndarray:
        """[directions, len(rows) * 32] sorted normalized projections of the chosen images."""
        proj, sums, squares, ones = self.levels[i]
        count = len(rows) * proj.shape[1] * _PATCH * _PATCH  # descriptor values in the resample
        mean = sums[rows].sum() / count
        std = np.sqrt(max(squares[rows].sum() / count - mean * mean, 1e-30))
        p = proj[rows].reshape(-1, proj.shape[-1]).T
        p = (p - np.float32(mean) * ones[:, None]) / np.float32(std)
        return sort_rows(p)


def resampled_swd(reference: ResamplingProjections, other: ResamplingProjections,
                  ref_rows, other_rows, ref_sorted: list | None = None) -> list[float]:
    """Per-level SWD (x 1e3) of resampled images from the projected quarter of the patches.

    ref_rows, other_rows: image indices of equal length (a resample of each
    set). ref_sorted: the reference's sorted levels for ref_rows, to share
    between several other sets. Not comparable with swd's values (fewer
    patches and directions); its spread across resamples bounds swd's.
    """
    if len(ref_rows) != len(other_rows):
        raise ValueError(f'resampled sets differ in size: {len(ref_rows)} vs {len(other_rows)}')
    out = []
    for i in range(len(reference.levels)):
        a = ref_sorted[i] if ref_sorted is not None else reference.sorted_level(i, ref_rows)
        out.append(1e3 * float(np.mean(np.abs(a - other.sorted_level(i, other_rows)),
                                       dtype=np.float64)))
    return out

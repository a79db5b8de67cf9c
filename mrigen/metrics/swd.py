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
    band_blocks,
    banded_first,
    banded_last,
    chunks,
    sort_rows,
    subsample,
    thread_map,
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


_BAND_BLOCK = 32  # output rows per block of the banded pyramid filters


@functools.cache
def _down_blocks(n: int) -> tuple:
    """Filter, then keep even pixels, along an axis of n: band_blocks of [n // 2 (rounded up), n]."""
    return band_blocks(filter_matrix(n)[::2], _BAND_BLOCK)


@functools.cache
def _up_blocks(n: int) -> tuple:
    """Zeros between pixels, filter, x2, back to n along an axis: band_blocks of [n, n // 2]."""
    return band_blocks(2 * filter_matrix(n)[:, ::2], _BAND_BLOCK)


def _separable_rows_first(x: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """rows @ x[:, i, :] @ cols.T for every image i of x [h, N, w] (rows first), as 2-D products."""
    h, n, w = x.shape
    y = banded_last(x.reshape(h * n, w), cols)
    w_out = y.shape[1]
    return banded_first(y.reshape(h, n * w_out), rows).reshape(-1, n, w_out)


def _pyramid_rows_first(x: np.ndarray, min_resolution: int) -> list[np.ndarray]:
    """laplacian_pyramid of images laid out [H, N, W], each level laid out the same way."""
    gauss = [x]
    while min(gauss[-1].shape[0], gauss[-1].shape[2]) // 2 >= min_resolution:
        g = gauss[-1]
        gauss.append(_separable_rows_first(g, _down_blocks(g.shape[0]), _down_blocks(g.shape[2])))
    levels = []
    for fine, coarse in zip(gauss[:-1], gauss[1:]):
        up = _separable_rows_first(coarse, _up_blocks(fine.shape[0]), _up_blocks(fine.shape[2]))
        np.subtract(fine, up, out=up)
        levels.append(up)
    return levels + [gauss[-1]]


def _rows_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 0, 1))


def laplacian_pyramid(images, min_resolution: int = 16) -> list[np.ndarray]:
    """Laplacian pyramid, finest level first, down to the last side >= min_resolution.

    images: [N, H, W(, 1)] in [-1, 1]. Returns float32 levels [N, h, w]: band-pass
    levels G_i - up(G_{i+1}), then the low-pass G_last. Down: binomial filter
    (mirror padding), keep even pixels. Up: zeros between pixels, filter, x4
    (cv2.pyrDown / pyrUp, as Karras et al.'s sliced_wasserstein.py). The
    filters are banded matrix products (band_blocks) on images laid out
    rows first.
    """
    levels = _pyramid_rows_first(_rows_first(as_float_images(images)), min_resolution)
    return [_rows_first(lvl) for lvl in levels]


def _patches(level: np.ndarray, rng: np.random.Generator, per_image: int) -> np.ndarray:
    """per_image random 7x7 patches of each image of level [h, N, w] (rows first), transposed:
    [49, N * per_image] float32, patches image-major, each patch's values row by row."""
    h, n, w = level.shape
    half = _PATCH // 2
    ys = rng.integers(half, h - half, size=(n, per_image))
    xs = rng.integers(half, w - half, size=(n, per_image))
    corner = (ys - half) * (n * w) + np.arange(n)[:, None] * w + (xs - half)  # flat index, [n, per_image]
    offsets = (np.arange(_PATCH)[:, None] * (n * w) + np.arange(_PATCH)[None, :]).ravel()
    return level.reshape(-1).take(offsets[:, None] + corner.reshape(1, -1))


def pyramid_sides(side: int, min_resolution: int = 16) -> list[int]:
    """Sides of laplacian_pyramid's levels along an axis of `side` pixels, finest first."""
    sides = [side]
    while sides[-1] // 2 >= min_resolution:
        sides.append((sides[-1] + 1) // 2)
    return sides


def raw_descriptors(images, seed: int = 0, per_image: int = 128, min_resolution: int = 16,
                    index=None):
    """Patch descriptors per pyramid level, before normalization.

    images: [N, H, W(, 1)] in [-1, 1]; index: the rows of images to take (all
    if None), gathered a chunk at a time. Returns (resolutions, [n *
    per_image, 49] float32 per level), image-major: rows i * per_image ..
    (i + 1) * per_image - 1 are image i's patches. Patch positions depend
    only on (seed, level, image index), so two sets of equal size are
    sampled at the same places. Chunks of 128 images go through the pyramid
    on all cores (thread_map), each writing its patches in place. Each
    level is the transpose of a C-ordered [49, n * per_image] array (what
    the projections multiply), so level.T is that array, no copy.
    """
    x = as_float_images(images)
    rows = np.arange(len(x)) if index is None else np.asarray(index)
    h, w = x.shape[1:]
    n_levels = min(len(pyramid_sides(h, min_resolution)), len(pyramid_sides(w, min_resolution)))
    out = [np.empty((_PATCH * _PATCH, len(rows) * per_image), np.float32) for _ in range(n_levels)]

    def chunk(bounds):
        start, stop = bounds
        pyramid = _pyramid_rows_first(_rows_first(x[start:stop] if index is None else x[rows[start:stop]]),
                                      min_resolution)
        for i, lvl in enumerate(pyramid):
            out[i][:, start * per_image:stop * per_image] = _patches(
                lvl, np.random.default_rng([seed, 0, i, start]), per_image)

    thread_map(chunk, chunks(len(rows), _CHUNK_IMAGES))
    return pyramid_sides(h, min_resolution)[:n_levels], [level.T for level in out]


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


_DIRECTION_BLOCK = 32  # directions projected and sorted together: the sets' blocks stay in cache


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       repeats: int = 4, directions: int = 128) -> float:
    """SWD between two [M, C] descriptor sets: mean over repeats of the mean
    absolute difference of sorted projections onto random unit directions."""
    return sliced_wasserstein_many(a, [b], rng, repeats, directions)[0]


def sliced_wasserstein_many(a: np.ndarray, others: list, rng: np.random.Generator,
                            repeats: int = 4, directions: int = 128,
                            normalize: bool = False) -> list[float]:
    """sliced_wasserstein(a, b, rng) for each b of others, sorting a's projections once.

    Every b meets the same directions, so each value equals a separate
    sliced_wasserstein call with an equally seeded rng. normalize: measure
    each set as if normalized first (normalized(): zero mean, unit standard
    deviation over all its values) without copying the descriptors: the
    directions are divided by the set's standard deviation and the mean's
    projection, one constant per direction, is subtracted in the
    differences (shifts do not change the order). The repeats run on all
    cores (thread_map), each with its own directions, drawn in order first,
    a block of 32 directions at a time: projected, sorted and compared
    while in cache.
    """
    all_dirs = [_directions(rng, a.shape[1], directions) for _ in range(repeats)]
    sets = [a] + list(others)
    affine = [_normalization(x) if normalize else (0.0, 1.0) for x in sets]
    transposed = [np.ascontiguousarray(x.T) for x in sets]  # [C, M]: rows of the products

    def sorted_block(k, dirs_t):
        """Sorted projections of set k, less its mean's projection (a constant per row)."""
        mean, std = affine[k]
        scaled = dirs_t / np.float32(std) if normalize else dirs_t
        p = scaled @ transposed[k]
        p.sort(axis=1)
        return p, np.float32(mean) * scaled.sum(axis=1, dtype=np.float32)

    def repeat(dirs):
        dirs_t = np.ascontiguousarray(dirs.T)
        totals = np.zeros(len(others))
        for d0 in range(0, len(dirs_t), _DIRECTION_BLOCK):
            block = dirs_t[d0:d0 + _DIRECTION_BLOCK]
            proj_a, shift_a = sorted_block(0, block)
            for k in range(len(others)):
                diff, shift_b = sorted_block(k + 1, block)
                np.subtract(proj_a, diff, out=diff)
                if normalize:
                    diff -= (shift_a - shift_b)[:, None]
                totals[k] += np.abs(diff, out=diff).sum(axis=1).sum(dtype=np.float64)
        return totals / (len(dirs_t) * a.shape[0])

    per_repeat = thread_map(repeat, all_dirs)
    return [float(np.mean([r[k] for r in per_repeat])) for k in range(len(others))]


def _normalization(desc: np.ndarray):
    """(mean, standard deviation) of all values of desc [M, C], as normalized() applies them."""
    mean = desc.mean(dtype=np.float64)
    sq = desc.reshape(-1, desc.shape[-1])
    # The variance of the centered values, as normalized's desc.std after its subtraction.
    centered_sq = np.einsum('ij,ij->', sq, sq, dtype=np.float64) / desc.size - mean * mean
    return mean, float(np.sqrt(max(centered_sq, 0.0)))


def _take(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of a seeded choice of n of size images (all, in order, if n == size)."""
    return np.arange(size) if n == size else subsample(size, n, rng)


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
    ref_rows = _take(len(ref), n, np.random.default_rng([seed, 2, 0]))
    resolutions, ref_raw = raw_descriptors(ref, seed, index=ref_rows)
    other_raw = {name: raw_descriptors(x, seed, index=_take(len(x), n, np.random.default_rng([seed, 2, 1])))[1]
                 for name, x in sets.items()}
    if raw is not None:
        raw.update(reference=ref_raw, **other_raw)
    per_level = {name: [] for name in sets}
    for i, ref_level in enumerate(ref_raw):  # each set normalized per level, as descriptors()
        values = sliced_wasserstein_many(ref_level, [other_raw[name][i] for name in sets],
                                         np.random.default_rng([seed, 1, i]), normalize=True)
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
    seeded directions, [64, n, 32] float32, and per image the sum and sum of
    squares of those patches' values, so a resample's normalization (the
    set's own mean and standard deviation, as in swd) is a scalar affine map
    of the projections.
    """

    def __init__(self, raw: list, seed: int = 0, per_image: int = 128):
        self.levels = []
        for i, desc in enumerate(raw):
            n = len(desc) // per_image
            c = desc.shape[1]
            # [c, n, 32]: the first 32 patches of each image, values first (desc.T is
            # raw_descriptors' C-ordered array).
            patches = np.ascontiguousarray(desc.T.reshape(c, n, per_image)[:, :, :_RESAMPLE_PATCHES])
            dirs = _directions(np.random.default_rng([seed, 4, i]), c, _RESAMPLE_DIRECTIONS)
            sums = patches.sum(axis=(0, 2), dtype=np.float64)
            squares = np.einsum('cij,cij->i', patches, patches, dtype=np.float64)
            proj = (dirs.T @ patches.reshape(c, -1)).reshape(-1, n, _RESAMPLE_PATCHES)
            self.levels.append((proj, sums, squares, dirs.sum(axis=0)))  # proj: directions first
        self.n = len(raw[0]) // per_image

    def sorted_level(self, i: int, rows: np.ndarray) -> np.ndarray:
        """[directions, len(rows) * 32] sorted normalized projections of the chosen images."""
        proj, sums, squares, ones = self.levels[i]
        count = len(rows) * proj.shape[2] * _PATCH * _PATCH  # descriptor values in the resample
        mean = sums[rows].sum() / count
        std = np.sqrt(max(squares[rows].sum() / count - mean * mean, 1e-30))
        p = proj.take(rows, axis=1).reshape(len(proj), -1)  # [directions, patches], a copy
        p -= np.float32(mean) * ones[:, None]
        p /= np.float32(std)
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

"""Small helpers shared by the metric modules: image conversion, chunking, PNGs."""

import functools
import os
import tempfile

import numpy as np

from mrigen.images import save_grid


def as_float_images(images) -> np.ndarray:
    """Returns images as [N, H, W] float32 in [-1, 1].

    Accepts [N, H, W, 1] or [N, H, W]; float input is taken as already in
    [-1, 1] (no copy when it is float32), uint8 is mapped by x / 127.5 - 1.
    """
    x = np.asarray(images)
    if x.ndim == 4:
        if x.shape[-1] != 1:
            raise ValueError(f'expected one channel, got shape {x.shape}')
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f'expected [N, H, W, 1] or [N, H, W], got shape {x.shape}')
    if x.dtype == np.uint8:
        y = x.astype(np.float32)
        y /= np.float32(127.5)
        y -= np.float32(1.0)
        return y
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f'expected float or uint8 images, got {x.dtype}')
    return np.asarray(x, dtype=np.float32)


def flat(images) -> np.ndarray:
    """[N, H, W(, 1)] images -> [N, D] float32 rows (a view when possible)."""
    x = as_float_images(images)
    return x.reshape(x.shape[0], -1)


def chunks(n: int, size: int):
    """Yields (start, stop) covering range(n) in steps of `size`."""
    for start in range(0, n, size):
        yield start, min(start + size, n)


def subsample(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of min(k, n) distinct items of range(n); all of them if k is None."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


def separable(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """rows @ x[i] @ cols.T for every image of x [N, h, w]: [N, h', w'], as two large products."""
    n, h, w = x.shape
    y = (x.reshape(n * h, w) @ cols.T).reshape(n, h, cols.shape[0])
    return np.ascontiguousarray(np.moveaxis(np.tensordot(rows, y, axes=(1, 1)), 0, 1))


def save_grid_png(rows, path) -> None:
    """Writes a grid PNG: rows is a list of [n, H, W(, 1)] image sets in [-1, 1], one per grid row.

    Shorter rows are padded with black cells; see mrigen.images.save_grid.
    """
    rows = [as_float_images(r) for r in rows]
    columns = max(len(r) for r in rows)
    cells = [np.concatenate([r, np.full((columns - len(r),) + r.shape[1:], -1.0, np.float32)]) for r in rows]
    save_grid(np.concatenate(cells), os.fspath(path), columns=columns)


def atomic_write(path, write) -> None:
    """Calls write(file) on a temporary file next to `path`, then renames it onto `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_PARALLEL_SORT_MIN = 1 << 20  # elements; below this one thread sorts faster


@functools.cache
def _sort_pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4))


def sort_rows(x: np.ndarray) -> np.ndarray:
    """Sorts each row of a 2-D array in place, rows split among threads; returns x.

    numpy's sort is single-threaded but releases the GIL, so large arrays
    (SWD's [128, 262144] projections) sort about 1.5x faster on 2 cores.
    """
    workers = _sort_pool()._max_workers
    if x.size < _PARALLEL_SORT_MIN or workers == 1 or len(x) < 2:
        x.sort(axis=1)
        return x
    parts = np.array_split(np.arange(len(x)), min(workers, len(x)))
    list(_sort_pool().map(lambda rows: x[rows[0]:rows[-1] + 1].sort(axis=1), parts))
    return x


@functools.cache
def _threadpools():
    from threadpoolctl import ThreadpoolController  # installed with scikit-learn

    return ThreadpoolController()  # scans the loaded BLAS libraries once (5 ms a scan)


def one_blas_thread():
    """A context manager holding BLAS to one thread.

    For many small products (KID's 100 x d blocks, Frechet distances at d
    ~ 600): waking BLAS threads costs more than the work, and on a busy
    2-core machine two threads were 10-20x slower than one.
    """
    return _threadpools().limit(limits=1, user_api='blas')

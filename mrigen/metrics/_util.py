"""Small helpers shared by the metric modules: image conversion, chunking, PNGs."""

import functools
import os
import tempfile
import threading

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


def band_blocks(matrix: np.ndarray, block: int = 64) -> tuple:
    """A banded matrix [m, n] cut into blocks of `block` rows, each with only the columns that
    hold its nonzeros: ((first row, end row, first column, end column, float32 block), ...).

    banded_last and banded_first apply it block by block: the same sums as
    the dense product, less the multiplications by zero (a 5-tap filter
    matrix of 256 columns needs 1/4 of the dense product's multiply-adds in
    blocks of 64 rows, 1/6 in blocks of 32).
    """
    matrix = np.asarray(matrix)
    out = []
    for r0 in range(0, matrix.shape[0], block):
        r1 = min(r0 + block, matrix.shape[0])
        cols = np.flatnonzero(np.any(matrix[r0:r1] != 0, axis=0))
        c0, c1 = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)
        b = np.ascontiguousarray(matrix[r0:r1, c0:c1], np.float32)
        b.flags.writeable = False
        out.append((r0, r1, c0, c1, b))
    return tuple(out)


def banded_last(x: np.ndarray, blocks: tuple) -> np.ndarray:
    """x [R, n] float32 times the banded matrix's transpose: [R, m], one product per block."""
    out = np.empty((x.shape[0], blocks[-1][1]), np.float32)
    for r0, r1, c0, c1, b in blocks:
        out[:, r0:r1] = x[:, c0:c1] @ b.T
    return out


def banded_first(x: np.ndarray, blocks: tuple) -> np.ndarray:
    """The banded matrix [m, n] times x [n, C] float32: [m, C], one product per block."""
    out = np.empty((blocks[-1][1], x.shape[1]), np.float32)
    for r0, r1, c0, c1, b in blocks:
        np.matmul(b, x[c0:c1], out=out[r0:r1])
    return out


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
    Inside thread_map's items, which already share out the cores, one thread.
    """
    workers = _sort_pool()._max_workers
    if x.size < _PARALLEL_SORT_MIN or workers == 1 or len(x) < 2 or in_worker():
        x.sort(axis=1)
        return x
    parts = np.array_split(np.arange(len(x)), min(workers, len(x)))
    list(_sort_pool().map(lambda rows: x[rows[0]:rows[-1] + 1].sort(axis=1), parts))
    return x


@functools.cache
def _work_pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=work_threads())


def work_threads() -> int:
    """Threads thread_map runs on: one per core, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def thread_map(fn, items) -> list:
    """[fn(item) for item in items], the items spread over one thread per core.

    BLAS is held to one thread meanwhile (one_blas_thread): each thread then
    runs whole chunks of work (numpy's ufuncs and sorts release the GIL, and
    most are single-threaded), instead of every small product waking and
    waiting for BLAS's threads, which on a busy 2-core machine made the
    chunked metrics several times slower. Results come back in item order,
    each computed exactly as a sequential call would. Called from inside an
    item, it runs its own items in order on that thread.
    """
    items = list(items)
    if len(items) <= 1 or work_threads() == 1 or in_worker():
        with one_blas_thread():
            return [fn(item) for item in items]

    def run(item):
        _worker.active = True
        try:
            return fn(item)
        finally:
            _worker.active = False

    with one_blas_thread():
        return list(_work_pool().map(run, items))


def matmul(a: np.ndarray, b: np.ndarray, rows: int = 256) -> np.ndarray:
    """a [M, K] @ b [K, k] for a tall a, blocks of `rows` rows of a on all cores (thread_map):
    each row as one product gives it."""
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))

    def block(bounds):
        np.matmul(a[bounds[0]:bounds[1]], b, out=out[bounds[0]:bounds[1]])

    thread_map(block, chunks(a.shape[0], rows))
    return out


def matmul_t(q: np.ndarray, x: np.ndarray, cols: int = 4096) -> np.ndarray:
    """q.T [k, N] @ x [N, D] for a wide x, blocks of `cols` columns of x on all cores
    (thread_map): each column as one product gives it."""
    out = np.empty((q.shape[1], x.shape[1]), np.result_type(q, x))
    qt = q.T

    def block(bounds):
        np.matmul(qt, x[:, bounds[0]:bounds[1]], out=out[:, bounds[0]:bounds[1]])

    thread_map(block, chunks(x.shape[1], cols))
    return out


_worker = threading.local()


def in_worker() -> bool:
    """Whether this thread is running one of thread_map's items (then work stays on it)."""
    return getattr(_worker, 'active', False)


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

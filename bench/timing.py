"""Timing helpers the benchmarks share; jax is imported only when asked for memory."""

import statistics
import time


def median_time(fn, iters: int, warmup: int) -> float:
    """Median wall time of fn() in seconds; fn must block until its result is ready."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_gib() -> float:
    """Peak bytes in use on the first device, in GiB (NaN where the backend does not say)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", float("nan")) / 2**30

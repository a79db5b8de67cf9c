"""Seeded bootstrap intervals for any two-set metric.

Resample both sets with replacement, recompute the metric, take percentiles.
It is generic over what the sets are, so resample the cheapest form a metric
has: feature arrays for KID and the feature Frechet distance, per-image
spectrum profiles (spectrum.radial_profiles) for the spectrum distance, not
the images. Two cautions:
- a resample holds exact copies, which nearest-neighbour metrics (precision,
  recall, density, coverage, duplicate share) read as real structure: do not
  bootstrap those;
- a distance >= 0 that is biased upward at small N (Frechet distance, mean
  absolute profile difference) resamples high when the true difference is
  near 0; compare it, as the verdict should anyway, with held-out real data
  under the same resampling (bootstrap_compare).
"""

from collections.abc import Callable

import numpy as np


def _resample(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, n)


def _interval(values, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    tail = 50 * (1 - confidence)
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(metric: Callable, real, generated, n_resamples: int = 100,
                       confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(value, low, high): metric(real, generated) and its percentile bootstrap interval.

    metric: f(real, generated) -> float. real: [N, ...], generated: [M, ...]
    arrays (images, features or profiles; resampled along axis 0). Each of
    n_resamples rounds draws N rows of real and M rows of generated with
    replacement from one numpy Generator seeded with seed, so a seed
    reproduces the interval exactly. low, high: the (1 - confidence) / 2 and
    (1 + confidence) / 2 percentiles of the resampled values. Costs
    n_resamples + 1 metric calls.
    """
    real, generated = np.asarray(real), np.asarray(generated)
    rng = np.random.default_rng(seed)
    values = [metric(real[_resample(len(real), rng)], generated[_resample(len(generated), rng)])
              for _ in range(n_resamples)]
    return (float(metric(real, generated)),) + _interval(values, confidence)


def bootstrap_compare(metric: Callable, reference, generated, heldout, n_resamples: int = 100,
                      confidence: float = 0.95, seed: int = 0) -> dict:
    """Generated against reference, beside held-out real against reference, on shared resamples.

    metric: f(reference, other) -> float, lower is better. reference,
    generated, heldout: arrays resampled along axis 0; in each round the
    same reference resample serves both, so its noise cancels in the
    difference. Returns {'generated', 'held-out', 'difference'} each a
    (value, low, high) tuple, difference = generated - held-out: its low
    end above 0 says the generated set is measurably worse than real data.
    """
    reference, generated, heldout = (np.asarray(a) for a in (reference, generated, heldout))
    rng = np.random.default_rng(seed)
    gen_values, real_values = [], []
    for _ in range(n_resamples):
        ref = reference[_resample(len(reference), rng)]
        gen_values.append(metric(ref, generated[_resample(len(generated), rng)]))
        real_values.append(metric(ref, heldout[_resample(len(heldout), rng)]))
    gen_value, real_value = float(metric(reference, generated)), float(metric(reference, heldout))
    diff = np.subtract(gen_values, real_values)
    return {'generated': (gen_value,) + _interval(gen_values, confidence),
            'held-out': (real_value,) + _interval(real_values, confidence),
            'difference': (gen_value - real_value,) + _interval(diff, confidence)}

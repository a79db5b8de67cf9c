"""Which metrics tell a set from real data: one-sided tests against the floor, Holm-corrected.

For each metric of comparison.FAMILY, the difference between the set and the
held-out real floor, d = value(set) - value(floor), signed so that d > 0
means the set looks less real. Its standard error is the standard deviation
of the same difference over the resamples (the reference's draw shared, so
its noise cancels; the set's and the floor's own noise both count). Under
the null hypothesis "this set is as real as the floor", d / se follows
Student's t with B - 1 degrees of freedom (B resamples), which gives a
one-sided p-value per metric. Holm's step-down procedure over the family
then keeps the chance of naming any metric for a set that is as real as
the floor at most LEVEL (the family-wise error rate), whatever the
dependence between the metrics.
"""

import math

import numpy as np
import scipy.stats

from mrigen.metrics.comparison import FAMILY, Measured

LEVEL = 0.05  # family-wise error rate over the whole family


def holm(p_values: dict, level: float = LEVEL) -> dict:
    """{name: (rejected, threshold)} by Holm's step-down procedure at family-wise level `level`.

    p_values: {name: p in [0, 1]}. The k-th smallest p (k = 1..K) is compared
    with level / (K - k + 1); rejection stops at the first that exceeds its
    threshold. Ties keep their input order.
    """
    order = sorted(p_values, key=lambda name: p_values[name])
    out, rejecting = {}, True
    for k, name in enumerate(order):
        threshold = level / (len(order) - k)
        rejecting = rejecting and p_values[name] <= threshold
        out[name] = (rejecting, threshold)
    return out


def one_sided(measured: Measured, name: str, floor: str, metric: str) -> dict:
    """The test of one metric: {'difference', 'se', 't', 'p', 'n_resamples'}.

    difference = value(name) - value(floor), in the metric's units; t and p
    are signed so that large t and small p mean `name` looks less real.
    """
    sign = 1.0 if FAMILY[metric].worse == 'higher' else -1.0
    difference = measured.values[name][metric] - measured.values[floor][metric]
    resampled = measured.resampled[name][metric] - measured.resampled[floor][metric]
    resampled = resampled[np.isfinite(resampled)]
    se = float(np.std(resampled, ddof=1)) if len(resampled) > 1 else math.nan
    d = sign * difference
    if not (math.isfinite(d) and math.isfinite(se)):
        t, p = math.nan, 1.0  # nothing to test: never a reason to name the metric
    elif se > 0:
        t = d / se
        p = float(scipy.stats.t.sf(t, len(resampled) - 1))
    else:  # the resamples never differed: only a strict difference counts
        t = math.copysign(math.inf, d) if d else 0.0
        p = 0.0 if d > 0 else 1.0
    return {'difference': float(difference), 'se': se, 't': float(t), 'p': p,
            'n_resamples': len(resampled)}


def verdict(measured: Measured, name: str, floor: str, level: float = LEVEL) -> dict:
    """Tests every family metric of set `name` against the floor.

    Returns {'distinguishable_by': [metric names, in FAMILY order],
    'tests': {metric: one_sided's dict plus 'holm_threshold', 'flagged'}}.
    """
    tests = {metric: one_sided(measured, name, floor, metric) for metric in FAMILY}
    decisions = holm({m: t['p'] for m, t in tests.items()}, level)
    for metric, (flagged, threshold) in decisions.items():
        tests[metric].update(holm_threshold=threshold, flagged=bool(flagged))
    return {'distinguishable_by': [m for m in FAMILY if tests[m]['flagged']], 'tests': tests}

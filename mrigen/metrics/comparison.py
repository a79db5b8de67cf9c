"""Sets against one reference, each metric with a resampled interval (docs/metrics.md).

A form is the cheap thing a metric is computed from, made once per set: the
per-image spectrum profiles, the random features, the PCA coordinates, the
pairwise pixel distances, the projected SWD patches, the per-pair MS-SSIM
values. Intervals come from recomputing the metric on resamples of the
forms, never of the images, with one of two schemes:

- 'bootstrap': every set (the reference too) resampled with replacement at
  its own size. For the smooth metrics: spectrum distances, Frechet
  distances.
- 'half': every set subsampled without replacement to half its size. For
  the metrics a resample's exact copies would fool: the k-nearest-neighbour
  ones (precision, recall, density, coverage), the duplicate share, and
  KID and MS-SSIM, which stay unbiased at any size. At a half, the spread of
  a mean-like statistic across subsamples equals its standard error at the
  full size (the variance of a half-sample mean about the full mean is
  sigma^2 (1/(n/2) - 1/n) = sigma^2 / n); for the duplicate share, whose
  null spread shrinks like 1/n^2, it overstates it: a conservative interval.

In each resample the reference's draw is shared by all sets, so its noise
cancels from their differences (what the verdict tests). The spread is the
standard deviation of the resampled values; an interval is the measured
value +- t * spread, t Student's (B - 1 degrees of freedom, since the spread
is itself estimated from B resamples).
"""

import dataclasses

import numpy as np
import scipy.stats

from mrigen.metrics import duplicates, frechet, kid, prdc, spectrum, swd
from mrigen.metrics._util import one_blas_thread, thread_map


@dataclasses.dataclass(frozen=True)
class Metric:
    """One metric of the verdict's family.

    worse: 'higher' or 'lower', the direction in which a set looks less real.
    bounds: the range of possible values (None for unbounded), intervals
    are clipped to it. description: a few words for the report. (Its
    resampling scheme is its form's.)
    """
    worse: str
    bounds: tuple
    description: str


FAMILY = {
    'spectrum': Metric('higher', (0.0, None),
                       'radial power spectrum distance, all rings (decades)'),
    'spectrum_high': Metric('higher', (0.0, None),
                            'radial power spectrum distance, upper half of frequencies'),
    'kid': Metric('higher', (None, None), 'KID, random features'),
    'feature_fd': Metric('higher', (0.0, None), 'Frechet distance, random features'),
    'precision': Metric('lower', (0.0, 1.0), 'precision (k = 3), random features'),
    'recall': Metric('lower', (0.0, 1.0), 'recall (k = 3), random features'),
    'density': Metric('lower', (0.0, None), 'density (k = 5), random features'),
    'coverage': Metric('lower', (0.0, 1.0), 'coverage (k = 5), random features'),
    'duplicate_share': Metric('higher', (0.0, 1.0),
                              'share of pairs closer than the closest real pair'),
    'swd': Metric('higher', (0.0, None), 'SWD x1e3, average over levels'),
    'ms_ssim': Metric('higher', (0.0, 1.0), 'MS-SSIM between pairs of the set'),
    'pca_fd': Metric('higher', (0.0, None), 'Frechet distance, 16 PCA coordinates'),
}

CONFIDENCE = 0.95  # of the intervals shown beside each value


def draw(n: int, scheme: str, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one resample of n rows: n with replacement ('bootstrap') or n // 2 without."""
    if scheme == 'bootstrap':
        return rng.integers(0, n, n)
    if scheme == 'half':
        return np.sort(rng.choice(n, n // 2, replace=False))
    raise ValueError(f'unknown resampling scheme {scheme!r}; known: bootstrap, half')


class Form:
    """Base of the forms: subclasses set scheme, n_resamples and sizes and define values.

    sizes: {role: number of rows}; roles are 'reference' (absent when the
    metric reads no reference) and the compared sets' names.
    values(rows): {set name: {metric: float}} for rows {role: index array,
    or None for all rows}. exact(): the reported values, by default
    values() on all rows.
    """
    scheme = 'bootstrap'
    n_resamples = 200
    sizes: dict

    def values(self, rows: dict) -> dict:
        raise NotImplementedError

    def exact(self) -> dict:
        return self.values({role: None for role in self.sizes})

    def set_names(self) -> list:
        return [role for role in self.sizes if role != 'reference']


def _take(x: np.ndarray, rows):
    return x if rows is None else x[rows]


class SpectrumForm(Form):
    """Spectrum distances from per-image log profiles [n, K] (spectrum.radial_profiles)."""
    n_resamples = 200

    def __init__(self, profiles: dict, resolution: int):
        self.profiles, self.resolution = profiles, resolution
        self.sizes = {role: len(p) for role, p in profiles.items()}

    def values(self, rows):
        ref = _take(self.profiles['reference'], rows['reference'])
        out = {}
        for name in self.set_names():
            d = spectrum.profile_distance(ref, _take(self.profiles[name], rows[name]), self.resolution)
            out[name] = {'spectrum': d['distance'], 'spectrum_high': d['distance_high']}
        return out


class FrechetForm(Form):
    """A Frechet distance from feature rows [n, F]; the reference's matrix root once per resample."""
    n_resamples = 20  # each resample refits the covariances: ~0.5 s at F = 608, N = 5000

    def __init__(self, features: dict, metric: str, n_resamples: int = 20):
        self.features, self.metric, self.n_resamples = features, metric, n_resamples
        self.sizes = {role: len(f) for role, f in features.items()}

    def values(self, rows):
        # One BLAS thread, as features.feature_frechet_distance (busy 2-core machines).
        with one_blas_thread():
            mu_r, cov_r = self._stats('reference', rows['reference'])
            factor = None
            if rows['reference'] is not None:  # a resample: a Cholesky factor serves as well, faster
                try:
                    factor = {'chol_a': np.linalg.cholesky(cov_r)}
                except np.linalg.LinAlgError:  # singular: the square root
                    pass
            factor = factor or {'root_a': frechet.psd_sqrt(cov_r)}
            return {name: {self.metric: frechet.frechet_distance(
                        mu_r, cov_r, *self._stats(name, rows[name]), **factor)}
                    for name in self.set_names()}

    def _stats(self, role, rows):
        """Mean and covariance of a role's rows: all of them, or a bootstrap draw (weighted)."""
        if rows is None:
            return frechet.gaussian_stats(self.features[role])
        return frechet.resampled_stats(self.features[role], rows)


class KIDForm(Form):
    """KID (kid.kid, 100 subsets of 100) from feature rows; every set meets the same subset draws."""
    scheme, n_resamples = 'half', 20

    def __init__(self, features: dict, seed: int):
        self.features, self.seed = features, seed
        self.sizes = {role: len(f) for role, f in features.items()}

    def _kid(self, rows) -> dict:
        ref = _take(self.features['reference'], rows['reference'])
        return kid.kid_many(ref, {name: _take(self.features[name], rows[name])
                                  for name in self.set_names()}, seed=self.seed)

    def exact(self):
        self.details = self._kid({role: None for role in self.sizes})  # mean, std, subset size
        return {name: {'kid': r['mean']} for name, r in self.details.items()}

    def values(self, rows):
        return {name: {'kid': r['mean']} for name, r in self._kid(rows).items()}


class PRDCForm(Form):
    """Precision, recall, density, coverage from one table of squared feature distances."""
    scheme, n_resamples = 'half', 20

    def __init__(self, features: dict):
        self.sizes = {role: len(f) for role, f in features.items()}
        self.table = prdc.squared_distance_table(
            features['reference'], {name: features[name] for name in self.set_names()})
        # Each point's nearest neighbours, sorted: a subset's k-th neighbour distances
        # come from these lists instead of partitioning the subset's block.
        self.lists = {'real': prdc.NeighbourLists(self.table['real']),
                      **{name: prdc.NeighbourLists(self.table[name][0]) for name in self.set_names()}}

    def values(self, rows):
        radii = self.lists['real'].kth(rows['reference'], (3, 5))  # shared; k_pr, k_dc of prdc
        out = {}
        for name in self.set_names():
            gen_radius = self.lists[name].kth(rows[name], (3,))[0]
            r = prdc.prdc_from_table(self.table['real'], *self.table[name], rows['reference'], rows[name],
                                     real_radii=radii, gen_radius=gen_radius)
            out[name] = {k: r[k] for k in ('precision', 'recall', 'density', 'coverage')}
        return out


class DuplicateForm(Form):
    """Duplicate share from pair tables of n images per set; exact values from duplicate_share."""
    scheme, n_resamples = 'half', 100

    def __init__(self, reference, sets: dict, n_images: int, seed: int, index: dict | None = None):
        """index: {set name: [len(set)] indices of its images in a larger set}, to report the
        closest pairs in that set's numbering (their own if None)."""
        self.reference_images, self.sets, self.seed, self.index = reference, sets, seed, index
        self.reference = duplicates.PairTable(reference, n_images, seed, stream=0)
        self.tables = {name: duplicates.PairTable(x, n_images, seed, stream=1) for name, x in sets.items()}
        self.sizes = {'reference': n_images, **{name: n_images for name in sets}}
        self.threshold = duplicates.closest_pair_distance(reference, table=self.reference)

    def exact(self):
        """duplicate_share per set (sharing the tables and the threshold), kept in self.details."""
        n = len(self.reference.rows)
        self.details = {}
        for name, x in self.sets.items():
            r = duplicates.duplicate_share(self.reference_images, x, n, self.seed,
                                           threshold=self.threshold, table=self.tables[name])
            if self.index is not None:
                index = self.index[name]
                r['closest_pairs'] = [[int(index[i]), int(index[j]), d] for i, j, d in r['closest_pairs']]
            self.details[name] = r
        return {name: {'duplicate_share': r['share']} for name, r in self.details.items()}

    def values(self, rows):
        return {name: {'duplicate_share': duplicates.resampled_share(
                    self.reference, self.tables[name], rows['reference'], rows[name])}
                for name in self.tables}


class SWDForm(Form):
    """SWD per level and averaged; exact values given, spread from swd.resampled_swd."""
    scheme, n_resamples = 'half', 20

    def __init__(self, raw: dict, exact: dict, seed: int):
        self.projections = {role: swd.ResamplingProjections(r, seed) for role, r in raw.items()}
        self.sizes = {role: p.n for role, p in self.projections.items()}
        self.resolutions = exact[next(iter(exact))]['resolutions']
        self._exact = {name: self._metrics(e['per_level']) for name, e in exact.items()}

    def _metrics(self, per_level) -> dict:
        out = {f'swd_{r}': v for r, v in zip(self.resolutions, per_level)}
        out['swd'] = float(np.mean(per_level))
        return out

    def exact(self):
        return self._exact

    def values(self, rows):
        ref = self.projections['reference']
        ref_rows = rows['reference']
        ref_rows = np.arange(ref.n) if ref_rows is None else ref_rows
        ref_sorted = [ref.sorted_level(i, ref_rows) for i in range(len(ref.levels))]
        out = {}
        for name in self.set_names():
            set_rows = rows[name]
            set_rows = np.arange(self.sizes[name]) if set_rows is None else set_rows
            out[name] = self._metrics(swd.resampled_swd(ref, self.projections[name], ref_rows,
                                                        set_rows, ref_sorted))
        return out


class MSSSIMForm(Form):
    """MS-SSIM diversity from per-pair values; a resample keeps the pairs inside its images."""
    scheme, n_resamples = 'half', 200

    def __init__(self, pairs: dict):
        """pairs: {set name: (n images, pairs [P, 2], values [P])} (msssim.ms_ssim_pairs)."""
        self.pairs = pairs
        self.sizes = {name: n for name, (n, _, _) in pairs.items()}

    def values(self, rows):
        out = {}
        for name, (n, pairs, values) in self.pairs.items():
            if rows[name] is not None:
                inside = np.zeros(n, bool)
                inside[rows[name]] = True
                values = values[inside[pairs[:, 0]] & inside[pairs[:, 1]]]
            out[name] = {'ms_ssim': float(values.mean()) if len(values) else float('nan')}
        return out


def resample(form: Form, rng: np.random.Generator):
    """{set: {metric: [B] float64}}: form.values on form.n_resamples resamples.

    The resamples are drawn in order first, then measured on all cores
    (thread_map): the same values as one after the other.
    """
    draws = [{role: draw(n, form.scheme, rng) for role, n in form.sizes.items()}
             for _ in range(form.n_resamples)]
    collected = {}
    for values in thread_map(form.values, draws):
        for name, metrics in values.items():
            for metric, v in metrics.items():
                collected.setdefault(name, {}).setdefault(metric, []).append(v)
    return {name: {m: np.asarray(v, np.float64) for m, v in d.items()} for name, d in collected.items()}


@dataclasses.dataclass
class Measured:
    """Each set's exact values and resampled values, metric by metric.

    values: {set: {metric: float}}; resampled: {set: {metric: [B] float64}};
    scheme: {metric: 'bootstrap' | 'half'}.
    """
    values: dict
    resampled: dict
    scheme: dict

    def interval(self, name: str, metric: str, confidence: float = CONFIDENCE) -> dict:
        """{'value', 'low', 'high', 'se', 'n_resamples'}; se is the resamples' standard deviation."""
        value = self.values[name][metric]
        samples = self.resampled[name][metric]
        samples = samples[np.isfinite(samples)]
        se = float(np.std(samples, ddof=1)) if len(samples) > 1 else float('nan')
        t = scipy.stats.t.ppf(0.5 + confidence / 2, max(len(samples) - 1, 1))
        low, high = value - t * se, value + t * se
        bounds = FAMILY[metric].bounds if metric in FAMILY else (0.0, None)
        if bounds[0] is not None:
            low, high = max(low, bounds[0]), max(high, bounds[0])
        if bounds[1] is not None:
            low, high = min(low, bounds[1]), min(high, bounds[1])
        return {'value': float(value), 'low': float(low), 'high': float(high), 'se': se,
                'n_resamples': len(samples)}


def measure(forms: list, seed: int) -> Measured:
    """Exact and resampled values of every form, each form with its own seeded stream."""
    values, resampled, scheme = {}, {}, {}
    for i, form in enumerate(forms):
        for name, metrics in form.exact().items():
            values.setdefault(name, {}).update(metrics)
            scheme.update({m: form.scheme for m in metrics})
        for name, metrics in resample(form, np.random.default_rng([seed, 7, i])).items():
            resampled.setdefault(name, {}).update(metrics)
    return Measured(values, resampled, scheme)

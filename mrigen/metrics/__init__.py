"""Evaluation metrics (docs/metrics.md): numpy, scipy, scikit-learn, no pretrained networks.

The paper's rho, sigma, delta (pca), and beyond the paper SWD (swd), MS-SSIM
diversity (msssim), PCA-FD (frechet), a nearest-neighbour memorization check
(memorization), and the metrics that see texture: the radial power spectrum
distance (spectrum), KID, a Frechet distance, precision, recall, density and
coverage on a fixed random network's features (features, kid, prdc), and the
near-duplicate share (duplicates). evaluate_sets computes all of them for a
generated set and a held-out real set against a reference set, each with a
resampled interval (comparison), and says which metrics tell the generated
set from the real floor (verdict); report.write_report writes them out.
"""

import numpy as np

from mrigen.metrics import (
    comparison,
    duplicates,
    features,
    frechet,
    kid,
    memorization,
    msssim,
    pca,
    prdc,
    spectrum,
    swd,
    verdict,
)
from mrigen.metrics._util import as_float_images, subsample

METRICS = {
    'realism': pca.realism,
    'total_variation': pca.total_variation,
    'swd': swd.swd,
    'ms_ssim': msssim.ms_ssim_diversity,
    'pca_fd': frechet.pca_frechet_distance,
    'memorization': memorization.memorization,
    'spectrum': spectrum.spectrum_distance,
    'random_features': features.random_features,
    'feature_fd': features.feature_frechet_distance,
    'kid': kid.kid,
    'prdc': prdc.prdc,
    'duplicate_share': duplicates.duplicate_share,
}
FLOOR = 'held-out real'


def get_metric(name: str):
    """The metric function registered under name."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f'unknown metric {name!r}; known: {", ".join(sorted(METRICS))}') from None


def evaluate_sets(train, generated, real_holdout=None, basis=None, rng_seed: int = 0, *,
                  n_msssim_pairs: int = 1000, swd_max_images: int | None = 2048,
                  memorization_queries: int | None = 1000, floor_in_sample: bool = True,
                  spectrum_max_images: int | None = 2048, feature_max_images: int | None = 5000,
                  duplicate_images: int | None = 1000, level: float = verdict.LEVEL) -> dict:
    """All metrics for a generated set (and a held-out real set) against a training set.

    train, generated, real_holdout: [N, H, W(, 1)] float32 in [-1, 1] or uint8.
    basis: a PCABasis of the training set (fitted here, 16 components, if None).
    Rows 'training data' (the reference), 'generated' and 'held-out real'
    (the real-vs-real floor) each get n, rho, sigma, delta and ms_ssim; the
    last two also get SWD, PCA-FD and the memorization summary against the
    training set. SWD uses the same number of images from every set. When
    set sizes differ, every row also gets sigma and delta of a seeded random
    subset of the smallest set's size (sigma_common, delta_common, n_common).

    The last two rows also get 'texture': each metric of
    comparison.FAMILY as {'value', 'low', 'high', 'se', 'n_resamples'} (a
    95% interval), with the details of each ('spectrum', 'kid',
    'feature_fd', 'prdc', 'duplicates'), measured on the same number of
    images from both (a seeded choice of the smaller set's size) and
    capped: spectrum_max_images for the spectrum, feature_max_images for
    the feature metrics, duplicate_images for the duplicate share. With a
    held-out set, the generated row gets 'distinguishable_by' (the metrics
    by which it is worse than the floor, verdict.verdict at family-wise
    level `level`; empty when none) and 'verdict' (each metric's test); the
    floor gets no verdict. floor_in_sample: whether the held-out real
    images were part of the generator's training data (then the floor
    measures the metrics' noise, not generalization); recorded for the
    report. Returns a JSON-ready dict (report.write_report writes it).
    """
    sets = {'training data': as_float_images(train), 'generated': as_float_images(generated)}
    if real_holdout is not None:
        sets[FLOOR] = as_float_images(real_holdout)
    shapes = {x.shape[1:] for x in sets.values()}
    if len(shapes) != 1:
        raise ValueError(f'image shapes differ: {shapes}')
    train = sets['training data']
    if basis is None:
        basis = pca.fit_pca_basis(train, seed=rng_seed)
    n_common = min(len(x) for x in sets.values())
    n_swd = min(n_common, swd_max_images or n_common)
    index = memorization.TrainingIndex(train)
    train_nn = memorization.train_nn_distances(train, memorization_queries, rng_seed, index)
    rows, coords = {}, {}
    for name, x in sets.items():
        # One pass over the images for rho's projection and sigma; delta's Krylov
        # basis starts from the PCA coordinates (pca.project_and_spectrum).
        coords[name], sq_norm, spectrum_ = pca.project_and_spectrum(x, basis, seed=rng_seed)
        row = {'n': len(x), 'rho': float(pca.realism_from_projection(coords[name], sq_norm).mean())}
        row.update(_spectrum_fields(spectrum_))
        if n_common < len(x):
            chosen = subsample(len(x), n_common, np.random.default_rng([rng_seed, 3]))
            row.update({f'{k}_common': v
                        for k, v in _spectrum_row(x[chosen], rng_seed, coords[name][chosen]).items()})
        if name == 'training data':
            row['ms_ssim'] = msssim.ms_ssim_diversity(x, n_msssim_pairs, rng_seed)
            row['memorization'] = {'train_nn_median': float(np.median(train_nn[1])),
                                   'train_nn_mean': float(np.mean(train_nn[1])),
                                   'n_train_queries': len(train_nn[0])}
        else:
            row['pca_fd'] = frechet.frechet_distance(
                *frechet.gaussian_stats(coords['training data']),
                *frechet.gaussian_stats(coords[name]))
            mem = memorization.memorization(x, train, memorization_queries, seed=rng_seed,
                                            train_nn=train_nn, index=index)
            row['memorization'] = mem['summary']
            row['closest_pairs'] = mem['closest_pairs']
        rows[name] = row
    caps = {'spectrum_max_images': spectrum_max_images, 'feature_max_images': feature_max_images,
            'duplicate_images': duplicate_images}
    compared = compare_sets(train, {name: x for name, x in sets.items() if name != 'training data'},
                            basis, rng_seed, coords=coords, n_msssim_pairs=n_msssim_pairs,
                            swd_images=n_swd, level=level, floor_in_sample=floor_in_sample, **caps)
    for name, fields in compared.pop('sets').items():
        rows[name].update(fields)
    return {
        'sets': rows,
        'basis': {'n_components': basis.n_components,
                  'explained_variance_16': float(basis.explained_variance_ratio[:16].sum())},
        **compared,
        'config': {'rng_seed': rng_seed, 'n_msssim_pairs': n_msssim_pairs,
                   'swd_images': n_swd, 'memorization_queries': memorization_queries, **caps},
    }


def compare_sets(train, compared: dict, basis, rng_seed: int = 0, *, coords: dict | None = None,
                 n_msssim_pairs: int = 1000, swd_images: int | None = 2048,
                 spectrum_max_images: int | None = 2048, feature_max_images: int | None = 5000,
                 duplicate_images: int | None = 1000, level: float = verdict.LEVEL,
                 floor_in_sample: bool = True) -> dict:
    """The metrics of comparison.FAMILY for each compared set against train, with the verdict.

    train: [N, H, W(, 1)] float32 in [-1, 1], the reference; compared: {name:
    images}, FLOOR ('held-out real') among them for a verdict. basis: the
    PCABasis of the PCA-FD; coords: pca.project's coordinates per name
    ('training data' for train), computed if None. swd_images: images per
    set for SWD (at most the smallest set's size). The rest as
    evaluate_sets. Returns {'sets': {name: {'ms_ssim', 'swd', 'texture',
    'spectrum', 'kid', 'feature_fd', 'prdc', 'duplicates' and, for sets
    other than the floor, 'distinguishable_by' and 'verdict'}},
    'comparison': how the intervals and the verdict were made,
    'spectrum_profiles': each set's mean log power per ring}.
    """
    train = as_float_images(train)
    compared = {name: as_float_images(x) for name, x in compared.items()}
    if coords is None:
        coords = {name: pca.project(x, basis)[0]
                  for name, x in {'training data': train, **compared}.items()}
    n_swd = min([len(train)] + [len(x) for x in compared.values()] + [swd_images or len(train)])
    caps = {'spectrum_max_images': spectrum_max_images, 'feature_max_images': feature_max_images,
            'duplicate_images': duplicate_images}
    forms, sizes = _forms(train, compared, coords, rng_seed, caps)
    rows = {}
    raw = {}
    for name, result in swd.swd_against(train, compared, n_swd, rng_seed, raw=raw).items():
        rows[name] = {'swd': result}
    forms['swd'] = comparison.SWDForm(raw, {name: rows[name]['swd'] for name in compared}, rng_seed)
    msssim_pairs = {}
    for name, x in compared.items():
        pairs, values = msssim.ms_ssim_pairs(x, n_msssim_pairs, rng_seed)
        rows[name]['ms_ssim'] = float(values.mean())
        msssim_pairs[name] = (len(x), pairs, values)
    forms['ms_ssim'] = comparison.MSSSIMForm(msssim_pairs)
    measured = comparison.measure(list(forms.values()), rng_seed)
    for name, row in rows.items():
        row['texture'] = {m: measured.interval(name, m) for m in comparison.FAMILY}
        swd_intervals = [measured.interval(name, f'swd_{r}') for r in row['swd']['resolutions']]
        row['swd']['per_level_low'] = [i['low'] for i in swd_intervals]
        row['swd']['per_level_high'] = [i['high'] for i in swd_intervals]
        row.update(_texture_details(name, measured, forms, sizes))
        if FLOOR in compared and name != FLOOR:
            result = verdict.verdict(measured, name, FLOOR, level)
            row['distinguishable_by'] = result['distinguishable_by']
            row['verdict'] = result['tests']
    first = next(iter(rows.values()))['texture']
    return {
        'sets': rows,
        'comparison': {
            'floor': FLOOR if FLOOR in compared else None, 'floor_in_sample': bool(floor_in_sample),
            'family_wise_level': level, 'confidence': comparison.CONFIDENCE,
            'test': 'one-sided t on the resampled difference from the floor, Holm over the family',
            'metrics': {m: {'worse': spec.worse, 'resampling': measured.scheme[m],
                            'n_resamples': first[m]['n_resamples'], 'description': spec.description}
                        for m, spec in comparison.FAMILY.items()},
            'n_images': {**sizes, 'swd': n_swd},
        },
        'spectrum_profiles': {'frequencies': spectrum.ring_frequencies(train.shape[1]),
                              **{'training data' if role == 'reference' else role: p.mean(axis=0)
                                 for role, p in forms['spectrum'].profiles.items()}},
    }


def _forms(train, compared: dict, coords: dict, seed: int, caps: dict):
    """The comparison forms of the compared sets against train, and the number of images each used.

    The compared sets are first cut to one size, the smallest one's, by one
    seeded choice (a set identical to another gets identical values), then
    each form takes its own capped seeded choice of every set.
    """
    n = min(len(x) for x in compared.values())
    chosen = {name: subsample(len(x), n, np.random.default_rng([seed, 10])) for name, x in compared.items()}
    cut = {name: x if len(x) == n else x[chosen[name]] for name, x in compared.items()}  # no copy

    def per_set(fn, cap, stream):
        """fn(images, index) of a capped seeded choice of each set (gathered by fn chunk by chunk)."""
        rows = subsample(n, cap, np.random.default_rng([seed, stream, 1]))
        ref_rows = subsample(len(train), cap, np.random.default_rng([seed, stream, 0]))
        return {'reference': fn(train, ref_rows),
                **{name: fn(x, rows if len(x) == n else chosen[name][rows]) for name, x in compared.items()}}

    profiles = per_set(lambda x, rows: spectrum.radial_profiles(x, index=rows),
                       caps['spectrum_max_images'], 11)
    network = features.feature_network(train.shape[1])
    feats = per_set(lambda x, rows: features.random_features(x, network, index=rows),
                    caps['feature_max_images'], 12)
    n_dup = min(caps['duplicate_images'] or n, len(train), n)
    pca_coords = {'reference': coords['training data'],
                  **{name: coords[name][chosen[name]] for name in compared}}
    forms = {'spectrum': comparison.SpectrumForm(profiles, train.shape[1]),
             'feature_fd': comparison.FrechetForm(feats, 'feature_fd'),
             'kid': comparison.KIDForm(feats, seed),
             'prdc': comparison.PRDCForm(feats),
             'duplicates': comparison.DuplicateForm(train, cut, n_dup, seed, index=chosen),
             'pca_fd': comparison.FrechetForm(pca_coords, 'pca_fd', n_resamples=100)}
    sizes = {'compared': n, 'spectrum_reference': len(profiles['reference']),
             'spectrum': len(profiles[next(iter(compared))]),
             'features_reference': len(feats['reference']), 'features': len(feats[next(iter(compared))]),
             'duplicates': n_dup}
    return forms, sizes


def _texture_details(name: str, measured, forms: dict, sizes: dict) -> dict:
    """The texture metrics' own fields for one compared set (beside the intervals)."""
    values = measured.values[name]
    return {
        'spectrum': {'distance': values['spectrum'], 'distance_high': values['spectrum_high'],
                     'n_images': sizes['spectrum'], 'n_reference': sizes['spectrum_reference']},
        'kid': forms['kid'].details[name],
        'feature_fd': values['feature_fd'],
        'prdc': {k: values[k] for k in ('precision', 'recall', 'density', 'coverage')}
                | {'k_pr': 3, 'k_dc': 5, 'n_images': sizes['features'],
                   'n_reference': sizes['features_reference']},
        'duplicates': forms['duplicates'].details[name],
    }


def _spectrum_row(x: np.ndarray, seed: int, coords: np.ndarray) -> dict:
    """sigma and delta of x, the Krylov started from its PCA coordinates (pca.covariance_spectrum)."""
    return _spectrum_fields(pca.covariance_spectrum(x, seed=seed, start=coords))


def _spectrum_fields(spectrum) -> dict:
    return {'n': spectrum.n, 'sigma': spectrum.sigma, 'delta': spectrum.count_above(),
            'delta_certified': spectrum.certified}


__all__ = ['FLOOR', 'METRICS', 'as_float_images', 'compare_sets', 'evaluate_sets', 'get_metric']

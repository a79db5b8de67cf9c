"""Writes evaluate_sets' results: eval.json, report.md and spectrum.png.

report.md holds the paper's Table 3 (rho, sigma (N), delta), the verdict
sentence per evaluated set, the texture and distribution metrics with their
intervals, and SWD per level; spectrum.png the radially averaged power
spectra of the reference, held-out real and generated sets.
"""

import json
import math
import os

import numpy as np

from mrigen.metrics import spectrum
from mrigen.metrics._util import atomic_write, save_grid_png

FLOOR = 'held-out real'
ROWS = ('training data', 'generated', FLOOR)
SPECTRUM_PNG = 'spectrum.png'


def to_json(value):
    """numpy scalars and arrays -> plain Python; NaN and infinities -> None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_report(results: dict, out_dir) -> None:
    """Writes out_dir/eval.json (all of results), out_dir/report.md (tables and verdict), and
    out_dir/spectrum.png when results hold spectrum profiles (save_spectrum_png)."""
    os.makedirs(out_dir, exist_ok=True)
    text = json.dumps(to_json(results), indent=2, allow_nan=False) + '\n'
    atomic_write(os.path.join(out_dir, 'eval.json'), lambda f: f.write(text.encode()))
    markdown = render_markdown(results)
    atomic_write(os.path.join(out_dir, 'report.md'), lambda f: f.write(markdown.encode()))
    if results.get('spectrum_profiles'):
        save_spectrum_png(results, os.path.join(out_dir, SPECTRUM_PNG))


def save_spectrum_png(results: dict, path) -> None:
    """PNG of each set's mean log10 power per ring (results['spectrum_profiles']), one line per set."""
    profiles = dict(results['spectrum_profiles'])
    frequencies = profiles.pop('frequencies')
    labels = {'training data': 'reference (training data)', FLOOR: 'held-out real (floor)'}
    spectrum.save_spectrum_plot(frequencies, {labels.get(k, k): v for k, v in profiles.items()},
                                path, title='radially averaged power spectrum')


def render_markdown(results: dict) -> str:
    """The report as Markdown: Table 3's layout, the verdict, the texture metrics, SWD per level."""
    sets = results['sets']
    names = [name for name in ROWS if name in sets]
    lines = ['# Evaluation', ''] + _floor_lines(results) + [
        'rho, sigma, delta as in the paper (Table 3); sigma grows with N, so compare '
        'rows of equal N. SWD (x1e3) and PCA-FD are against the training set; the '
        'held-out real row is the real-vs-real floor. MS-SSIM: mean over random pairs '
        'within the set (lower is more diverse). NN-L2: median distance to the nearest '
        'training image (training row: leave-one-out), with the fraction of images '
        'closer than the 5th percentile of the training set\'s own distances.', '',
        '| set | rho | sigma (N) | delta | SWD avg | MS-SSIM | PCA-FD | NN-L2 median (< train p5) |',
        '|---|---|---|---|---|---|---|---|']
    for name in names:
        row = sets[name]
        lines.append('| ' + ' | '.join([
            name, _fmt(row.get('rho'), 3), f"{_fmt(row.get('sigma'), 1)} ({row.get('n', '-')})",
            _fmt(row.get('delta'), 0), _fmt(row.get('swd', {}).get('avg'), 2),
            _fmt(row.get('ms_ssim'), 4), _fmt(row.get('pca_fd'), 2), _memorization_cell(row),
        ]) + ' |')
    lines += _common_size_table(sets, names) + _verdict_lines(results) + _class_lines(results)
    lines += _texture_table(results) + _swd_table(sets, names) + _basis_lines(results)
    return '\n'.join(lines) + '\n'


def _floor_lines(results: dict) -> list:
    comparison = results.get('comparison')
    if not comparison:
        return []
    if comparison.get('floor') is None:
        return ['No held-out real set was given: the metrics have no real-vs-real floor and '
                'there is no verdict.', '']
    if comparison.get('floor_in_sample', True):
        return ['**The floor is in-sample.** The held-out real images were part of the '
                'training set, so the floor measures the metrics\' own noise between two '
                'samples of the training data, not how the generator does against real images '
                'it has not seen.', '']
    return ['The floor is out-of-sample: the held-out real images were not used in training.', '']


def _verdict_lines(results: dict) -> list:
    comparison = results.get('comparison')
    if not comparison or comparison.get('floor') is None:
        return []
    level, k = comparison['family_wise_level'], len(comparison['metrics'])
    lines = ['', '## Verdict', '']
    for name, row in results['sets'].items():
        if 'distinguishable_by' not in row:
            continue
        if row['distinguishable_by']:
            lines.append(f"- {name}: distinguishable from real data by "
                         f"{', '.join(row['distinguishable_by'])} (family-wise level {level:g}).")
        else:
            lines.append(f'- {name}: not distinguishable from held-out real data by any of the '
                         f'{k} metrics (family-wise level {level:g}).')
    lines += [f"- {comparison['floor']}: the floor itself (no verdict).", '',
              'A metric names a set when the set is worse than the floor by more than the '
              'noise of both allows: a one-sided test of the difference set minus floor, its '
              'standard error from the same resamples of both (the reference resample shared), '
              f'Student\'s t; Holm\'s procedure over the {k} metrics keeps the chance of naming '
              f'any metric for a set as real as the floor at most {level:g}.']
    return lines


def _class_lines(results: dict) -> list:
    """One row per class of a conditional run (mrigen.class_evaluation): its generated images against its real ones."""
    classes = results.get('classes')
    if not classes:
        return []
    lines = ['', '## Per class', '',
             "Each class's generated images against that class's reference and held-out real images, with the "
             'same metrics and verdict; each class\'s whole report is in classes/<class>/. rho: generated '
             '(held-out real).', '',
             '| class | images (reference / held-out / generated) | rho | spectrum | KID x1e3 | feature FD '
             '| precision / recall | coverage | PCA-FD | named by |', '|' + '---|' * 10]
    for name, row in classes.items():
        counts = f"{row['n_reference']} / {row['n_floor']} / {row['n_generated']}"
        if 'skipped' in row:
            lines.append(f"| {name} | {counts} | not evaluated: {row['skipped']} |" + ' |' * 7)
            continue
        named = ', '.join(row['distinguishable_by']) or 'none'
        lines.append('| ' + ' | '.join([
            name, counts, f"{_fmt(row['rho'], 3)} ({_fmt(row['rho_floor'], 3)})", _num(row['spectrum']),
            _num(1e3 * row['kid']), _num(row['feature_fd']),
            f"{_fmt(row['precision'], 2)} / {_fmt(row['recall'], 2)}", _fmt(row['coverage'], 2),
            _num(row['pca_fd']), f"{len(row['distinguishable_by'])} of {row['metrics']} ({named})"]) + ' |')
    return lines


def _texture_table(results: dict) -> list:
    comparison = results.get('comparison')
    if not comparison:
        return []
    sets = results['sets']
    shown = [name for name in sets if 'texture' in sets[name] and name != FLOOR]
    shown += [FLOOR] if 'texture' in sets.get(FLOOR, {}) else []
    tested = [name for name in shown if 'verdict' in sets[name]]
    header = ['metric', 'worse'] + [f'{name} (floor)' if name == FLOOR else name for name in shown]
    for name in tested:
        header += [f'p ({name})', 'named']
    header.append('resampled')
    lines = ['', '## Texture and distribution metrics', '',
             f"Each value against the training data, with its {comparison['confidence']:.0%} "
             'interval [low, high] from resampling the per-image forms (bootstrap, or '
             'half-sampling without replacement where copies would bias the metric). p: the '
             'one-sided test of the verdict, small when the set is worse than the floor; '
             'named: the verdict names the metric.', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for metric, spec in comparison['metrics'].items():
        scale, label = (1e3, 'kid x1e3') if metric == 'kid' else (1.0, metric)
        cells = [label, spec['worse']]
        for name in shown:
            t = sets[name]['texture'][metric]
            cells.append(f"{_num(scale * t['value'])} [{_num(scale * t['low'])}, "
                         f"{_num(scale * t['high'])}]")
        for name in tested:
            test = sets[name]['verdict'][metric]
            cells += [_p(test['p']), 'yes' if test['flagged'] else '']
        cells.append(f"{spec['resampling']} x{spec['n_resamples']}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    n = comparison['n_images']
    lines += ['', f"Images: {n['compared']} per compared set (cut to one size); spectrum "
                  f"{n['spectrum']} (reference {n['spectrum_reference']}); random features "
                  f"{n['features']} (reference {n['features_reference']}); duplicate share "
                  f"{n['duplicates']}; SWD {n['swd']}.", '',
              'Metrics: ' + '; '.join(f"{m}: {spec['description']}"
                                      for m, spec in comparison['metrics'].items()) + '.']
    return lines


def _memorization_cell(row: dict) -> str:
    mem = row.get('memorization')
    if not mem:
        return '-'
    if 'nn_median' in mem:
        return f"{mem['nn_median']:.2f} ({mem['frac_below_train_p5']:.3f})"
    return f"{mem['train_nn_median']:.2f}"


def _common_size_table(sets: dict, names: list) -> list:
    if not any('sigma_common' in sets[name] for name in names):
        return []
    lines = ['', 'At a common size (a seeded random subset of each set):', '',
             '| set | sigma (N) | delta |', '|---|---|---|']
    for name in names:
        row = sets[name]
        sigma = row.get('sigma_common', row.get('sigma'))
        delta = row.get('delta_common', row.get('delta'))
        lines.append(f"| {name} | {_fmt(sigma, 1)} ({row.get('n_common', row.get('n'))}) "
                     f"| {_fmt(delta, 0)} |")
    return lines


def _swd_table(sets: dict, names: list) -> list:
    with_swd = [name for name in names if 'swd' in sets[name]]
    if not with_swd:
        return []
    resolutions = sets[with_swd[0]]['swd']['resolutions']
    lines = ['', f"SWD x1e3 per level ({sets[with_swd[0]]['swd']['n']} images per set), "
                 'each with its 95% interval:', '',
             '| set | ' + ' | '.join(f'{r}' for r in resolutions) + ' | avg |',
             '|---|' + '---|' * (len(resolutions) + 1)]
    for name in with_swd:
        s = sets[name]['swd']
        lows = s.get('per_level_low', [None] * len(s['per_level']))
        highs = s.get('per_level_high', [None] * len(s['per_level']))
        cells = [_with_interval(v, lo, hi) for v, lo, hi in zip(s['per_level'], lows, highs)]
        avg = sets[name].get('texture', {}).get('swd', {})
        cells.append(_with_interval(s['avg'], avg.get('low'), avg.get('high')))
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return lines


def _with_interval(value, low, high) -> str:
    if low is None or high is None:
        return _fmt(value, 2)
    return f'{_fmt(value, 2)} [{_fmt(low, 2)}, {_fmt(high, 2)}]'


def _basis_lines(results: dict) -> list:
    basis = results.get('basis')
    if not basis:
        return []
    return ['', f"PCA basis: {basis['n_components']} components, "
                f"{basis['explained_variance_16']:.3f} of the training variance in the first 16."]


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '-'
    return f'{value:.{digits}f}'


def _num(value) -> str:
    """About 3 significant digits, in exponent form only below 1e-4."""
    if value is None or not math.isfinite(value):
        return '-'
    magnitude = abs(value)
    if magnitude == 0:
        return '0'
    if magnitude < 1e-4:
        return f'{value:.2e}'
    return f'{value:.{max(2 - math.floor(math.log10(magnitude)), 0)}f}'


def _p(p) -> str:
    if p is None or not math.isfinite(p):
        return '-'
    return '< 1e-6' if p < 1e-6 else f'{p:.2g}'


def save_side_by_side_png(real, generated, path, n: int = 8) -> None:
    """PNG of the first n real images in a row above the first n generated ones.

    real, generated: [N, H, W(, 1)] in [-1, 1] (or uint8), same H, W.
    """
    save_grid_png([np.asarray(real)[:n], np.asarray(generated)[:n]], path)

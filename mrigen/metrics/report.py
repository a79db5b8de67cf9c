"""Writes evaluate_sets' results: eval.json and a report.md in the layout of the paper's Table 3."""

import json
import math
import os

import numpy as np

from mrigen.metrics._util import atomic_write, save_grid_png

ROWS = ('training data', 'generated', 'held-out real')


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
    """Writes out_dir/eval.json (all of results) and out_dir/report.md (the tables)."""
    os.makedirs(out_dir, exist_ok=True)
    text = json.dumps(to_json(results), indent=2, allow_nan=False) + '\n'
    atomic_write(os.path.join(out_dir, 'eval.json'), lambda f: f.write(text.encode()))
    markdown = render_markdown(results)
    atomic_write(os.path.join(out_dir, 'report.md'), lambda f: f.write(markdown.encode()))


def render_markdown(results: dict) -> str:
    """The report as Markdown: Table 3's layout plus the metrics beyond the paper."""
    sets = results['sets']
    names = [name for name in ROWS if name in sets]
    lines = ['# Evaluation', '',
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
    lines += _common_size_table(sets, names) + _swd_table(sets, names) + _basis_lines(results)
    return '\n'.join(lines) + '\n'


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
    lines = ['', f"SWD x1e3 per level ({sets[with_swd[0]]['swd']['n']} images per set):", '',
             '| set | ' + ' | '.join(f'{r}' for r in resolutions) + ' | avg |',
             '|---|' + '---|' * (len(resolutions) + 1)]
    for name in with_swd:
        s = sets[name]['swd']
        lines.append(f'| {name} | ' + ' | '.join(_fmt(v, 2) for v in s['per_level'])
                     + f" | {_fmt(s['avg'], 2)} |")
    return lines


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


def save_side_by_side_png(real, generated, path, n: int = 8) -> None:
    """PNG of the first n real images in a row above the first n generated ones.

    real, generated: [N, H, W(, 1)] in [-1, 1] (or uint8), same H, W.
    """
    save_grid_png([np.asarray(real)[:n], np.asarray(generated)[:n]], path)

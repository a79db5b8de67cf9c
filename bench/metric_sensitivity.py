"""How each evaluation metric answers graded degradations of held-out real images.

The embedded MNI152 slices are split into two halves with a fixed seed (the
reference and the held-out real set, as an in-sample evaluation does); the
held-out half is degraded at three strengths per kind and evaluated with
metrics.evaluate_sets as the generated set, the clean held-out half as the
floor. Prints a Markdown table, one row per degradation: the generated set's
value of each metric of the verdict's family, in bold where the verdict names
it, and the metrics named.

Run (the table in docs/metrics.md; ~2 minutes on 2 cores at 64 px):
  .venv/bin/python bench/metric_sensitivity.py --out /tmp/sensitivity.md
False alarms: the share of random real-vs-real splits (MNI152 slices cut into
random thirds: reference, "generated", floor) the verdict names any metric for:
  .venv/bin/python bench/metric_sensitivity.py --null-splits 100
"""

import argparse
import os
import sys
import time

import numpy as np
import scipy.ndimage

from mrigen import data, metrics
from mrigen.metrics import comparison, pca

SPLIT_SEED = 20020527  # the in-sample halves of an evaluation without a holdout
BRAIN = -0.95  # pixels above this (in [-1, 1]) count as brain: the background is -1
NOISE = (0.1, 0.2, 0.4)  # sd of Gaussian speckle inside the brain
BLUR = (0.5, 1.0, 1.5)  # Gaussian blur sigma, pixels
CHECKER = (0.05, 0.1, 0.15)  # amplitude of a period-2 checkerboard inside the brain
CONTRAST = (0.9, 0.8, 0.7)  # brain intensities scaled about the brain's mean
SHIFT = (0.05, 0.1, 0.2)  # added to brain intensities
UNIQUE = (16, 8, 4)  # distinct images repeated to fill the set
DROPPED = (1 / 6, 1 / 3, 1 / 2)  # lowest share of the axial slices left out (cerebellum first)


def degradations(held: np.ndarray, seed: int = 0):
    """Yields (kind, strength label, images) for every degradation of held [N, R, R, 1] in [-1, 1].

    held must be in axial order (MNI152 slices are, bottom first), for the
    missing anatomical range.
    """
    brain = held > BRAIN
    white = np.random.default_rng([seed, 1]).standard_normal(held.shape).astype(np.float32)
    checker = (np.indices(held.shape[1:3]).sum(axis=0) % 2 * 2 - 1)[None, :, :, None]
    for s in NOISE:
        yield 'noise', f'sd {s}', np.clip(held + s * brain * white, -1, 1)
    for s in BLUR:
        yield 'blur', f'{s} px', scipy.ndimage.gaussian_filter(held, (0, s, s, 0), mode='nearest')
    for a in CHECKER:
        yield 'checkerboard', f'+-{a}', np.clip(held + a * brain * checker, -1, 1).astype(np.float32)
    mean = (held * brain).sum(axis=(1, 2, 3), keepdims=True) / np.maximum(
        brain.sum(axis=(1, 2, 3), keepdims=True), 1)
    for c in CONTRAST:
        yield 'contrast', f'x{c}', np.where(brain, mean + c * (held - mean), held).astype(np.float32)
    for s in SHIFT:
        yield 'intensity', f'+{s}', np.where(brain, np.clip(held + s, -1, 1), held).astype(np.float32)
    for k in UNIQUE:
        chosen = np.random.default_rng([seed, 2, k]).choice(len(held), k, replace=False)
        yield 'duplication', f'{k} images', held[np.resize(chosen, len(held))]
    for share in DROPPED:
        yield 'missing range', f'lowest {share:.0%}', held[round(share * len(held)):]


def halves(images: np.ndarray):
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    half = len(images) // 2
    return images[np.sort(order[:half])], images[np.sort(order[half:2 * half])]


def sensitivity_table(reference, held, seed: int = 0) -> str:
    """The Markdown table of every degradation's values and verdicts (evaluate_sets' defaults)."""
    basis = pca.fit_pca_basis(reference, seed=seed)
    names = list(comparison.FAMILY)
    header = ['degradation', 'strength'] + names + ['named by']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]

    def row(kind, label, generated):
        start = time.perf_counter()
        results = metrics.evaluate_sets(reference, generated, held, basis, rng_seed=seed)
        result = results['sets']['generated']
        named = result['distinguishable_by']
        cells = [kind, label]
        for m in names:
            v = result['texture'][m]['value'] * (1e3 if m == 'kid' else 1)
            cells.append(f'**{_num(v)}**' if m in named else _num(v))
        cells.append(', '.join(named) if named else 'none')
        lines.append('| ' + ' | '.join(cells) + ' |')
        print(lines[-1], f'({time.perf_counter() - start:.1f} s)', file=sys.stderr, flush=True)
        return results

    results = row('none', 'held-out real itself', held)
    floor = results['sets'][metrics.FLOOR]['texture']
    lines.insert(2, '| floor (held-out real) | value [95% interval] | ' + ' | '.join(
        f"{_num(floor[m]['value'] * s)} [{_num(floor[m]['low'] * s)}, {_num(floor[m]['high'] * s)}]"
        for m, s in ((m, 1e3 if m == 'kid' else 1) for m in names)) + ' | |')
    for kind, label, generated in degradations(held, seed):
        row(kind, label, generated)
    return '\n'.join(lines) + '\n'


def null_splits(images, splits: int, seed: int = 0) -> str:
    """How often the verdict names a metric for random real-vs-real thirds of images."""
    counts = {m: 0 for m in comparison.FAMILY}
    named_any = 0
    third = len(images) // 3
    for s in range(splits):
        order = np.random.default_rng([seed, 5, s]).permutation(len(images))
        ref, gen, floor = (images[np.sort(order[i * third:(i + 1) * third])] for i in range(3))
        results = metrics.evaluate_sets(ref, gen, floor, rng_seed=s, memorization_queries=16)
        named = results['sets']['generated']['distinguishable_by']
        named_any += bool(named)
        for m in named:
            counts[m] += 1
        print(f'split {s}: {", ".join(named) or "none"}', file=sys.stderr, flush=True)
    per_metric = ', '.join(f'{m} {c}' for m, c in counts.items() if c) or 'none'
    return (f'{splits} real-vs-real splits into thirds of {third} images: a metric named in '
            f'{named_any} ({named_any / splits:.1%}); per metric: {per_metric}\n')


def _num(value) -> str:
    if not np.isfinite(value):
        return '-'
    if value == 0:
        return '0'
    magnitude = abs(value)
    return f'{value:.2e}' if magnitude < 1e-3 else f'{value:.{max(2 - int(np.floor(np.log10(magnitude))), 0)}f}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--resolution', type=int, default=64, help='image side in pixels')
    parser.add_argument('--cache-dir', default='', help="decoded-slice cache folder ('' for none)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='', help='also write the table to this .md file')
    parser.add_argument('--null-splits', type=int, default=0,
                        help='instead, count false alarms over this many random real-vs-real splits')
    args = parser.parse_args()
    images = data.load_dataset('', args.resolution, cache_dir=args.cache_dir).images
    images = images.astype(np.float32) / 127.5 - 1.0
    start = time.perf_counter()
    if args.null_splits:
        text = null_splits(images, args.null_splits, args.seed)
    else:
        reference, held = halves(images)
        text = (f'MNI152, {args.resolution} px: {len(reference)} reference and {len(held)} held-out '
                f'real slices; values of the generated (degraded) set, KID x1e3, bold where the '
                f'verdict names the metric.\n\n' + sensitivity_table(reference, held, args.seed))
    print(text)
    print(f'{time.perf_counter() - start:.0f} s, {os.cpu_count()} cpus', file=sys.stderr)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    main()

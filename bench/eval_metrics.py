"""Wall time of the evaluation metrics on a synthetic brain-like data set.

Run (the paper's size, ~3 GB per set of float32 images):
  .venv/bin/python bench/eval_metrics.py --n 11328 --resolution 256 [--others] [--cache /tmp/brains]
Quick:
  .venv/bin/python bench/eval_metrics.py --n 2048 --resolution 64 --others
The whole report (metrics.evaluate_sets: reference, generated and held-out
sets of n images each), each part's wall and CPU time projected to
--target-n (at --n 11328, as measured; --profile adds the main thread's
cProfile):
  .venv/bin/python bench/eval_metrics.py --report --n 4096 --resolution 256 --cache /tmp/brains
  .venv/bin/python bench/eval_metrics.py --report --n 11328 --resolution 256 --cache /tmp/brains
"""

import argparse
import cProfile
import functools
import os
import pstats
import threading
import time

import numpy as np

from mrigen import metrics
from mrigen.metrics import (
    comparison,
    duplicates,
    features,
    frechet,
    memorization,
    msssim,
    pca,
    prdc,
    spectrum,
    swd,
)

# The parts of an evaluate_sets report: (label, owner, attribute name, growth),
# each the time spent in owner.<name> called from the main thread (the
# metrics hand chunks of their work to threads, which run inside these
# calls), with how its cost grows with the set size N: 'linear', 'fixed',
# ('cap', c) linear up to c images, or ('square', c) quadratic up to c. The
# resampled parts hold each form's exact values (exact()) and its
# resamples (comparison.resample, split by form); the Frechet forms hold
# both the feature FD (capped at 5000) and the PCA-FD (all images, but 16
# coordinates: small).
REPORT_PARTS = (
    ('rho, sigma and delta: one pass per set', pca, 'project_and_spectrum', 'linear'),
    ('rho and PCA coordinates (other calls)', pca, 'project', 'linear'),
    ('sigma and delta (other calls)', pca, 'covariance_spectrum', 'linear'),
    ('memorization: index of the training set', memorization.TrainingIndex, '__init__', 'linear'),
    ('memorization: 3 x 1000 queries', memorization, 'nearest_neighbours_pruned', 'linear'),
    ('memorization: 3 x 1000 queries (below 128 px)', memorization, 'nearest_neighbours', 'linear'),
    ('MS-SSIM (1000 pairs, 3 sets)', msssim, 'ms_ssim_pairs', 'fixed'),
    ('SWD (2048 images, shared reference)', swd, 'swd_against', ('cap', 2048)),
    ('spectrum profiles (2048 images)', spectrum, 'radial_profiles', ('cap', 2048)),
    ('random features (5000 images)', features, 'random_features', ('cap', 5000)),
    ('PRDC distance table (5000 points)', prdc, 'squared_distance_table', ('square', 5000)),
    ('duplicates: pair tables (1000 images)', duplicates.PairTable, '__init__', 'fixed'),
    ('duplicates: exact shares', duplicates, 'duplicate_share', 'fixed'),
    ('resampled spectrum', comparison.SpectrumForm, None, ('cap', 2048)),
    ('resampled Frechet distances', comparison.FrechetForm, None, ('cap', 5000)),
    ('KID and resampled KID', comparison.KIDForm, None, 'fixed'),
    ('resampled PRDC', comparison.PRDCForm, None, ('square', 5000)),
    ('resampled duplicate share', comparison.DuplicateForm, None, 'fixed'),
    ('resampled SWD', comparison.SWDForm, None, ('cap', 2048)),
    ('resampled MS-SSIM', comparison.MSSSIMForm, None, 'fixed'),
)


class PartTimer:
    """Wall and process CPU seconds (all threads) spent in each part of REPORT_PARTS.

    A part's function is wrapped while the timer is active; a call counts
    when made from the main thread and not from inside a part (parts never
    overlap: their sum and the rest add up to the whole). For
    a form class (name None), its exact() and comparison.resample on its
    forms count (DuplicateForm.exact only runs duplicate_share, its own part).
    """

    def __init__(self, parts=REPORT_PARTS):
        self.parts = parts
        self.wall = {label: 0.0 for label, *_ in parts}
        self.cpu = dict(self.wall)
        self._active = False
        self._restore = []

    def _timed(self, label, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if self._active or threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)
            self._active = True
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[label] += time.perf_counter() - wall
                self.cpu[label] += time.process_time() - cpu
                self._active = False
        return wrapper

    def _patch(self, owner, name, new):
        self._restore.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, new)

    def __enter__(self):
        forms = {}
        for label, owner, name, _ in self.parts:
            if name is None:
                forms[owner] = label
                if owner is not comparison.DuplicateForm:
                    self._patch(owner, 'exact', self._timed(label, owner.exact))
            else:
                self._patch(owner, name, self._timed(label, getattr(owner, name)))
        resample = comparison.resample
        by_form = {cls: self._timed(label, resample) for cls, label in forms.items()}
        self._patch(comparison, 'resample',
                    lambda form, rng: by_form.get(type(form), resample)(form, rng))
        return self

    def __exit__(self, *exc):
        for owner, name, old in reversed(self._restore):
            if old is None:
                delattr(owner, name)
            else:
                setattr(owner, name, old)
        self._restore.clear()


def synthetic_brains(n: int, resolution: int, seed: int, chunk: int = 256) -> np.ndarray:
    """[n, R, R, 1] float32 in [-1, 1], built chunk by chunk: a soft jittered
    ellipse on a -1 background, textured by 4 broad random Gaussian blobs and
    a smooth random field (Gaussian correlation length 2% of the image side).
    Tuned to resemble OASIS slices in the paper's terms: 16 principal
    components hold ~59% of the variance (OASIS 55%), rho of the set against
    its own basis ~0.75 (0.739), delta ~13 (15); resolution changes none."""
    out = np.empty((n, resolution, resolution, 1), np.float32)
    grid = np.linspace(-1, 1, resolution, dtype=np.float32)
    freq2 = (np.fft.fftfreq(resolution)[:, None] ** 2 + np.fft.rfftfreq(resolution)[None, :] ** 2)
    smooth = np.exp(-2 * (np.pi * 0.02 * resolution) ** 2 * freq2).astype(np.float32)
    n_blobs = 4
    for start in range(0, n, chunk):
        c = min(chunk, n - start)
        rng = np.random.default_rng([seed, start])
        ry = 0.78 + 0.05 * rng.standard_normal((c, 1, 1), dtype=np.float32)
        rx = 0.62 + 0.04 * rng.standard_normal((c, 1, 1), dtype=np.float32)
        cy, cx = 0.03 * rng.standard_normal((2, c, 1, 1), dtype=np.float32)
        r2 = ((grid[:, None] - cy) / ry) ** 2 + ((grid[None, :] - cx) / rx) ** 2
        mask = 0.5 * (1 - np.tanh((r2 - 1) * 12))
        centers = rng.uniform(-0.6, 0.6, (2, c, n_blobs, 1)).astype(np.float32)
        width = rng.uniform(0.05, 0.3, (c, n_blobs, 1)).astype(np.float32)
        amp = rng.uniform(-0.5, 0.5, (c, n_blobs, 1)).astype(np.float32)
        gy = np.exp(-0.5 * ((grid - centers[0]) / width) ** 2) * amp
        gx = np.exp(-0.5 * ((grid - centers[1]) / width) ** 2)
        blobs = np.einsum('cby,cbx->cyx', gy, gx)
        white = rng.standard_normal((c, resolution, resolution), dtype=np.float32)
        field = np.fft.irfft2(np.fft.rfft2(white) * smooth, s=(resolution, resolution))
        field *= 0.25 / field.std()
        out[start:start + c, ..., 0] = np.clip(-1 + mask * (1.2 + blobs + field), -1, 1)
    return out


def cached_set(args, seed: int) -> np.ndarray:
    """synthetic_brains(args.n, args.resolution, seed), kept under args.cache if given."""
    if args.cache is None:
        return synthetic_brains(args.n, args.resolution, seed)
    path = os.path.join(args.cache, f'brains_{args.n}_{args.resolution}_{seed}.npy')
    if not os.path.exists(path):
        os.makedirs(args.cache, exist_ok=True)
        np.save(path + '.tmp.npy', synthetic_brains(args.n, args.resolution, seed))
        os.replace(path + '.tmp.npy', path)
    return np.load(path)


def cached_basis(args, train: np.ndarray) -> pca.PCABasis:
    """pca.fit_pca_basis(train), kept under args.cache if given (as evaluations cache it)."""
    if args.cache is None:
        return pca.fit_pca_basis(train)
    path = os.path.join(args.cache, f'basis_{args.n}_{args.resolution}_1.npz')
    if not os.path.exists(path):
        pca.save_basis(pca.fit_pca_basis(train), path)
    return pca.load_basis(path)


def timed(label, fn, *args, **kwargs):
    """Runs fn, printing its wall time and this process's CPU time (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    print(f'{label:<44s} {time.perf_counter() - wall:7.2f} s wall '
          f'{time.process_time() - cpu:7.2f} s cpu', flush=True)
    return result


def _growth(rule, n: int, target: int) -> float:
    if rule == 'linear':
        return target / n
    if rule == 'fixed':
        return 1.0
    kind, cap = rule
    ratio = min(target, cap) / min(n, cap)
    return ratio if kind == 'cap' else ratio ** 2


def time_report(args) -> None:
    """Times metrics.evaluate_sets on three synthetic sets of args.n images, part by part."""
    sets = [timed(f'synthesize set {seed} (not a metric)', cached_set, args, seed) for seed in (1, 2, 3)]
    basis = timed('fit_pca_basis (cached in evaluations)', cached_basis, args, sets[0])
    print(f'load average {os.getloadavg()[0]:.1f}', flush=True)
    profile = cProfile.Profile() if args.profile else None
    with PartTimer() as timer:
        wall, cpu = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        results = metrics.evaluate_sets(*sets, basis=basis)
        if profile:
            profile.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    target, total, total_cpu = args.target_n, 0.0, 0.0
    print(f'\n| part | growth | s at N={args.n} | s at N={target} | cpu s at N={target} |\n'
          '|---|---|---|---|---|')
    for label, _, _, rule in REPORT_PARTS:
        factor = _growth(rule, args.n, target)
        total += timer.wall[label] * factor
        total_cpu += timer.cpu[label] * factor
        growth = rule if isinstance(rule, str) else f'{rule[0]} {rule[1]}'
        print(f'| {label} | {growth} | {timer.wall[label]:.1f} | {timer.wall[label] * factor:.1f} | '
              f'{timer.cpu[label] * factor:.1f} |')
    rest = max(wall - sum(timer.wall.values()), 0.0)
    rest_cpu = max(cpu - sum(timer.cpu.values()), 0.0)
    total += rest * target / args.n
    total_cpu += rest_cpu * target / args.n
    print(f'| the rest (taken as linear) | linear | {rest:.1f} | {rest * target / args.n:.1f} | '
          f'{rest_cpu * target / args.n:.1f} |')
    print(f'| **evaluate_sets** | | **{wall:.1f}** | **{total:.1f}** | **{total_cpu:.1f}** |')
    print(f'\nverdict on the second synthetic set: '
          f"{results['sets']['generated']['distinguishable_by'] or 'not distinguishable'}; "
          f'load average now {os.getloadavg()[0]:.1f}')
    if profile:
        print('\nmain thread, by own time (the work handed to threads shows as waits):')
        pstats.Stats(profile).sort_stats('tottime').print_stats(25)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=11328, help='images per set')
    parser.add_argument('--resolution', type=int, default=256, help='image side in pixels')
    parser.add_argument('--others', action='store_true',
                        help='also time SWD, MS-SSIM, PCA-FD and memorization')
    parser.add_argument('--others-n', type=int, default=2048,
                        help='images per set for SWD and memorization queries')
    parser.add_argument('--msssim-pairs', type=int, default=1000)
    parser.add_argument('--cache', default=None,
                        help='folder to keep the synthetic sets in as .npy between runs')
    parser.add_argument('--report', action='store_true',
                        help='time the whole report (evaluate_sets) instead, projected to --target-n')
    parser.add_argument('--target-n', type=int, default=11328, help='N to project the report to')
    parser.add_argument('--profile', action='store_true',
                        help='with --report: also print a cProfile of the main thread')
    args = parser.parse_args()
    if args.report:
        print(f'n={args.n} resolution={args.resolution} cpus={os.cpu_count()}')
        return time_report(args)

    print(f'n={args.n} resolution={args.resolution} cpus={os.cpu_count()} '
          f'load average={os.getloadavg()[0]:.1f}')
    train = timed('synthesize train set (not a metric)', cached_set, args, 1)
    gen = timed('synthesize second set (not a metric)', cached_set, args, 2)

    basis = timed('fit_pca_basis (16, randomized)', pca.fit_pca_basis, train)
    print(f'  explained variance of 16 components: {basis.explained_variance_ratio.sum():.3f}')
    wall, cpu = time.perf_counter(), time.process_time()
    _, rho = timed('realism', pca.realism, gen, basis)
    spectrum = timed('total_variation (sigma, delta)', pca.covariance_spectrum, gen)
    print(f'{"rho + sigma + delta":<44s} {time.perf_counter() - wall:7.2f} s wall '
          f'{time.process_time() - cpu:7.2f} s cpu')
    print(f'  rho={rho:.4f} sigma={spectrum.sigma:.2f} delta={spectrum.count_above()} '
          f'N={spectrum.n} certified={spectrum.certified} '
          f'eigenvalues computed={len(spectrum.eigenvalues)}')
    print(f'  load average now {os.getloadavg()[0]:.1f}')

    if args.others:
        k = min(args.others_n, args.n)
        timed(f'swd ({k} images per set)', swd.swd, train, gen, max_images=k)
        timed(f'ms_ssim_diversity ({args.msssim_pairs} pairs)', msssim.ms_ssim_diversity,
              gen, n_pairs=args.msssim_pairs)
        timed('pca_frechet_distance', frechet.pca_frechet_distance, gen, train, basis)
        timed(f'memorization ({k} + {k} queries vs {args.n})', memorization.memorization,
              gen, train, n_queries=k, n_train_queries=k)


if __name__ == '__main__':
    main()

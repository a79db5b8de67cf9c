"""Wall time of the texture metrics (spectrum, random features, KID, PRDC, duplicates, bootstrap).

Run (the paper's size, three sets of 11,328 float32 images, ~9 GB):
  .venv/bin/python bench/texture_metrics.py
Quick, with each time projected to N = 11,328 at the same resolution:
  .venv/bin/python bench/texture_metrics.py --n 512 --resolution 256
  .venv/bin/python bench/texture_metrics.py --n 512 --resolution 64

A report compares two sets (generated, held-out real) with a reference
(training) set: features and spectrum profiles for three sets, the pairwise
metrics twice, with the defaults a report would use: spectrum on 2,048 images
per set, PRDC on 5,000 features per set, duplicates among 1,000 images. The
projection scales each step by how its cost grows with N (linear for
per-image work up to those caps, N^2 for PRDC, fixed for KID's 100 subsets of
100); per-image costs depend on the resolution, so project from a run at the
target resolution.
"""

import argparse
import os
import time

from eval_metrics import synthetic_brains
from threadpoolctl import threadpool_limits

from mrigen.metrics import bootstrap, duplicates, features, frechet, kid, prdc, spectrum


class Clock:
    """Times steps, prints one line each, and keeps (label, seconds, projected seconds)."""

    def __init__(self, target_n: int):
        self.target_n, self.rows = target_n, []

    def __call__(self, label: str, factor: float, fn, *args, **kwargs):
        """Runs fn(*args, **kwargs); factor: how much longer it takes at target_n."""
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.rows.append((label, seconds, seconds * factor))
        print(f'{label:52s} {seconds:7.2f} s wall {cpu:7.2f} s cpu '
              f'-> {seconds * factor:7.2f} s at N={self.target_n}', flush=True)
        return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=11328, help='images per set')
    parser.add_argument('--resolution', type=int, default=256, help='image side in pixels')
    parser.add_argument('--target-n', type=int, default=11328, help='N to project the times to')
    parser.add_argument('--duplicate-images', type=int, default=1000,
                        help='images per set for the duplicate share')
    parser.add_argument('--prdc-points', type=int, default=5000,
                        help='features per set for precision/recall/density/coverage (cost ~N^2)')
    parser.add_argument('--spectrum-images', type=int, default=2048,
                        help="images per set for the spectrum (spectrum_distance's max_images)")
    parser.add_argument('--bootstrap', type=int, default=1000,
                        help='resamples for the bootstrap of the spectrum distance')
    parser.add_argument('--fd-bootstrap', type=int, default=20,
                        help='resamples for the bootstrap of the feature FD')
    args = parser.parse_args()
    n, r = args.n, args.resolution
    print(f'n={n} resolution={r} cpus={os.cpu_count()} load average={os.getloadavg()[0]:.1f}')
    sets = {name: synthetic_brains(n, r, seed) for name, seed in
            (('train', 1), ('generated', 2), ('held-out', 3))}
    clock = Clock(args.target_n)
    linear, fixed = args.target_n / n, 1.0

    net = features.feature_network(r)
    clock('feature network compile (one batch)', fixed, features.random_features,
          sets['train'][:1], net)
    feats, profiles = {}, {}
    s_n = min(n, args.spectrum_images)  # spectrum_distance's max_images
    s_factor = min(args.target_n, args.spectrum_images) / s_n
    for name, x in sets.items():
        profiles[name] = clock(f'spectrum profiles, {s_n} images ({name})', s_factor,
                               spectrum.radial_profiles, x[:s_n])
        feats[name] = clock(f'random features ({name}, d={net.feature_dim})', linear,
                            features.random_features, x, net)

    ref, gen = 'train', 'generated'
    clock('spectrum distance (from profiles)', s_factor, spectrum.profile_distance,
          profiles[ref], profiles[gen], r)
    with threadpool_limits(limits=1, user_api='blas'):  # as feature_frechet_distance runs them
        stats = clock('feature FD: mean and covariance (x2)', linear, lambda: (
            frechet.gaussian_stats(feats[ref]), frechet.gaussian_stats(feats[gen])))
        clock('feature FD: distance', fixed, frechet.frechet_distance, *stats[0], *stats[1])
    clock('KID (100 subsets of 100)', fixed, kid.kid, feats[ref], feats[gen])
    m = min(n, args.prdc_points)
    pairs = (min(args.target_n, args.prdc_points) / m) ** 2  # all pairs of m points
    radii = clock(f'PRDC: real k-NN radii ({m} points, once)', pairs, prdc.knn_radii,
                  feats[ref][:m], (3, 5))
    clock(f'PRDC: the rest ({m} points, per compared set)', pairs, prdc.prdc, feats[ref][:m],
          feats[gen][:m], real_radii=radii)
    k = args.duplicate_images
    pairs = (min(args.target_n, k) / min(n, k)) ** 2
    threshold = clock(f'duplicates: closest real pair ({min(k, n)} images, once)', pairs,
                      duplicates.closest_pair_distance, sets[ref], k)
    clock(f'duplicate share ({min(k, n)} images, per compared set)', pairs,
          duplicates.duplicate_share, sets[ref], sets[gen], n_images=k, threshold=threshold)
    b = args.bootstrap
    clock(f'bootstrap spectrum distance (B={b})', s_factor, bootstrap.bootstrap_interval,
          lambda a, g: spectrum.profile_distance(a, g, r)['distance_high'],
          profiles[ref], profiles[gen], n_resamples=b)
    fd_one = sum(p for label, _, p in clock.rows if label.startswith('feature FD'))
    fd_seconds = sum(t for label, t, _ in clock.rows if label.startswith('feature FD'))
    b = args.fd_bootstrap  # each resample refits two 608 x 608 covariances
    clock(f'bootstrap feature FD (B={b})', fd_one / fd_seconds, bootstrap.bootstrap_interval,
          features.feature_frechet_distance, feats[ref], feats[gen], n_resamples=b)

    # A report: per-set work for three sets (already three rows), 'once' rows
    # once, the rest for each of the two compared sets.
    per_set = {label: (t, p) for label, t, p in clock.rows}
    single = [x for x in per_set if 'once' in x or 'compile' in x or x.startswith(
        ('spectrum profiles', 'random features'))]
    boot = [x for x in per_set if 'bootstrap' in x]
    twice = [x for x in per_set if x not in single + boot]
    for title, extra in (('report without bootstrap', []), ('report with both bootstraps', boot)):
        totals = [sum(per_set[x][i] for x in single) + 2 * sum(per_set[x][i] for x in twice + extra)
                  for i in (0, 1)]
        print(f'{title + " (3 sets, 2 comparisons)":52s} {totals[0]:7.2f} s wall'
              f'{"":17s}-> {totals[1]:7.2f} s at N={args.target_n}')
    print(f'load average now {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()

"""Evaluation metrics against direct numpy computations of the formulas in docs/metrics.md."""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.signal
from PIL import Image

from mrigen import metrics
from mrigen.metrics import comparison, frechet, memorization, msssim, pca, report, swd


def blob_images(n, size, seed, noise=0.0):
    """[n, size, size, 1] float32 in [-1, 1]: a jittered disc with random smooth blobs."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(grid, grid, indexing='ij')
    out = np.empty((n, size, size, 1), np.float32)
    for i in range(n):
        r = 0.7 + 0.1 * rng.standard_normal()
        img = -1 + 1.2 / (1 + np.exp(((yy ** 2 + xx ** 2) / r ** 2 - 1) * 10))
        for _ in range(6):
            cy, cx = rng.uniform(-0.6, 0.6, 2)
            w, a = rng.uniform(0.1, 0.4), rng.uniform(-0.4, 0.4)
            img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * w ** 2))
        img += noise * rng.standard_normal(img.shape)
        out[i, ..., 0] = np.clip(img, -1, 1)
    return out


@pytest.fixture(scope='module')
def train():
    return blob_images(64, 32, seed=0)


@pytest.fixture(scope='module')
def generated():
    return blob_images(48, 32, seed=1)


@pytest.fixture(scope='module')
def basis(train):
    return pca.fit_pca_basis(train)


def reference_cov(images):
    """np.cov with images as rows, after subtracting the set mean image (evaluate_gan.py)."""
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    return np.cov(x - x.mean(axis=0))


# --- images -------------------------------------------------------------------

def test_as_float_images_maps_uint8_and_drops_channel():
    u = np.array([0, 127, 128, 255], np.uint8).reshape(1, 2, 2, 1)
    x = metrics.as_float_images(u)
    assert x.dtype == np.float32 and x.shape == (1, 2, 2)
    np.testing.assert_allclose(x.ravel(), [-1, 127 / 127.5 - 1, 128 / 127.5 - 1, 1], atol=1e-7)
    f = np.zeros((3, 4, 4, 1), np.float32)
    assert np.shares_memory(metrics.as_float_images(f), f)
    with pytest.raises(ValueError):
        metrics.as_float_images(np.zeros((3, 4, 4, 3), np.float32))


# --- PCA basis and realism ------------------------------------------------------

def test_randomized_basis_matches_full_svd(train, basis):
    full = pca.fit_pca_basis(train, svd_solver='full')
    cosines = np.linalg.svd(basis.components @ full.components.T, compute_uv=False)
    assert cosines.min() > 1 - 1e-6
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(16), atol=1e-12)
    np.testing.assert_allclose(pca.realism(train, basis)[0], pca.realism(train, full)[0],
                               rtol=1e-6)


def test_basis_roundtrip_without_pickle(basis, tmp_path):
    path = tmp_path / 'sub' / 'basis.npz'
    pca.save_basis(basis, path)
    assert os.listdir(path.parent) == ['basis.npz']  # no temporary file left behind
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    loaded = pca.load_basis(path)
    for field in ('mean', 'components', 'explained_variance_ratio'):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(basis, field))
    assert loaded.image_shape == basis.image_shape == (32, 32)


def test_realism_matches_per_image_cosine(train, generated, basis):
    x = generated.reshape(len(generated), -1).astype(np.float64)
    expected = []
    for g in x:
        v = (g - basis.mean) / np.linalg.norm(g - basis.mean)
        expected.append(np.sqrt(sum((e @ v) ** 2 for e in basis.components)))
    rho, mean = pca.realism(generated, basis)
    np.testing.assert_allclose(rho, expected, rtol=1e-6)
    assert mean == pytest.approx(np.mean(expected), rel=1e-6)
    assert 0 < mean < 1


def test_realism_is_one_inside_the_subspace_and_zero_orthogonal(basis):
    inside = basis.mean + 0.3 * basis.components[0] - 0.2 * basis.components[5]
    rng = np.random.default_rng(0)
    other = rng.standard_normal(basis.mean.shape)
    other -= basis.components.T @ (basis.components @ other)
    images = np.stack([inside, basis.mean + 0.1 * other / np.linalg.norm(other)])
    rho, _ = pca.realism(images.reshape(2, 32, 32).astype(np.float32), basis)
    np.testing.assert_allclose(rho, [1, 0], atol=1e-3)


def test_realism_accepts_uint8(generated, basis):
    u = np.rint((generated + 1) * 127.5).astype(np.uint8)
    expected = pca.realism(u.astype(np.float32) / 127.5 - 1, basis)[1]
    assert pca.realism(u, basis)[1] == pytest.approx(expected, rel=1e-6)


# --- sigma and delta ------------------------------------------------------------

@pytest.mark.parametrize('exact_max_n', [256, 0], ids=['thin-svd', 'krylov'])
def test_sigma_and_delta_match_np_cov(train, exact_max_n):
    cov = reference_cov(train)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    spectrum = pca.covariance_spectrum(train, exact_max_n=exact_max_n, block_size=8)
    assert spectrum.sigma == pytest.approx(np.trace(cov), rel=1e-6)
    assert spectrum.certified
    assert spectrum.count_above() == np.count_nonzero(eig > 0.01 * np.trace(cov))
    top = eig[eig > 0.005 * np.trace(cov)]
    np.testing.assert_allclose(spectrum.eigenvalues[:len(top)], top, rtol=1e-4)
    assert pca.total_variation(train, exact_max_n=exact_max_n) == (
        spectrum.sigma, spectrum.count_above(), 64)


def test_krylov_converges_before_exhausting_the_space():
    images = blob_images(240, 24, seed=3, noise=0.05)
    cov = reference_cov(images)
    expected = np.count_nonzero(np.linalg.eigvalsh(cov) > 0.01 * np.trace(cov))
    spectrum = pca.covariance_spectrum(images, exact_max_n=0, block_size=8)
    assert spectrum.certified and len(spectrum.eigenvalues) < 240
    assert spectrum.count_above() == expected


def planted_spectrum_images(fractions, n=200, size=16, seed=0):
    """Images whose covariance (np.cov semantics) has eigenvalues proportional to fractions.

    Y = U diag(s) V^T with U orthogonal to the all-ones image vector and V to
    the all-ones pixel vector, so centering leaves Y unchanged; a mean image
    and per-image offsets are added on top, which centering must remove.
    """
    rng = np.random.default_rng(seed)
    d, r = size * size, len(fractions)
    u = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, r))]))[0][:, 1:]
    v = np.linalg.qr(np.column_stack([np.ones(d), rng.standard_normal((d, r))]))[0][:, 1:]
    y = (u * np.sqrt(np.asarray(fractions) * (d - 1) * 2.0)) @ v.T
    x = y + 0.3 * rng.uniform(-1, 1, d) + 0.05 * rng.standard_normal((n, 1))
    assert np.abs(x).max() < 1
    return x.reshape(n, size, size, 1).astype(np.float32)


def test_delta_counts_sorted_eigenvalues_near_the_threshold():
    # Fractions of sigma, in the order they are planted: eigenvalues just
    # above and below 1% are interleaved.
    near = [0.0103, 0.0099, 0.0101, 0.00995, 0.01005, 0.0097]
    top = [0.2, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.025, 0.02]
    tail = [(1 - sum(top) - sum(near)) / 60] * 60
    fractions = top + near + tail
    images = planted_spectrum_images(fractions)
    cov = reference_cov(images)
    assert np.trace(cov) == pytest.approx(2.0, rel=1e-5)
    expected = np.count_nonzero(np.linalg.eigvalsh(cov) > 0.01 * np.trace(cov))
    assert expected == 13
    # evaluate_gan.py walked the eigenvalues in np.linalg.eig's order until the
    # first one below 1%: in the planted order that stops at 11, not 13.
    leading_run = next(i for i, f in enumerate(fractions) if f <= 0.01)
    assert leading_run == 11
    for exact_max_n in (256, 0):
        sigma, delta, n = pca.total_variation(images, exact_max_n=exact_max_n, block_size=8)
        assert (delta, n) == (13, 200)
        assert sigma == pytest.approx(np.trace(cov), rel=1e-6)


def test_krylov_from_pca_coordinates_certifies_the_same_sigma_and_delta():
    # evaluate_sets starts the Krylov basis from each set's PCA coordinates and
    # 8 random vectors in blocks of 24; the paper's values must not move from
    # the former start (64 random vectors, blocks of 64) nor from np.cov.
    images = blob_images(300, 24, seed=7, noise=0.05)
    basis = pca.fit_pca_basis(images[:200])
    coords, _ = pca.project(images, basis)
    new = pca.covariance_spectrum(images, start=coords, seed=3)
    old = pca.covariance_spectrum(images, block_size=64, seed=3)
    assert new.certified and old.certified and new.n == old.n == 300
    assert new.sigma == old.sigma
    assert new.count_above() == old.count_above()
    cov = reference_cov(images)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    assert new.sigma == pytest.approx(np.trace(cov), rel=1e-6)
    assert new.count_above() == np.count_nonzero(eig > 0.01 * np.trace(cov))
    # Ritz values converge only as far as the count needs: lower bounds, close.
    top = new.count_above()
    assert np.all(new.eigenvalues[:top] <= eig[:top] * (1 + 1e-9))
    np.testing.assert_allclose(new.eigenvalues[:top], eig[:top], rtol=1e-2)


def test_project_and_spectrum_equals_project_and_covariance_spectrum():
    # One pass for rho's projection and sigma (evaluate_sets): the same values.
    train = blob_images(300, 24, seed=10, noise=0.05)
    other = blob_images(280, 24, seed=11, noise=0.08)
    basis = pca.fit_pca_basis(train)
    for images in (train, other):
        coords, sq_norm, spectrum = pca.project_and_spectrum(images, basis, seed=2)
        want_coords, want_sq = pca.project(images, basis)
        want = pca.covariance_spectrum(images, seed=2, start=want_coords)
        np.testing.assert_allclose(coords, want_coords, rtol=1e-5, atol=1e-5)  # float32 products
        np.testing.assert_array_equal(sq_norm, want_sq)
        assert spectrum.certified and spectrum.n == len(images)
        assert spectrum.count_above() == want.count_above() == pca.total_variation(images)[1]
        assert spectrum.sigma == pytest.approx(want.sigma, rel=1e-6)
    assert pca.project_and_spectrum(train, basis)[2].sigma == pca.total_variation(train)[0]  # own basis


def test_sigma_grows_with_n():
    images = blob_images(128, 16, seed=4)
    small, _, _ = pca.total_variation(images[:32])
    large, _, _ = pca.total_variation(images)
    assert large > 3 * small


# --- MS-SSIM --------------------------------------------------------------------

def reference_ms_ssim(a, b):
    """Direct MS-SSIM of one pair of [H, W] images in [-1, 1], with scipy's correlate2d."""
    x, y = a.astype(np.float64) + 1, b.astype(np.float64) + 1
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    values = []
    for scale in range(5):
        if scale:
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
            y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
        size = min(11, *x.shape)
        t = np.arange(size) - (size - 1) / 2
        g = np.exp(-t ** 2 / (2 * 1.5 ** 2))
        window = np.outer(g, g) / g.sum() ** 2
        f = lambda z: scipy.signal.correlate2d(z, window, mode='valid')
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
        cs = (2 * cxy + c2) / (vx + vy + c2)
        lum = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
        values.append(max((cs if scale < 4 else lum * cs).mean(), 0))
    return np.prod(np.array(values) ** np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333]))


def test_ms_ssim_matches_direct_computation(train):
    # 32x32: the window shrinks to 8, 4 and 2 pixels at the three coarsest scales.
    a, b = train[:6], train[6:12]
    expected = [reference_ms_ssim(p[..., 0], q[..., 0]) for p, q in zip(a, b)]
    np.testing.assert_allclose(msssim.ms_ssim(a, b), expected, rtol=1e-5)
    small = blob_images(2, 16, seed=5)  # the smallest size 5 scales allow: last scale 1x1
    np.testing.assert_allclose(msssim.ms_ssim(small[:1], small[1:]),
                               [reference_ms_ssim(small[0, ..., 0], small[1, ..., 0])], rtol=1e-5)
    with pytest.raises(ValueError):
        msssim.ms_ssim(small[:, :8, :8], small[:, :8, :8])


def test_ms_ssim_of_identical_images_is_one_and_drops_with_noise(train):
    np.testing.assert_allclose(msssim.ms_ssim(train[:8], train[:8]), 1.0, atol=1e-6)
    rng = np.random.default_rng(0)
    scores = [msssim.ms_ssim(train[:8], np.clip(train[:8] + s * rng.standard_normal(
        train[:8].shape), -1, 1).astype(np.float32)).mean() for s in (0.05, 0.2)]
    assert 1 > scores[0] > scores[1]


def test_ms_ssim_clips_negative_scales_to_zero(train):
    inverted = -train[:2]
    assert reference_ms_ssim(train[0, ..., 0], inverted[0, ..., 0]) == 0
    np.testing.assert_array_equal(msssim.ms_ssim(train[:2], inverted), [0, 0])


def test_banded_window_filter_equals_the_dense_product_at_256_px():
    x = np.random.default_rng(0).standard_normal((3, 256, 260)).astype(np.float32)
    dense = msssim.separable(x, msssim._valid_filter_matrix(256), msssim._valid_filter_matrix(260))
    banded = msssim._valid_filter(x)
    assert banded.shape == (3, 246, 250)
    np.testing.assert_allclose(banded, dense, atol=1e-5)


def test_ms_ssim_pairs_are_what_diversity_averages(train):
    pairs, values = msssim.ms_ssim_pairs(train, n_pairs=30, seed=4)
    np.testing.assert_array_equal(pairs, msssim.random_pairs(len(train), 30, 4))
    np.testing.assert_allclose(values, msssim.ms_ssim(train[pairs[:, 0]], train[pairs[:, 1]]), rtol=1e-12)
    assert msssim.ms_ssim_diversity(train, n_pairs=30, seed=4) == pytest.approx(values.mean(), rel=1e-12)


def test_ms_ssim_diversity(train):
    copies = np.repeat(train[:1], 10, axis=0)
    assert msssim.ms_ssim_diversity(copies, n_pairs=20) == pytest.approx(1.0, abs=1e-6)
    diverse = msssim.ms_ssim_diversity(train, n_pairs=50, seed=0)
    assert 0 < diverse < 0.99
    assert msssim.ms_ssim_diversity(train, n_pairs=50, seed=0) == diverse
    pairs = msssim.random_pairs(5, 200, seed=1)
    assert np.all(pairs[:, 0] != pairs[:, 1]) and pairs.min() >= 0 and pairs.max() < 5


# --- SWD ------------------------------------------------------------------------

def test_laplacian_pyramid_matches_scipy_mirror_convolution(train):
    x = train[:3, ..., 0].astype(np.float64)
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0
    conv = lambda z, k: np.stack([scipy.ndimage.convolve(i, k, mode='mirror') for i in z])
    down = conv(x, kernel)[:, ::2, ::2]
    zeros = np.zeros_like(x)
    zeros[:, ::2, ::2] = down
    levels = swd.laplacian_pyramid(train[:3])
    assert [lvl.shape[1:] for lvl in levels] == [(32, 32), (16, 16)]
    np.testing.assert_allclose(levels[1], down, atol=1e-5)
    np.testing.assert_allclose(levels[0], x - conv(zeros, 4 * kernel), atol=1e-5)
    sizes = [lvl.shape[1] for lvl in swd.laplacian_pyramid(np.zeros((1, 256, 256), np.float32))]
    assert sizes == [256, 128, 64, 32, 16]


def test_descriptors_are_normalized_7x7_patches(train):
    resolutions, desc = swd.descriptors(train[:10], seed=0)
    assert resolutions == [32, 16]
    for d in desc:
        assert d.shape == (10 * 128, 49)
        assert abs(d.mean()) < 1e-5 and d.std() == pytest.approx(1, abs=1e-4)


def test_sliced_wasserstein_of_a_shift_is_the_mean_projected_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 49)).astype(np.float32)
    shift = rng.standard_normal(49).astype(np.float32)
    dirs = np.random.default_rng(7).standard_normal((49, 128))
    expected = np.mean(np.abs(shift @ (dirs / np.linalg.norm(dirs, axis=0))))
    got = swd.sliced_wasserstein(a, a + shift, np.random.default_rng(7), repeats=1)
    assert got == pytest.approx(expected, rel=1e-4)


def test_swd_is_karras_recipe_times_1e3(train, generated):
    a, b = train[:40], generated[:40]
    _, desc_a = swd.descriptors(a, seed=3)
    _, desc_b = swd.descriptors(b, seed=3)
    expected = []
    for level, (da, db) in enumerate(zip(desc_a, desc_b)):
        rng = np.random.default_rng([3, 1, level])
        repeats = []
        for _ in range(4):
            dirs = rng.standard_normal((49, 128))
            dirs = (dirs / np.sqrt(np.sum(dirs ** 2, axis=0, keepdims=True))).astype(np.float32)
            pa, pb = np.sort(da @ dirs, axis=0), np.sort(db @ dirs, axis=0)
            repeats.append(np.mean(np.abs(pa - pb)))
        expected.append(1e3 * np.mean(repeats))
    got = swd.swd(a, b, seed=3)
    np.testing.assert_allclose(got['per_level'], expected, rtol=1e-5)
    assert got['avg'] == pytest.approx(np.mean(expected), rel=1e-5)


def test_swd_self_zero_same_distribution_small_other_distribution_large(train):
    same = swd.swd(train, train)
    assert same['avg'] == 0 and same['resolutions'] == [32, 16] and same['n'] == 64
    other_sample = swd.swd(train[:32], train[32:])['avg']
    rng = np.random.default_rng(0)
    noisy = np.clip(train + 0.3 * rng.standard_normal(train.shape), -1, 1).astype(np.float32)
    shifted = swd.swd(train[:32], noisy[32:])['avg']
    assert 0 < other_sample < shifted / 2
    assert swd.swd(train[:32], train[32:], seed=0) == swd.swd(train[:32], train[32:], seed=0)


# --- PCA-FD ---------------------------------------------------------------------

def test_frechet_distance_matches_sqrtm_formula():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((200, 5)), 0.5 + rng.standard_normal((150, 5)) @ rng.standard_normal((5, 5))
    ma, ca, mb, cb = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    expected = np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    got = frechet.frechet_distance(*frechet.gaussian_stats(a), *frechet.gaussian_stats(b))
    assert got == pytest.approx(expected, rel=1e-8)


def test_pca_fd_zero_for_identical_sets_positive_otherwise(train, generated, basis):
    assert frechet.pca_frechet_distance(train, train, basis) == pytest.approx(0, abs=1e-8)
    assert frechet.pca_frechet_distance(train, np.clip(train + 0.2, -1, 1), basis) > 1
    assert frechet.pca_frechet_distance(train, generated, basis, n_components=4) > 0


# --- memorization ---------------------------------------------------------------

def test_nearest_neighbours_match_brute_force(train, generated):
    q = generated.reshape(len(generated), -1)
    r = train.reshape(len(train), -1)
    full = np.linalg.norm(q[:, None].astype(np.float64) - r[None].astype(np.float64), axis=2)
    dist, index = memorization.nearest_neighbours(q, r)
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(dist, full.min(axis=1), rtol=1e-12)
    rows = np.array([3, 10, 40])
    loo = np.linalg.norm(r[rows, None].astype(np.float64) - r[None].astype(np.float64), axis=2)
    loo[np.arange(3), rows] = np.inf
    dist, index = memorization.nearest_neighbours(r, r, query_rows=rows, exclude=rows)
    np.testing.assert_array_equal(index, loo.argmin(axis=1))
    np.testing.assert_allclose(dist, loo.min(axis=1), rtol=1e-12)


def test_pruned_search_is_exact_at_128_px():
    reference = blob_images(40, 128, seed=5).reshape(40, -1)
    queries = blob_images(12, 128, seed=6, noise=0.1).reshape(12, -1)  # noise loosens the bound
    queries[3] = reference[17]
    assert memorization.pool_factor((128, 128)) == 2 and memorization.pool_factor((64, 64)) == 1
    full = np.linalg.norm(queries[:, None].astype(np.float64) - reference[None].astype(np.float64), axis=2)
    dist, index = memorization.nearest_neighbours_pruned(queries, reference, (128, 128))
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(dist, full.min(axis=1), rtol=1e-12)
    assert dist[3] == 0 and index[3] == 17
    rows = np.array([2, 17, 30])
    loo = np.linalg.norm(reference[rows, None].astype(np.float64) - reference[None].astype(np.float64), axis=2)
    loo[np.arange(3), rows] = np.inf
    index_ = memorization.TrainingIndex(reference.reshape(40, 128, 128))
    dist, index = index_.nearest(reference, query_rows=rows, exclude=rows)
    np.testing.assert_array_equal(index, loo.argmin(axis=1))
    np.testing.assert_allclose(dist, loo.min(axis=1), rtol=1e-12)
    p, residual, sq = memorization.pooled(reference[:3], (128, 128), 2)
    blocks = reference[:3].reshape(3, 64, 2, 64, 2).astype(np.float64)
    np.testing.assert_allclose(p, 2 * blocks.mean(axis=(2, 4)).reshape(3, -1), rtol=1e-5)
    np.testing.assert_allclose(residual ** 2 + (p.astype(np.float64) ** 2).sum(axis=1), sq, rtol=1e-6)


def test_pruned_search_is_exact_at_256_px_through_both_bounds():
    # 256 px: coarse bounds from 8 x 8 blocks, then finer ones from 4 x 4, then pixels.
    reference = blob_images(30, 256, seed=8).reshape(30, -1)
    queries = blob_images(8, 256, seed=9, noise=0.05).reshape(8, -1)
    queries[2] = reference[11]
    full = np.linalg.norm(queries[:, None].astype(np.float64) - reference[None].astype(np.float64), axis=2)
    index_ = memorization.TrainingIndex(reference.reshape(30, 256, 256))
    assert index_.pooled[0].shape == (30, 64 * 64) and index_.coarse[0].shape == (30, 32 * 32)
    dist, index = index_.nearest(queries)
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(dist, full.min(axis=1), rtol=1e-12)
    assert dist[2] == 0 and index[2] == 11


def test_memorization_finds_exact_copies(train, generated, tmp_path):
    gen = generated.copy()
    gen[[5, 17]] = train[[9, 30]]
    result = memorization.memorization(gen, train, n_queries=None, n_train_queries=None, k_pairs=3)
    assert result['closest_pairs'][:2] == [[5, 9, 0.0], [17, 30, 0.0]]
    summary = result['summary']
    assert summary['nn_min'] == 0 and summary['train_nn_min'] > 0
    assert summary['n_queries'] == 48 and summary['n_train_queries'] == 64
    p5 = np.percentile(result['train_nn_distance'], 5)
    assert summary['train_nn_p5'] == p5
    assert summary['frac_below_train_p5'] == np.mean(result['nn_distance'] < p5) >= 2 / 48
    path = tmp_path / 'pairs.png'
    memorization.save_closest_pairs_png(gen, train, result, path, k=3)
    assert Image.open(path).size == (2 * 32 + 2, 3 * 32 + 2 * 2)


# --- evaluate_sets and the report -----------------------------------------------

def test_get_metric_lists_known_names():
    assert metrics.get_metric('swd') is swd.swd
    with pytest.raises(KeyError, match='known: duplicate_share, feature_fd, kid, memorization, ms_ssim'):
        metrics.get_metric('fid')


def test_swd_against_shares_the_reference_and_equals_swd(train, generated):
    holdout = blob_images(40, 32, seed=2)
    raw = {}
    got = swd.swd_against(train, {'generated': generated, 'held-out': holdout}, 40, seed=5, raw=raw)
    assert got['generated'] == swd.swd(train, generated, max_images=40, seed=5)
    assert got['held-out'] == swd.swd(train, holdout, max_images=40, seed=5)
    assert set(raw) == {'reference', 'generated', 'held-out'}
    assert [len(level) for level in raw['generated']] == [40 * 128, 40 * 128]
    _, desc = swd.descriptors(holdout[:8])
    _, raw_desc = swd.raw_descriptors(holdout[:8])
    np.testing.assert_array_equal(desc[0], swd.normalized(raw_desc[0]))


def test_resampled_swd_sees_noise_and_is_zero_for_a_set_against_itself(train):
    clean, noisy = blob_images(40, 32, seed=3), blob_images(40, 32, seed=3, noise=0.2)
    projections = {}
    for name, x in (('train', train[:40]), ('clean', clean), ('noisy', noisy)):
        projections[name] = swd.ResamplingProjections(swd.raw_descriptors(x, seed=1)[1], seed=1)
    rows = np.arange(0, 40, 2)
    clean_value = swd.resampled_swd(projections['train'], projections['clean'], rows, rows)
    noisy_value = swd.resampled_swd(projections['train'], projections['noisy'], rows, rows)
    # Noise shows at the finest level (the 16 px low-pass level hardly sees it), as with swd.
    assert len(clean_value) == 2 and noisy_value[0] > 2 * clean_value[0]
    same = swd.resampled_swd(projections['clean'], projections['clean'], rows, rows)
    assert same == [0.0, 0.0]
    with pytest.raises(ValueError, match='differ in size'):
        swd.resampled_swd(projections['train'], projections['clean'], rows, rows[:5])


def test_evaluate_sets_and_report(train, generated, basis, tmp_path):
    holdout = blob_images(32, 32, seed=2)
    results = metrics.evaluate_sets(train, generated, holdout, basis=basis, n_msssim_pairs=20,
                                    memorization_queries=16)
    rows = results['sets']
    assert list(rows) == ['training data', 'generated', 'held-out real']
    assert rows['training data']['rho'] == pytest.approx(pca.realism(train, basis)[1])
    assert (rows['generated']['sigma'], rows['generated']['delta'], 48) == pca.total_variation(generated)
    assert rows['held-out real']['n'] == 32 and 'sigma_common' not in rows['held-out real']
    assert rows['generated']['n_common'] == 32 and rows['generated']['swd']['n'] == 32
    assert rows['generated']['memorization']['n_queries'] == 16
    report.write_report(results, tmp_path)
    loaded = json.loads((tmp_path / 'eval.json').read_text())
    assert loaded['sets']['generated']['delta'] == rows['generated']['delta']
    md = (tmp_path / 'report.md').read_text()
    assert '| set | rho | sigma (N) | delta |' in md
    assert f"| training data | {rows['training data']['rho']:.3f} |" in md
    assert '| held-out real |' in md
    report.save_side_by_side_png(holdout, generated, tmp_path / 'side.png', n=4)
    assert Image.open(tmp_path / 'side.png').size == (4 * 32 + 3 * 2, 2 * 32 + 2)


def test_evaluate_sets_adds_the_texture_metrics_intervals_and_verdict(train, basis, tmp_path):
    generated = blob_images(48, 32, seed=1, noise=0.3)  # speckled: texture tells it from real data
    holdout = blob_images(40, 32, seed=2)
    results = metrics.evaluate_sets(train, generated, holdout, basis=basis, n_msssim_pairs=50,
                                    memorization_queries=16, rng_seed=3)
    rows = results['sets']
    gen, floor = rows['generated'], rows['held-out real']
    # Existing keys stay; the compared sets are cut to the floor's 40 images.
    assert {'n', 'rho', 'sigma', 'delta', 'ms_ssim', 'swd', 'pca_fd', 'memorization'} <= set(gen)
    assert results['comparison']['n_images']['compared'] == 40 and gen['prdc']['n_images'] == 40
    for name in ('generated', 'held-out real'):
        texture = rows[name]['texture']
        assert list(texture) == list(comparison.FAMILY)
        for metric, t in texture.items():
            assert t['low'] <= t['value'] <= t['high'], (name, metric)
    assert gen['texture']['spectrum_high']['value'] == gen['spectrum']['distance_high']
    assert gen['texture']['kid']['value'] == gen['kid']['mean'] and gen['kid']['std'] > 0
    assert gen['texture']['swd']['value'] == gen['swd']['avg']
    assert gen['texture']['ms_ssim']['value'] == gen['ms_ssim']
    assert gen['texture']['duplicate_share']['value'] == gen['duplicates']['share']
    assert len(gen['swd']['per_level_low']) == len(gen['swd']['resolutions']) == 2
    assert 'spectrum_high' in gen['distinguishable_by'] and 'kid' in gen['distinguishable_by']
    assert set(gen['verdict']) == set(comparison.FAMILY)
    assert 'distinguishable_by' not in floor and 'verdict' not in floor
    assert results['comparison']['floor_in_sample'] is True
    # Seeded: the same seed gives the same intervals, another seed other ones.
    again = metrics.evaluate_sets(train, generated, holdout, basis=basis, n_msssim_pairs=50,
                                  memorization_queries=16, rng_seed=3, floor_in_sample=False)
    assert again['sets']['generated']['texture'] == gen['texture']
    report.write_report(results, tmp_path / 'in')
    report.write_report(again, tmp_path / 'out')
    md = (tmp_path / 'in' / 'report.md').read_text()
    assert '**The floor is in-sample.**' in md and 'out-of-sample' not in md
    assert ('- generated: distinguishable from real data by ' + ', '.join(gen['distinguishable_by'])
            + ' (family-wise level 0.05).') in md
    assert '- held-out real: the floor itself (no verdict).' in md
    kid = gen['texture']['kid']
    assert f"| kid x1e3 | higher | {report._num(1e3 * kid['value'])} [{report._num(1e3 * kid['low'])}, " in md
    assert '| set | 32 | 16 | avg |' in md and f"{gen['swd']['per_level'][0]:.2f} [" in md
    assert 'The floor is out-of-sample' in (tmp_path / 'out' / 'report.md').read_text()
    loaded = json.loads((tmp_path / 'in' / 'eval.json').read_text())
    assert loaded['sets']['generated']['distinguishable_by'] == gen['distinguishable_by']
    assert len(loaded['spectrum_profiles']['generated']) == len(loaded['spectrum_profiles']['frequencies'])
    with Image.open(tmp_path / 'in' / 'spectrum.png') as image:
        assert image.format == 'PNG' and image.size[0] > 300


def test_report_says_when_nothing_tells_a_set_from_real_data(train, basis, tmp_path):
    holdout = blob_images(32, 32, seed=2)
    results = metrics.evaluate_sets(train, holdout, holdout, basis=basis, n_msssim_pairs=20,
                                    memorization_queries=16)
    assert results['sets']['generated']['distinguishable_by'] == []
    md = report.render_markdown(results)
    assert ('- generated: not distinguishable from held-out real data by any of the 12 metrics '
            '(family-wise level 0.05).') in md
    alone = metrics.evaluate_sets(train, holdout, basis=basis, n_msssim_pairs=20, memorization_queries=16)
    assert 'distinguishable_by' not in alone['sets']['generated'] and alone['comparison']['floor'] is None
    assert 'no real-vs-real floor' in report.render_markdown(alone)

"""Data sources: PNG folders (OASIS layout), NIfTI and Analyze volumes, the MNI152 default."""

import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mrigen import data
from mrigen.errors import UserError


def write_png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def brain_volume(shape=(20, 24, 16)):
    """A bright ellipsoid in a dark box, float32."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid ** 2).sum(0) < 0.6
    return (inside * (100.0 + 50.0 * grid[0])).astype(np.float32)


@pytest.fixture
def oasis_folder(tmp_path):
    """A miniature keras_png_slices_data layout: 3 train, 2 validate, 1 test, and masks."""
    root = tmp_path / "keras_png_slices_data"
    rng = np.random.default_rng(0)
    for split, count in [("train", 3), ("validate", 2), ("test", 1)]:
        for i in range(count):
            write_png(str(root / f"keras_png_slices_{split}" / f"case_{i:03d}_slice_0.nii.png"),
                      rng.integers(0, 255, (16, 16), dtype=np.uint8))
            write_png(str(root / f"keras_png_slices_seg_{split}" / f"seg_{i:03d}_slice_0.nii.png"),
                      np.full((16, 16), 85, np.uint8))
    return str(root)


def test_png_folder_is_searched_recursively_and_masks_are_left_out(oasis_folder, cache_dir):
    dataset = data.load_dataset(oasis_folder, 16, cache_dir=cache_dir)
    assert dataset.images.shape == (6, 16, 16, 1) and dataset.images.dtype == np.uint8
    assert not np.any(np.all(dataset.images == 85, axis=(1, 2, 3)))  # no mask slipped in
    with_masks = data.load_dataset(oasis_folder, 16, include_segmentation=True, cache_dir=cache_dir)
    assert len(with_masks) == 12


def test_pixel_values_survive_loading_exactly(tmp_path, cache_dir):
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write_png(str(tmp_path / "a.png"), pixels)
    images = data.load_dataset(str(tmp_path), 16, cache_dir=cache_dir).images
    np.testing.assert_array_equal(images[0, :, :, 0], pixels)
    as_float = np.asarray(data.to_float(jnp.asarray(images)))
    np.testing.assert_allclose(as_float[0, :, :, 0], pixels / 127.5 - 1.0, atol=1e-6)
    assert as_float.min() == -1.0 and as_float.max() == 1.0


def test_rgb_and_16_bit_pngs_become_8_bit_gray(tmp_path):
    write_png(str(tmp_path / "rgb.png"), np.full((4, 4, 3), [200, 100, 0], np.uint8))
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = data.png_to_gray_u8(str(tmp_path / "rgb.png"))
    assert rgb[0, 0] == round(200 * 0.299 + 100 * 0.587)  # ITU-R 601 luma
    np.testing.assert_array_equal(data.png_to_gray_u8(str(tmp_path / "deep.png")), 255)


def test_non_square_slices_are_padded_keeping_the_aspect_ratio():
    tall = np.full((8, 4), 200, np.uint8)
    square = data.square_and_resize(tall, 8)
    assert square.shape == (8, 8)
    np.testing.assert_array_equal(square[:, 2:6], 200)
    np.testing.assert_array_equal(square[:, :2], 0)
    assert data.square_and_resize(np.full((32, 32), 7, np.uint8), 16).shape == (16, 16)


def test_nifti_volume_gives_axial_slices_with_empty_ones_dropped(tmp_path, cache_dir):
    volume = brain_volume()
    path = str(tmp_path / "brain.nii.gz")
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    dataset = data.load_dataset(path, 32, cache_dir=cache_dir)
    foreground = [np.mean(np.rot90(volume[:, :, k]) > 0) for k in range(volume.shape[2])]
    assert len(dataset) == sum(f >= 0.05 for f in foreground) < volume.shape[2]
    assert dataset.images.shape[1:] == (32, 32, 1)
    assert dataset.images.min() == 0 and dataset.images.max() == 255  # robust range fills [0, 255]


def test_volumes_are_reoriented_to_canonical(tmp_path):
    volume = brain_volume()
    flipped_affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # stored left-right mirrored (LAS)
    nib.save(nib.Nifti1Image(volume[::-1].copy(), flipped_affine), str(tmp_path / "las.nii"))
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "ras.nii"))
    np.testing.assert_allclose(data.read_volume(str(tmp_path / "las.nii")),
                               data.read_volume(str(tmp_path / "ras.nii")))


def test_analyze_pair_is_read_and_a_lone_header_is_an_error(tmp_path, cache_dir):
    volume = brain_volume()
    nib.save(nib.AnalyzeImage(volume, np.eye(4)), str(tmp_path / "OAS1_0001.hdr"))
    assert os.path.exists(tmp_path / "OAS1_0001.img")
    assert len(data.load_dataset(str(tmp_path), 16, cache_dir=cache_dir)) > 0
    os.remove(tmp_path / "OAS1_0001.img")
    with pytest.raises(UserError, match=r"OAS1_0001\.hdr: Analyze header without its image file"):
        data.load_dataset(str(tmp_path), 16, cache_dir=cache_dir)


def test_mni152_template_is_the_embedded_default(cache_dir):
    dataset = data.load_dataset("", 32, cache_dir=cache_dir)
    assert dataset.source == data.MNI152_SOURCE
    assert dataset.images.shape[1:] == (32, 32, 1) and 100 < len(dataset) < 189
    middle = dataset.images[len(dataset) // 2, :, :, 0]
    assert middle[16, 16] > 60 and middle[0, 0] == 0  # brain in the centre, black corners
    # A second load comes from the cache, identical.
    assert os.listdir(cache_dir)
    np.testing.assert_array_equal(data.load_dataset("", 32, cache_dir=cache_dir).images, dataset.images)


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "does not exist"),
    (lambda root: os.makedirs(root), "holds no PNG slices"),
    (lambda root: write_png(os.path.join(root, "seg_train", "m.png"), np.zeros((4, 4), np.uint8)),
     "only segmentation masks"),
    (lambda root: (os.makedirs(root), open(os.path.join(root, "broken.png"), "wb").write(b"\x89PNG\r\n")),
     r"broken\.png: not a readable PNG image"),
    (lambda root: (os.makedirs(root), open(os.path.join(root, "v.nii.gz"), "wb").write(b"\x1f\x8b junk")),
     r"v\.nii\.gz: not a readable NIfTI/Analyze volume"),
])
def test_bad_sources_raise_one_line_errors_naming_the_path(tmp_path, setup, message):
    root = str(tmp_path / "data")
    setup(root)
    with pytest.raises(UserError, match=message) as error:
        data.load_dataset(root, 16)
    assert "\n" not in str(error.value)


def test_constant_and_nan_volumes_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 3.0, np.float32), np.eye(4)), str(tmp_path / "c.nii"))
    with pytest.raises(UserError, match=r"c\.nii: the volume is constant"):
        data.load_dataset(str(tmp_path / "c.nii"), 16)
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.nan, np.float32), np.eye(4)), str(tmp_path / "n.nii"))
    with pytest.raises(UserError, match=r"n\.nii: the volume holds no finite values"):
        data.load_dataset(str(tmp_path / "n.nii"), 16)


def test_each_epoch_is_a_permutation_and_epochs_differ():
    key = jax.random.PRNGKey(0)
    num_images, batch = 10, 3  # 3 batches per epoch, one image dropped
    epoch0 = np.concatenate([data.epoch_batch_indices(key, jnp.int32(s), num_images, batch) for s in range(3)])
    epoch1 = np.concatenate([data.epoch_batch_indices(key, jnp.int32(s), num_images, batch) for s in range(3, 6)])
    assert len(set(epoch0.tolist())) == 9 and len(set(epoch1.tolist())) == 9
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(data.epoch_batch_indices(key, jnp.int32(4), num_images, batch), epoch1[3:6])


def small_dataset(subjects=(0, 0, 1, 2, 2, 3)):
    images = np.random.default_rng(1).integers(0, 256, (len(subjects), 4, 5, 1), dtype=np.uint8)
    return data.Dataset(images=images, source="six slices", cache_key="k",
                        subjects=np.array(subjects, np.int32))


def test_mirrored_appends_each_slice_flipped_left_right():
    dataset = small_dataset()
    mirrored = data.mirrored(dataset)
    assert mirrored.images.shape == (12, 4, 5, 1) and mirrored.images.dtype == np.uint8
    np.testing.assert_array_equal(mirrored.images[:6], dataset.images)
    np.testing.assert_array_equal(mirrored.images[6:], dataset.images[:, :, ::-1, :])
    np.testing.assert_array_equal(mirrored.images[6, 2, 0], dataset.images[0, 2, 4])  # width is axis 2
    np.testing.assert_array_equal(mirrored.subjects, [0, 0, 1, 2, 2, 3] * 2)
    assert "mirrored" in mirrored.source and mirrored.cache_key != dataset.cache_key


def test_mirrored_leaves_its_input_unchanged():
    dataset = small_dataset()
    images, subjects = dataset.images.copy(), dataset.subjects.copy()
    mirrored = data.mirrored(dataset)
    mirrored.images[:] = 0
    mirrored.subjects[:] = -1
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_array_equal(dataset.subjects, subjects)
    assert (dataset.source, dataset.cache_key, len(dataset)) == ("six slices", "k", 6)


def test_mirrored_copies_stay_with_their_subject_in_a_holdout_split():
    from mrigen import holdout

    split = holdout.split_by_subject(data.mirrored(small_dataset(subjects=range(10))), 0.3)
    for side in (split.training, split.holdout):
        assert np.all(np.unique(side.subjects, return_counts=True)[1] == 2)  # both copies, same side
    # Without subjects each slice is its own, and its mirror joins it.
    unnamed = data.mirrored(data.Dataset(images=np.zeros((3, 2, 2, 1), np.uint8), source="s", cache_key="k"))
    np.testing.assert_array_equal(unnamed.subjects, [0, 1, 2, 0, 1, 2])

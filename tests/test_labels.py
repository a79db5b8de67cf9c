"""data.labels: classes from sub-folders, a CSV, or axial position; they follow their slices."""

import os

import jax
import ml_collections
import nibabel as nib
import numpy as np
import pytest

from mrigen import data, holdout, labels, run_config
from mrigen.errors import UserError
from conftest import smoke_config
from test_data import brain_volume, write_png


def class_folder(root, counts, value_of=lambda c, i: 40 * c + i):
    """Classes as sub-folders: class c has counts[c] 16-px slices, every pixel 40 c + i."""
    for c, count in enumerate(counts):
        for i in range(count):
            write_png(os.path.join(root, f"class_{c}", f"case_{c}{i:02d}_slice_0.png"),
                      np.full((16, 16), value_of(c, i), np.uint8))
    return root


def labels_match_pixels(dataset):
    return np.array_equal(dataset.labels, dataset.images[:, 0, 0, 0] // 40)


def test_folders_are_the_classes_sorted_by_name(tmp_path, cache_dir):
    root = class_folder(str(tmp_path / "d"), [5, 4, 6])
    dataset = data.load_dataset(root, 16, cache_dir=cache_dir, labels="folders")
    assert dataset.class_names == ("class_0", "class_1", "class_2")
    assert labels_match_pixels(dataset) and np.bincount(dataset.labels).tolist() == [5, 4, 6]
    again = data.load_dataset(root, 16, cache_dir=cache_dir, labels="folders")  # from the cache
    np.testing.assert_array_equal(again.labels, dataset.labels)
    assert data.load_dataset(root, 16, cache_dir=cache_dir).labels is None


def test_csv_labels_pngs_and_volumes(tmp_path):
    root = tmp_path / "d"
    class_folder(str(root), [4, 4])
    nib.save(nib.Nifti1Image(brain_volume(), np.eye(4)), str(root / "vol.nii.gz"))
    rows = [f"class_{c}/case_{c}{i:02d}_slice_0.png,{'AD' if c else 'CN'}" for c in range(2) for i in range(4)]
    (tmp_path / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\nvol.nii.gz,AD\n")
    dataset = data.load_dataset(str(root), 16, labels=f"csv:{tmp_path / 'labels.csv'}")
    assert dataset.class_names == ("AD", "CN")
    volume_slices = len(dataset) - 8
    assert volume_slices > 4
    assert dataset.labels.tolist() == [1] * 4 + [0] * 4 + [0] * volume_slices


@pytest.mark.parametrize("table, message", [
    ("file,label\nclass_0/nope.png,A\n", "'class_0/nope.png' is not an image file under"),
    ("file,label\nclass_0/case_000_slice_0.png,A\n", "has no row in"),
    ("name,kind\n", "needs a header with 'file' and 'label' columns"),
    ("file,label\nclass_0/case_000_slice_0.png,a/b\n", "cannot name a folder"),
])
def test_bad_csv_rows_are_named(tmp_path, table, message):
    root = class_folder(str(tmp_path / "d"), [4, 4])
    (tmp_path / "l.csv").write_text(table)
    with pytest.raises(UserError, match=message) as error:
        data.load_dataset(root, 16, labels=f"csv:{tmp_path / 'l.csv'}")
    assert str(error.value).startswith("config.data.labels: ") and "\n" not in str(error.value)


def test_slice_level_bins_each_volume_from_inferior_to_superior(tmp_path, shared_cache_dir):
    mni = data.load_dataset("", 32, cache_dir=shared_cache_dir, labels="slice_level:3")
    assert mni.class_names == ("level_0", "level_1", "level_2")
    assert np.all(np.diff(mni.labels) >= 0) and abs(np.bincount(mni.labels) - len(mni) / 3).max() <= 1
    # Two volumes: each is binned on its own.
    for name in ("a.nii.gz", "b.nii.gz"):
        nib.save(nib.Nifti1Image(brain_volume((20, 24, 24)), np.eye(4)), str(tmp_path / name))
    both = data.load_dataset(str(tmp_path), 16, labels="slice_level:2")
    half = len(both) // 2
    assert both.labels.tolist() == [0] * (half // 2) + [1] * (half - half // 2) + \
        [0] * (half // 2) + [1] * (half - half // 2)


@pytest.mark.parametrize("spec, message", [
    ("folder", "unknown label source 'folder'"),
    ("slice_level:1", "K must be a whole number of at least 2"),
    ("csv:", "unknown label source"),
])
def test_bad_label_specs_are_refused_by_the_config_check(spec, message):
    with pytest.raises(UserError, match=message):
        run_config.validate(smoke_config(data__labels=spec))


def test_labels_a_source_cannot_have_are_refused(tmp_path, shared_cache_dir):
    with pytest.raises(UserError, match="'folders' needs data.path to be a folder; the embedded MNI152"):
        data.load_dataset("", 32, cache_dir=shared_cache_dir, labels="folders")
    root = class_folder(str(tmp_path / "d"), [4, 4])
    with pytest.raises(UserError, match="slice_level needs volumes; .*case_000_slice_0.png is a PNG"):
        data.load_dataset(root, 16, labels="slice_level:2")
    write_png(os.path.join(root, "loose.png"), np.zeros((16, 16), np.uint8))
    with pytest.raises(UserError, match="loose.png is not inside a class sub-folder"):
        data.load_dataset(root, 16, labels="folders")
    with pytest.raises(UserError, match="class 'class_1' has 3 slices; each class needs at least 4"):
        data.load_dataset(class_folder(str(tmp_path / "e"), [4, 3]), 16, labels="folders")
    with pytest.raises(UserError, match="config.data.balanced: True needs labels"):
        run_config.validate(smoke_config(data__balanced=True))


def test_oasis_split_folders_are_not_classes(tmp_path):
    root = tmp_path / "keras_png_slices_data"
    for split in ("train", "test"):
        for i in range(4):
            write_png(str(root / f"keras_png_slices_{split}" / f"case_{i:03d}_slice_0.nii.png"),
                      np.zeros((16, 16), np.uint8))
    with pytest.raises(UserError, match="are OASIS's splits .*not classes"):
        data.load_dataset(str(root), 16, labels="folders")


def test_labels_follow_their_slices_through_the_holdout_and_the_mirror(tmp_path):
    root = class_folder(str(tmp_path / "d"), [12, 12])
    config = ml_collections.ConfigDict({"path": root, "resolution": 16, "holdout": "0.25", "cache_dir": "",
                                        "include_segmentation": False, "min_foreground": 0.05,
                                        "labels": "folders"})
    split = holdout.load(config)
    assert 0 < len(split.holdout) < len(split.training.images)
    for part in (split.training, split.holdout, data.mirrored(split.training)):
        assert labels_match_pixels(part) and part.class_names == ("class_0", "class_1")


def test_a_holdout_folder_is_labeled_with_the_training_data_classes(tmp_path):
    root = class_folder(str(tmp_path / "d"), [5, 5, 5])
    held = class_folder(str(tmp_path / "held"), [0, 4, 6], value_of=lambda c, i: 40 * c + 20 + i)  # class_1, 2
    config = ml_collections.ConfigDict({"path": root, "resolution": 16, "holdout": held, "cache_dir": "",
                                        "include_segmentation": False, "min_foreground": 0.05,
                                        "labels": "folders"})
    split = holdout.load(config)
    assert split.holdout.class_names == split.training.class_names == ("class_0", "class_1", "class_2")
    assert labels_match_pixels(split.holdout) and np.bincount(split.holdout.labels).tolist() == [0, 4, 6]
    reference_labels, floor_labels = split.evaluation_labels()
    np.testing.assert_array_equal(floor_labels, split.holdout.labels)
    class_folder(str(tmp_path / "held"), [0, 0, 0, 4])
    with pytest.raises(UserError, match=r"config.data.holdout: .*held has classes the training data has not: "
                                        r"class_3 \(training: class_0, class_1, class_2\)"):
        holdout.load(config)


def test_balanced_batches_hold_the_classes_in_turn():
    skewed = np.array([0] * 30 + [1] * 2 + [2] * 8, np.int32)
    table = jax.tree.map(np.asarray, labels.class_table(skewed, 3))
    draw = jax.jit(lambda step: labels.balanced_batch_indices(jax.random.PRNGKey(0), step, table, 12))
    batches = np.stack([np.asarray(draw(step)) for step in range(20)])
    np.testing.assert_array_equal(skewed[batches], np.tile(np.arange(12) % 3, (20, 1)))
    assert len(np.unique(batches[:, 1::3])) == 2  # both images of the rare class are drawn
    np.testing.assert_array_equal(np.asarray(draw(5)), batches[5])  # a resumed run draws the same

"""data.holdout: real images kept out of training, split by subject, and the honest floor they give."""

import os

import ml_collections
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import smoke_config
from mrigen import cli, data, evaluation, holdout, train
from mrigen.errors import UserError
from test_data import brain_volume


def data_config(path, resolution=16, spec="", cache_dir=""):
    return ml_collections.ConfigDict({"path": path, "resolution": resolution, "holdout": spec,
                                      "cache_dir": cache_dir, "include_segmentation": False,
                                      "min_foreground": 0.05})


@pytest.fixture
def cases_folder(tmp_path):
    """10 OASIS-style cases of 4 slices each; every pixel of a slice holds its case number (x 20)."""
    root = tmp_path / "keras_png_slices_data" / "keras_png_slices_train"
    root.mkdir(parents=True)
    for case in range(10):
        for index in range(4):
            pixels = np.full((16, 16), 20 * case + index, np.uint8)
            Image.fromarray(pixels).save(root / f"case_{case:03d}_slice_{index}.nii.png")
    return str(tmp_path / "keras_png_slices_data")


def cases(dataset):
    return set((dataset.images[:, 0, 0, 0] // 20).tolist())


def test_subjects_come_from_file_names():
    names = ["a/case_001_slice_0.nii.png", "OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.hdr",
             "OAS1_0001_MR2_mpr.hdr", "sub-07_T1w.nii.gz", "brain.nii"]
    assert [data.subject_of(n) for n in names] == ["case_001", "OAS1_0001", "OAS1_0001", "sub-07", "brain.nii"]
    np.testing.assert_array_equal(data.subject_ids(["b", "a", "b", "c"]), [0, 1, 0, 2])


def test_a_fraction_holds_out_whole_subjects_the_same_way_every_time(cases_folder, tmp_path):
    split = holdout.load(data_config(cases_folder, spec="0.3", cache_dir=str(tmp_path / "cache")))
    held, trained = cases(split.holdout), cases(split.training)
    assert len(split.holdout) == 4 * len(held) and len(split.training) == 4 * len(trained)  # whole cases
    assert not held & trained and held | trained == set(range(10))
    assert len(held) == 3 and "3 of the 10 subjects" in split.note
    again = holdout.load(data_config(cases_folder, spec="0.3", cache_dir=str(tmp_path / "cache")))  # cached
    np.testing.assert_array_equal(again.holdout.images, split.holdout.images)
    assert split.training.cache_key != split.holdout.cache_key != data.load_dataset(cases_folder, 16).cache_key
    reference, floor, in_sample = split.evaluation_sets()
    assert not in_sample and len(reference) == 28 and len(floor) == 12


def test_volumes_of_one_subject_stay_together(tmp_path):
    folder = tmp_path / "oasis1"
    folder.mkdir()
    for name, scale in [("OAS1_0001_MR1", 1.0), ("OAS1_0001_MR2", 1.1), ("OAS1_0002_MR1", 0.9),
                        ("OAS1_0003_MR1", 1.2)]:
        nib.save(nib.Nifti1Image(brain_volume() * scale, np.eye(4)), str(folder / f"{name}.nii"))
    dataset = data.load_dataset(str(folder), 16)
    per_volume = len(dataset) // 4
    np.testing.assert_array_equal(dataset.subjects, np.repeat([0, 0, 1, 2], per_volume))


def test_one_volume_is_split_by_slice_and_the_note_says_so(shared_cache_dir):
    whole = data.load_dataset("", 16, cache_dir=shared_cache_dir)
    split = holdout.load(data_config("", spec="0.2", cache_dir=shared_cache_dir))
    assert len(split.holdout) == round(0.2 * len(whole)) and len(split.training) + len(split.holdout) == len(whole)
    assert "one volume" in split.note and "neighbours were trained on" in split.note
    train_rows = {image.tobytes() for image in split.training.images}
    assert not any(image.tobytes() in train_rows for image in split.holdout.images)


def test_without_a_holdout_the_floor_is_the_in_sample_half(shared_cache_dir):
    split = holdout.load(data_config("", spec="", cache_dir=shared_cache_dir))
    assert split.holdout is None and split.note == ""
    reference, floor, in_sample = split.evaluation_sets()
    assert in_sample and len(reference) == len(floor) == len(split.training) // 2
    again, _ = holdout.split_halves(split.training.images)
    np.testing.assert_array_equal(reference, again)


def test_a_folder_of_real_images_is_a_holdout(cases_folder, tmp_path):
    other = tmp_path / "unseen"
    other.mkdir()
    for i in range(5):
        Image.fromarray(np.full((16, 16), 200 + i, np.uint8)).save(other / f"{i}.png")
    split = holdout.load(data_config(cases_folder, spec=str(other)))
    assert len(split.training) == 40 and len(split.holdout) == 5 and str(other) in split.note


@pytest.mark.parametrize("spec, message", [
    ("1.5", "config.data.holdout: '1.5' is neither a fraction in (0, 1) nor a path"),
    ("0", "config.data.holdout: '0' is neither a fraction in (0, 1) nor a path"),
    ("0.99", "would hold out every one of the 10 subjects"),
    ("NOWHERE", "config.data.holdout: NOWHERE does not exist"),
    ("INSIDE", "is inside data.path"),
    ("FEW", "gives 2 real images; an evaluation needs at least 4"),
])
def test_a_holdout_that_cannot_work_is_named(cases_folder, tmp_path, spec, message):
    few = tmp_path / "few"
    few.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(few / f"{i}.png")
    spec = {"NOWHERE": str(tmp_path / "nowhere"), "INSIDE": os.path.join(cases_folder, "keras_png_slices_train"),
            "FEW": str(few)}.get(spec, spec)
    with pytest.raises(UserError) as error:
        holdout.load(data_config(cases_folder, spec=spec))
    assert message.replace("NOWHERE", str(tmp_path / "nowhere")) in str(error.value)


def test_a_run_with_a_holdout_trains_without_it_and_evaluates_against_it(tmp_path, shared_cache_dir):
    # One G update per step (the smoke config has 3): 96 training images make a step of its own to compile.
    config = smoke_config(data__cache_dir=shared_cache_dir, data__holdout="0.3", train__epochs=16 / 96,
                          train__update_ratio=1)
    workdir = str(tmp_path / "run")
    final = train.train(config, workdir)
    split = holdout.load(config.data)
    assert len(split.training) == 96 and int(final["step"]) == 2  # 16 / 96 epochs of the 96 trained slices
    # `--mode=evaluate --config=configs/dcgan.py:smoke`, no holdout on the command line: the run's own is used.
    as_given = smoke_config(data__cache_dir=shared_cache_dir)
    assert cli.evaluation_config(as_given, workdir, {"data.holdout": ""}).data.holdout == ""  # what is given wins
    results, out = evaluation.evaluate_workdir(cli.evaluation_config(as_given, workdir, {}), workdir, None, 0, seed=0)
    rows = results["sets"]
    assert rows["held-out real"]["n"] == rows["generated"]["n"] == len(split.holdout) == 41
    assert rows["training data"]["n"] == 96
    assert results["source"]["held-out real"].startswith("held out from training: 41 of the 137 slices")
    with open(os.path.join(out, "report.md")) as f:
        assert "in-sample" not in f.read()


def test_a_run_recorded_before_holdout_existed_resumes_unless_a_holdout_is_asked_for():
    from mrigen import run_config

    current = smoke_config()
    previous = current.to_dict()
    del previous["data"]["holdout"]
    assert run_config.config_differences(ml_collections.ConfigDict(previous), current) == []
    current.data.holdout = "0.2"
    assert run_config.config_differences(ml_collections.ConfigDict(previous), current) == [
        ("data.holdout", None, "0.2")]

"""Bad input through main.py: one line naming the file or field, exit code 2, no traceback, nothing changed.

Each case of the corpus builds a folder holding what a user could lose (a
copy of a trained run, the data, an output folder), runs main.py on it, and
checks the message and that not one file in the folder was created, changed
or touched. tests/test_cli.py and tests/test_data.py hold the first cases;
these extend them. Every case runs main.py's parse_flags and main in the test
process (conftest.main_in_process: what they print, log and warn is checked);
a few of them, one per kind of input, also run as a fresh `python main.py`
process each, a few at a time, for the whole contract end to end.

Inputs that are not errors (4-D volumes, RGB, 16-bit and transparent PNGs,
odd sizes) are at the end, with what they become.
"""

import concurrent.futures
import dataclasses
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, folder_digest, main_in_process
from mrigen import data, workdir_lock
from test_data import brain_volume, write_png

RUN = "run"  # the trained run inside each case's folder


@dataclasses.dataclass(frozen=True)
class Case:
    """setup(root) builds the case's folder and returns main.py's arguments besides --config
    (the default: train in root/run); every fragment is in the error line, after "{root}" is
    replaced by the folder."""

    name: str
    setup: Callable[[str], list]
    fragments: tuple
    trained_run: bool = True  # root/run starts as a copy of a trained smoke run
    config: str = "configs/dcgan.py:smoke"


# ---------------------------------------------------------------- building bad input


def folder(root, *parts):
    path = os.path.join(root, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def data_path(path):
    return f"--config.data.path={path}"


def pngs(root, count=4, size=16):
    rng = np.random.default_rng(0)
    for i in range(count):
        write_png(os.path.join(root, "data", f"slice_{i}.png"), rng.integers(0, 256, (size, size), dtype=np.uint8))
    return data_path(os.path.join(root, "data"))


def truncated(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def truncated_png(root):
    pngs(root, count=2, size=64)
    truncated(os.path.join(root, "data", "slice_1.png"))
    return [data_path(os.path.join(root, "data"))]


def nifti(root, name, volume, affine=np.eye(4)):
    path = os.path.join(folder(root, "data"), name)
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def truncated_nifti(root):
    path = nifti(root, "brain.nii.gz", brain_volume())
    truncated(path)
    return [data_path(path)]


def lone_analyze(root, keep):
    nib.save(nib.AnalyzeImage(brain_volume(), np.eye(4)), os.path.join(folder(root, "data"), "OAS1_0001.hdr"))
    os.remove(os.path.join(root, "data", "OAS1_0001." + ("img" if keep == "hdr" else "hdr")))
    return [data_path(os.path.join(root, "data"))]


def only_masks(root):
    write_png(os.path.join(root, "data", "keras_png_slices_seg_train", "seg_0.png"), np.zeros((16, 16), np.uint8))
    return [data_path(os.path.join(root, "data"))]


def corrupt_checkpoint(root):
    """Truncates every array data file (OCDBT's d/ folders). Not only the largest: OCDBT's files also
    hold superseded tree nodes that a restore never reads, and which file is largest varies by run."""
    state = os.path.join(root, RUN, "checkpoints", "2", "state")
    for directory, _, names in os.walk(state):
        if os.path.basename(directory) == "d":
            for name in names:
                truncated(os.path.join(directory, name))
    return []


HELD_LOCKS = []  # the locks the cases hold, as a trainer would, for the rest of the session


def trainer_running(root):
    lock = workdir_lock.WorkdirLock(os.path.join(root, RUN))
    lock.acquire()
    HELD_LOCKS.append(lock)
    return []


def locked_on_another_host(root):
    with open(os.path.join(root, RUN, workdir_lock.LOCK_FILE), "w") as f:
        json.dump({"host": "elsewhere.invalid", "pid": 4242, "since": "2025-01-01T00:00:00+00:00"}, f)
    return []


def sample_into(root):
    write_png(os.path.join(root, "mine", "keep_me.png"), np.full((8, 8), 200, np.uint8))
    return ["--mode=sample", "--num_samples=2", f"--out={os.path.join(root, 'mine')}"]


def not_writable(root):
    if os.geteuid() == 0:  # root writes anywhere chmod allows nothing; /proc/sys refuses even root
        return ["--workdir=/proc/sys/mrigen-run"]
    os.chmod(folder(root, "locked"), 0o555)
    return [f"--workdir={os.path.join(root, 'locked', 'run')}"]


def remove(root, *parts):
    os.remove(os.path.join(root, *parts))


CASES = [
    # The data (a trained run, pointed at new data: data.path may change on resume).
    Case("missing_path", lambda r: [data_path(os.path.join(r, "nowhere"))],
         ("data.path: {root}/nowhere does not exist",)),
    Case("empty_folder", lambda r: [data_path(folder(r, "data"))],
         ("data.path: {root}/data holds no PNG slices or NIfTI/Analyze volumes",)),
    Case("only_segmentation_masks", only_masks, ("only segmentation masks", "data.include_segmentation=True")),
    Case("truncated_png", truncated_png, ("{root}/data/slice_1.png: not a readable PNG image",)),
    Case("empty_png_file", lambda r: (open(os.path.join(folder(r, "data"), "x.png"), "wb").close(),
                                      [data_path(os.path.join(r, "data"))])[1],
         ("{root}/data/x.png: not a readable PNG image",)),
    Case("truncated_nii_gz", truncated_nifti, ("{root}/data/brain.nii.gz: not a readable NIfTI/Analyze volume",)),
    Case("hdr_without_img", lambda r: lone_analyze(r, keep="hdr"),
         ("{root}/data/OAS1_0001.hdr: Analyze header without its image file OAS1_0001.img",)),
    Case("img_without_hdr", lambda r: lone_analyze(r, keep="img"),
         ("{root}/data/OAS1_0001.img: Analyze image without its header OAS1_0001.hdr",)),
    Case("five_d_volume", lambda r: [data_path(nifti(r, "v.nii", np.ones((8, 8, 8, 2, 2), np.float32)))],
         ("{root}/data/v.nii: expected a 3-D volume, got shape (8, 8, 8, 2, 2)",)),
    Case("nan_volume", lambda r: [data_path(nifti(r, "v.nii", np.full((8, 8, 8), np.nan, np.float32)))],
         ("{root}/data/v.nii: the volume holds no finite values",)),
    Case("constant_volume", lambda r: [data_path(nifti(r, "v.nii", np.full((8, 8, 8), 7.0, np.float32)))],
         ("{root}/data/v.nii: the volume is constant",)),
    Case("empty_volume", lambda r: [data_path(nifti(r, "v.nii", np.zeros((0, 8, 8), np.float32)))],
         ("{root}/data/v.nii: the volume is empty",)),
    Case("not_an_image_file", lambda r: (open(os.path.join(folder(r, "data"), "notes.txt"), "w").close(),
                                         [data_path(os.path.join(r, "data", "notes.txt"))])[1],
         ("data.path: {root}/data/notes.txt is neither a folder, a PNG nor a NIfTI/Analyze file",)),
    Case("fewer_images_than_the_batch", lambda r: [pngs(r, count=4), f"--workdir={r}/new"],
         ("train.batch_size: 8 is larger than the 4 images found",), trained_run=False),
    Case("no_slice_with_brain", lambda r: [data_path(nifti(r, "v.nii", brain_volume())), f"--workdir={r}/new",
                                           "--config.data.min_foreground=0.99"],
         ("data.path: no slice with brain in it was found", "data.min_foreground is 0.99"), trained_run=False),
    # The config (on a trained run: checked before anything is read or written).
    Case("unknown_loss", lambda r: ["--config.loss=hinge"], ("loss: unknown loss 'hinge'", "'wgan_gp'")),
    Case("unknown_model", lambda r: ["--config.model=gan3d"], ("model: unknown model 'gan3d'", "'progan'")),
    Case("batch_not_divisible_by_devices", lambda r: ["--config.train.batch_size=10"],
         ("train.batch_size: 10 is not divisible by the 4 devices",)),
    Case("resolution_not_a_power_of_two", lambda r: ["--config.data.resolution=100"],
         ("config.data.resolution: 100 must be a power of two",)),
    Case("dcgan_resolution_too_high", lambda r: ["--config.data.resolution=2048"],
         ("data.resolution: dcgan cannot make 2048x2048 images", "up to 1024")),
    Case("srresnet_resolution_too_high", lambda r: [f"--workdir={r}/new", "--config.data.resolution=4096"],
         ("data.resolution: srresnet cannot make 4096x4096 images", "up to 1024"), trained_run=False,
         config="configs/srresnet.py:smoke"),
    Case("progan_resolution_too_high", lambda r: [f"--workdir={r}/new", "--config.data.resolution=512"],
         ("data.resolution: progan cannot make 512x512 images", "from 4 to 256"), trained_run=False,
         config="configs/progan.py:smoke"),
    Case("infinite_learning_rate", lambda r: ["--config.train.learning_rate=inf"],
         ("config.train.learning_rate: inf must be positive and finite",)),
    Case("workdir_not_writable", not_writable, ("is not writable",), trained_run=False),
    Case("workdir_inside_a_file", lambda r: (open(os.path.join(r, "file"), "w").close(),
                                             [f"--workdir={r}/file/run"])[1],
         ("workdir: cannot create {root}/file/run: {root}/file is not a folder",), trained_run=False),
    Case("workdir_of_another_model", lambda r: ["--config.model=srresnet"],
         ("workdir: {root}/run holds a run with another config", "model: 'dcgan' -> 'srresnet'",
          "use a new --workdir")),
    Case("checkpoint_of_another_model", lambda r: (remove(r, RUN, "config.json"), ["--config.data.resolution=32"])[1],
         ("{root}/run/checkpoints: checkpoint 2 is of model 'dcgan', not 'srresnet'", "use a new --workdir"),
         config="configs/srresnet.py:smoke"),
    Case("corrupt_checkpoint", corrupt_checkpoint,
         ("{root}/run/checkpoints/2: damaged", "in OCDBT database at local file \"{root}/run/checkpoints/2/state/\"",
          "delete that folder to resume from the checkpoint before it")),
    Case("checkpoint_without_its_metadata",
         lambda r: (remove(r, RUN, "checkpoints", "2", "_CHECKPOINT_METADATA"), [])[1],
         ("{root}/run/checkpoints/2: damaged", "({root}/run/checkpoints/2/_CHECKPOINT_METADATA is missing)")),
    Case("checkpoint_without_its_metadata_sampled",
         lambda r: (remove(r, RUN, "checkpoints", "2", "_CHECKPOINT_METADATA"), ["--mode=sample", f"--out={r}/out"])[1],
         ("{root}/run/checkpoints/2: damaged", "_CHECKPOINT_METADATA is missing")),
    Case("checkpoint_of_another_width", lambda r: (remove(r, RUN, "config.json"), ["--config.arch.width=0.0625"])[1],
         ("{root}/run/checkpoints/2/state: not a checkpoint of this config: "
          "d.params.BatchNorm_0.bias is (4,) in the checkpoint, (8,) in this config",)),
    Case("workdir_in_use", trainer_running,
         ("workdir: {root}/run is in use: PID " + f"{os.getpid()} on {socket.gethostname()} since ",
          "(lock {root}/run/train.lock)")),
    Case("workdir_locked_on_another_host", locked_on_another_host,
         ("workdir: {root}/run is locked by PID 4242 on elsewhere.invalid since 2025-01-01T00:00:00+00:00",
          "if that run is gone, delete {root}/run/train.lock")),
    Case("corrupt_checkpoint_sampled", lambda r: corrupt_checkpoint(r) + ["--mode=sample", f"--out={r}/out"],
         ("{root}/run/checkpoints/2: damaged",)),
    Case("corrupt_config_json", lambda r: (open(os.path.join(r, RUN, "config.json"), "w").write("{\"model\": "),
                                           [])[1],
         ("{root}/run/config.json: unreadable config",)),
    Case("sample_into_a_folder_of_images", sample_into, ("--out: {root}/mine already holds", "--overwrite")),
    Case("sample_without_a_checkpoint", lambda r: (shutil.rmtree(os.path.join(r, RUN, "checkpoints")),
                                                   ["--mode=sample", f"--out={r}/out"])[1],
         ("workdir: {root}/run holds no checkpoint; train first",)),
    Case("sample_from_a_folder_that_is_no_run", lambda r: ["--mode=sample", f"--workdir={folder(r, 'data')}"],
         ("{root}/data/config.json: not found; is {root}/data a mrigen workdir?",), trained_run=False),
    Case("sample_from_a_workdir_that_does_not_exist", lambda r: ["--mode=sample", f"--workdir={r}/nowhere"],
         ("workdir: {root}/nowhere does not exist; train a run there first",), trained_run=False),
    # --mode=evaluate --eval_images: the folder is named as the flag the user gave, never as data.path.
    Case("eval_images_missing", lambda r: ["--mode=evaluate", f"--eval_images={r}/nowhere"],
         ("error: --eval_images: {root}/nowhere does not exist",)),
    Case("eval_images_empty_folder", lambda r: ["--mode=evaluate", f"--eval_images={folder(r, 'mine')}"],
         ("error: --eval_images: {root}/mine holds no PNG slices or NIfTI/Analyze volumes",)),
    Case("out_inside_a_file", lambda r: (open(os.path.join(r, "file"), "w").close(),
                                         ["--mode=interpolate", f"--out={r}/file/out"])[1],
         ("error: --out: cannot create {root}/file/out: {root}/file is not a folder",)),
    # Paths are taken literally: only a leading ~ is expanded, nothing runs.
    Case("home_is_expanded", lambda r: [data_path("~/mrigen-no-such-folder")],
         (f"data.path: {os.path.expanduser('~')}/mrigen-no-such-folder does not exist",)),
    Case("variables_are_not_expanded", lambda r: [data_path("$HOME/x${USER}")],
         (f"data.path: {ROOT}/$HOME/x${{USER}} does not exist",)),
    Case("commands_are_not_run", lambda r: [data_path(f"$(touch {r}/pwned)`touch {r}/pwned`")],
         ("$(touch {root}/pwned)`touch {root}/pwned` does not exist",)),
]


# ---------------------------------------------------------------- running the corpus


# One case per kind of input (data, config, checkpoint, --mode=sample, --mode=evaluate) also runs as a
# process of its own: nothing but a fresh `python main.py` shows what reaches a user's terminal.
IN_A_PROCESS = ("truncated_nii_gz", "unknown_loss", "corrupt_checkpoint", "sample_without_a_checkpoint",
                "eval_images_missing")


class _Captured(logging.Handler):
    """Every log record, formatted as a user's terminal would show it (tracebacks included)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.lines.append(self.format(record))


def prepare_case(case, root, trained_run):
    os.makedirs(root)
    if case.trained_run:
        shutil.copytree(trained_run, os.path.join(root, RUN))
    return case.setup(root)


def main_arguments(case, root, cache_dir, args):
    return [f"--config={case.config}", f"--workdir={os.path.join(root, RUN)}", f"--config.data.cache_dir={cache_dir}",
            *args]


def run_case_in_a_process(case, root, trained_run, cache_dir):
    args = prepare_case(case, root, trained_run)
    before = folder_digest(root)
    command = [sys.executable, os.path.join(ROOT, "main.py"), *main_arguments(case, root, cache_dir, args)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return result, before, folder_digest(root)


def run_case_in_this_process(case, root, trained_run, cache_dir):
    args = prepare_case(case, root, trained_run)
    before = folder_digest(root)
    captured = _Captured()
    logging.root.addHandler(captured)
    try:
        result = main_in_process(*main_arguments(case, root, cache_dir, args))
    finally:
        logging.root.removeHandler(captured)
    result.stderr += "".join(line + "\n" for line in captured.lines)
    return result, before, folder_digest(root)


@pytest.fixture(scope="module")
def results(smoke_run, tmp_path_factory, shared_cache_dir):
    """main.py's result on every case in this process, and on those of IN_A_PROCESS in processes of their
    own (two at a time, while the others run here): {(case name, in a process): (folder, result)}."""
    base = tmp_path_factory.mktemp("bad_input")
    by_name = {case.name: case for case in CASES}
    found = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_case_in_a_process, by_name[name], str(base / "process" / name), smoke_run,
                                     shared_cache_dir)
                   for name in IN_A_PROCESS}
        for case in CASES:
            root = str(base / "here" / case.name)
            found[case.name, False] = root, run_case_in_this_process(case, root, smoke_run, shared_cache_dir)
        for name, future in futures.items():
            found[name, True] = str(base / "process" / name), future.result()
    return found


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 20 and len({case.name for case in CASES}) == len(CASES)
    assert set(IN_A_PROCESS) <= {case.name for case in CASES}


def check_case(case, root, result, before, after):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in case.fragments:
        assert fragment.replace("{root}", root) in errors[0], errors[0]
    assert after == before, "main.py changed the case's folder"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_changes(case, results):
    root, (result, before, after) = results[case.name, False]
    check_case(case, root, result, before, after)


@pytest.mark.parametrize("case", [case for case in CASES if case.name in IN_A_PROCESS], ids=lambda case: case.name)
def test_bad_input_to_a_main_py_process_is_one_line_exit_2_and_nothing_changes(case, results):
    root, (result, before, after) = results[case.name, True]
    check_case(case, root, result, before, after)


# ---------------------------------------------------------------- input that is converted, not refused


def test_a_4d_volume_gives_its_first_volume_and_says_so(tmp_path, caplog):
    first, second = brain_volume(), brain_volume()[::-1].copy()
    path = str(tmp_path / "fmri.nii.gz")
    nib.save(nib.Nifti1Image(np.stack([first, second], axis=-1), np.eye(4)), path)
    nib.save(nib.Nifti1Image(first, np.eye(4)), str(tmp_path / "first.nii.gz"))
    with caplog.at_level(logging.WARNING):
        images = data.load_dataset(path, 32).images
    assert f"{path}: 4-D volume with 2 volumes; using the first" in caplog.text
    np.testing.assert_array_equal(images, data.load_dataset(str(tmp_path / "first.nii.gz"), 32).images)


def png_16_bit(path, array, color_type):
    """A 16-bit PNG written by hand (PIL writes 16-bit gray only): color type 0 gray, 2 RGB."""
    height, width = array.shape[:2]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                + chunk(b"IEND", b""))


def test_png_color_types_and_bit_depths_become_8_bit_gray(tmp_path):
    def gray(name):
        return data.png_to_gray_u8(str(tmp_path / name)).tolist()

    png_16_bit(str(tmp_path / "gray16.png"), np.array([[0, 257, 1000, 65535]], np.uint16), 0)
    assert gray("gray16.png") == [[0, 1, 4, 255]]  # x / 257, rounded
    rgb16 = np.array([[[65535, 25700, 0], [1000, 2000, 3000]]], np.uint16)
    png_16_bit(str(tmp_path / "rgb16.png"), rgb16, 2)
    assert gray("rgb16.png") == [[135, 6]]  # the luma of the high bytes (255, 100, 0) and (3, 7, 11)
    Image.fromarray(np.array([[[255, 100, 0], [0, 0, 255]]], np.uint8)).save(tmp_path / "rgb.png")
    assert gray("rgb.png") == [[135, 29]]  # ITU-R 601: 0.299 R + 0.587 G + 0.114 B
    Image.fromarray(np.array([[[90, 90, 90, 255], [90, 90, 90, 0]]], np.uint8), "RGBA").save(tmp_path / "rgba.png")
    assert gray("rgba.png") == [[90, 0]]  # transparent is background
    Image.fromarray(np.array([[[90, 255], [90, 51]]], np.uint8), "LA").save(tmp_path / "la.png")
    assert gray("la.png") == [[90, 18]]
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.save(tmp_path / "palette.png")
    assert gray("palette.png") == [[0, 255]]
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "bits.png")
    assert gray("bits.png") == [[0, 255]]


def test_rgb_and_16_bit_pngs_train_like_their_gray_versions(tmp_path):
    values = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    write_png(str(tmp_path / "gray" / "a.png"), values)
    write_png(str(tmp_path / "rgb" / "a.png"), np.repeat(values[..., None], 3, axis=-1))
    os.makedirs(tmp_path / "deep")
    png_16_bit(str(tmp_path / "deep" / "a.png"), values.astype(np.uint16) * 257, 0)
    expected = data.load_dataset(str(tmp_path / "gray"), 16).images
    np.testing.assert_array_equal(data.load_dataset(str(tmp_path / "rgb"), 16).images, expected)
    np.testing.assert_array_equal(data.load_dataset(str(tmp_path / "deep"), 16).images, expected)


@pytest.mark.parametrize("height, width", [(7, 5), (5, 7), (33, 17), (17, 33), (1, 9)])
def test_odd_sized_and_non_square_images_are_centred_on_black(tmp_path, height, width):
    write_png(str(tmp_path / "a.png"), np.full((height, width), 255, np.uint8))
    side = max(height, width)
    image = data.load_dataset(str(tmp_path / "a.png"), side).images[0, :, :, 0]
    top, left = (side - height) // 2, (side - width) // 2
    assert image.shape == (side, side)
    assert np.all(image[top:top + height, left:left + width] == 255)
    assert image.sum() == 255 * height * width  # black around it
    resized = data.load_dataset(str(tmp_path / "a.png"), 16).images
    assert resized.shape == (1, 16, 16, 1)


def test_a_partly_nan_volume_is_read_with_its_nans_as_background(tmp_path):
    volume = brain_volume()
    holey = volume.copy()
    holey[0, :, :] = np.nan  # an edge slab outside the brain
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "whole.nii"))
    nib.save(nib.Nifti1Image(holey, np.eye(4)), str(tmp_path / "holey.nii"))
    np.testing.assert_array_equal(data.load_dataset(str(tmp_path / "holey.nii"), 32).images,
                                  data.load_dataset(str(tmp_path / "whole.nii"), 32).images)

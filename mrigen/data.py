"""Brain MRI slices as uint8 arrays: PNG folders, NIfTI/Analyze volumes, MNI152.

Every source ends as one array `[N, R, R, 1] uint8` (R the configured
resolution). Training turns it into float32 in [-1, 1] with `to_float` after
drawing a batch on the device, so the whole set lives in accelerator memory
(the paper's 11,328 slices at 256x256 are 742 MB).
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from mrigen import labels as labels_lib
from mrigen import slice_cache
from mrigen.errors import UserError, first_line

MNI152_SOURCE = "MNI152 2009a T1 template (shipped with nilearn)"
PNG_SUFFIXES = (".png",)
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".hdr")
_SEGMENTATION_DIR = re.compile(r"(^|[_\-.])seg([_\-.]|mentation|$)", re.IGNORECASE)
_CACHE_VERSION = 3  # 2: transparent PNG pixels are black; 3: subjects cached beside the slices
# A subject in a file name: OASIS's keras slices (case_001_slice_0.nii.png), OASIS-1 (OAS1_0001_MR1_...),
# BIDS (sub-01_T1w).
_SUBJECT = re.compile(r"(case_\d+|OAS\d_\d+|sub-[A-Za-z0-9]+)")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A set of slices and where it came from.

    images: [N, R, R, 1] uint8; 0 is the darkest value, 255 the brightest.
    source: a human-readable description (path and what was found there).
    cache_key: a stable id of the files, resolution and options; derived
      artefacts (the PCA basis) are stored under it.
    subjects: [N] int32, equal for slices of one subject (or volume, where
      the files name no subject); a PNG that names none is its own.
    labels: [N] int32 class of each slice (mrigen.labels), or None without labels.
    class_names: the classes' names, labels index them; () without labels.
    """

    images: np.ndarray
    source: str
    cache_key: str
    subjects: np.ndarray = None
    labels: np.ndarray = None
    class_names: tuple = ()

    @property
    def resolution(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]


# ---------------------------------------------------------------- slices


def square_and_resize(slice_u8: np.ndarray, resolution: int) -> np.ndarray:
    """Pads a 2-D uint8 slice to a square with zeros (centred), then resizes.

    The aspect ratio is kept; returns [resolution, resolution] uint8.
    """
    h, w = slice_u8.shape
    side = max(h, w)
    if (h, w) != (side, side):
        padded = np.zeros((side, side), np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top:top + h, left:left + w] = slice_u8
        slice_u8 = padded
    if side == resolution:
        return slice_u8
    image = Image.fromarray(slice_u8, mode="L")
    return np.asarray(image.resize((resolution, resolution), Image.Resampling.BILINEAR))


def png_to_gray_u8(path: str) -> np.ndarray:
    """Decodes one PNG to a 2-D uint8 array.

    RGB becomes ITU-R 601 luma, 16-bit gray is scaled by 1/257 (65535 -> 255),
    and transparent pixels become black, the background of a brain slice.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                values = np.asarray(image, dtype=np.float64)
                return np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
            if image.mode == "F":
                raise UserError(f"{path}: floating-point PNG images are not supported")
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                gray = np.asarray(rgba.convert("L"), np.float64)
                alpha = np.asarray(rgba.getchannel("A"), np.float64)
                return np.round(gray * alpha / 255.0).astype(np.uint8)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except UserError:
        raise
    except Exception as e:  # PIL raises many types for damaged files.
        raise UserError(f"{path}: not a readable PNG image ({first_line(e)})") from None


def volume_to_slices(volume: np.ndarray, name: str, min_foreground: float) -> list[np.ndarray]:
    """Axial uint8 slices of a canonical (RAS) volume, near-empty ones dropped.

    Intensities are scaled per volume with a robust range: the 0.5th and 99.5th
    percentiles map to 0 and 255. A slice is kept when at least
    `min_foreground` of its pixels are above 10% of that range. Anterior is up.
    """
    if volume.size == 0:
        raise UserError(f"{name}: the volume is empty (shape {tuple(volume.shape)})")
    if not np.all(np.isfinite(volume)):
        finite = np.isfinite(volume)
        if not finite.any():
            raise UserError(f"{name}: the volume holds no finite values (all NaN or Inf)")
        volume = np.where(finite, volume, 0.0)
    lo, hi = np.percentile(volume, [0.5, 99.5])
    if not hi > lo:
        raise UserError(f"{name}: the volume is constant (no intensity range to scale)")
    scaled = np.clip((volume - lo) / (hi - lo), 0.0, 1.0)
    slices = []
    for k in range(scaled.shape[2]):
        axial = np.rot90(scaled[:, :, k])
        if np.mean(axial > 0.1) >= min_foreground:
            slices.append(np.round(axial * 255.0).astype(np.uint8))
    return slices


def _as_3d(data: np.ndarray, name: str) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise UserError(f"{name}: expected a 3-D volume, got shape {tuple(data.shape)}")
    return data


def read_volume(path: str) -> np.ndarray:
    """Loads a NIfTI or Analyze volume, reoriented to the closest canonical (RAS).

    Returns a 3-D float32 array; a 4-D file gives its first volume.
    """
    import nibabel as nib  # Deferred: only volume sources need it.

    if path.endswith(".hdr") and not os.path.exists(path[:-4] + ".img"):
        raise UserError(f"{path}: Analyze header without its image file {os.path.basename(path[:-4])}.img")
    try:
        image = nib.load(path)
        if len(image.shape) == 4:
            if image.shape[3] > 1:
                logging.warning("%s: 4-D volume with %d volumes; using the first", path, image.shape[3])
            image = image.slicer[..., 0]
        image = nib.as_closest_canonical(image)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: not a readable NIfTI/Analyze volume ({first_line(e)})") from None
    return _as_3d(data, path)


def mni152_volume() -> np.ndarray:
    """The MNI152 2009a T1 template inside nilearn's wheel (no download), RAS float32."""
    import nibabel as nib
    from nilearn import datasets

    image = nib.as_closest_canonical(datasets.load_mni152_template(resolution=1))
    return np.asarray(image.dataobj, dtype=np.float32)


# ---------------------------------------------------------------- sources


def is_segmentation_path(relative_path: str) -> bool:
    """True when a folder on the path is a segmentation folder (`*_seg_*`, `seg`, ...)."""
    folders = relative_path.replace("\\", "/").split("/")[:-1]
    return any(_SEGMENTATION_DIR.search(folder) for folder in folders)


def find_files(root: str, include_segmentation: bool) -> tuple[list[str], list[str]]:
    """Recursively lists PNG files and volume files under root (sorted)."""
    pngs, volumes = [], []
    for directory, subdirs, names in os.walk(root, onerror=_raise_walk_error):
        subdirs.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if not include_segmentation and is_segmentation_path(relative):
                continue
            lower = name.lower()
            if lower.endswith(PNG_SUFFIXES):
                pngs.append(path)
            elif lower.endswith(".hdr") and not os.path.exists(path[:-4] + ".img"):
                raise UserError(f"{path}: Analyze header without its image file {name[:-4]}.img")
            elif lower.endswith(VOLUME_SUFFIXES):
                volumes.append(path)
            elif lower.endswith(".img") and not os.path.exists(path[:-4] + ".hdr"):
                raise UserError(f"{path}: Analyze image without its header {name[:-4]}.hdr")
    return pngs, volumes


def _raise_walk_error(error: OSError):
    raise UserError(f"{error.filename}: cannot list folder ({error.strerror})")


def _parallel_map(fn: Callable, items: Sequence, desc: str) -> list:
    from tqdm import tqdm

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="file",
                         disable=len(items) < 500, leave=False))


def subject_of(path: str) -> str:
    """The subject a file's name gives (`case_001`, `OAS1_0001`, `sub-01`), else the path itself."""
    match = _SUBJECT.search(os.path.basename(path))
    return match.group(1) if match else path


def subject_ids(names: Sequence[str]) -> np.ndarray:
    """[N] int32: one number per distinct name, in order of first appearance."""
    numbers = {}
    return np.array([numbers.setdefault(name, len(numbers)) for name in names], np.int32)


def slices_from_files(pngs: Sequence[str], volumes: Sequence[str], resolution: int,
                      min_foreground: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decodes the files into [N, resolution, resolution, 1] uint8, their [N] subjects and [N] file indices."""
    def png_slice(path):
        return square_and_resize(png_to_gray_u8(path), resolution)

    def volume_slices(path):
        return [square_and_resize(s, resolution)
                for s in volume_to_slices(read_volume(path), path, min_foreground)]

    slices = _parallel_map(png_slice, pngs, "reading PNG slices")
    subjects, origins = [subject_of(path) for path in pngs], list(range(len(pngs)))
    for i, (path, per_volume) in enumerate(zip(volumes, _parallel_map(volume_slices, volumes, "reading volumes"))):
        slices.extend(per_volume)
        subjects.extend([subject_of(path)] * len(per_volume))
        origins.extend([len(pngs) + i] * len(per_volume))
    return _stack(slices, resolution), subject_ids(subjects), np.array(origins, np.int32)


def _stack(slices: Sequence[np.ndarray], resolution: int) -> np.ndarray:
    """[N, R, R] uint8 slices -> [N, R, R, 1]; N may be 0 (every slice dropped)."""
    if not slices:
        return np.zeros((0, resolution, resolution, 1), np.uint8)
    return np.stack(slices)[..., None]


def fingerprint(parts: Sequence) -> str:
    """A short stable hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True).encode()).hexdigest()[:20]


def _file_stamp(path: str) -> list:
    """Path, size and modification time; an Analyze header stamps its image file too."""
    paths = [path, path[:-4] + ".img"] if path.lower().endswith(".hdr") else [path]
    try:
        return [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]
    except OSError as e:
        raise UserError(f"{e.filename}: cannot read ({e.strerror})") from None


# ---------------------------------------------------------------- loading


def load_dataset(path: str, resolution: int, include_segmentation: bool = False,
                 min_foreground: float = 0.05, cache_dir: str = "", labels: str = "") -> Dataset:
    """Loads every slice found at `path` (a folder, one file, or '' for MNI152).

    Args:
      path: a folder searched recursively for PNG slices and NIfTI/Analyze
        volumes, a single such file, or '' for the embedded MNI152 template.
      resolution: output side length in pixels.
      include_segmentation: keep files under segmentation folders.
      min_foreground: volumes only; see `volume_to_slices`.
      cache_dir: where decoded sets are cached as .npy ('' disables caching).
      labels: data.labels, where the classes come from (mrigen.labels; '' for none).
    Returns:
      A Dataset with images [N, resolution, resolution, 1] uint8.
    """
    labels_lib.parse(labels)  # A bad spec is refused before any file is read.
    options = [resolution, include_segmentation, min_foreground, _CACHE_VERSION]
    if not path:
        source = MNI152_SOURCE
        key = fingerprint(["mni152", *options])
        files = [MNI152_SOURCE]
        load = lambda: _mni152_slices(resolution, min_foreground)
    else:
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.exists(path):
            raise UserError(f"data.path: {path} does not exist")
        if os.path.isdir(path):
            pngs, volumes = find_files(path, include_segmentation)
            if not pngs and not volumes:
                hint = ("" if include_segmentation or not _has_segmentation_only(path)
                        else " (only segmentation masks, which are left out; set "
                             "data.include_segmentation=True to use them)")
                raise UserError(f"data.path: {path} holds no PNG slices or NIfTI/Analyze volumes{hint}")
        elif path.lower().endswith(PNG_SUFFIXES):
            pngs, volumes = [path], []
        elif path.lower().endswith(VOLUME_SUFFIXES + (".img",)):
            pngs, volumes = [], [path[:-4] + ".hdr" if path.lower().endswith(".img") else path]
        else:
            raise UserError(f"data.path: {path} is neither a folder, a PNG nor a NIfTI/Analyze file")
        source = f"{path} ({len(pngs)} PNG files, {len(volumes)} volumes)"
        key = fingerprint([_file_stamp(p) for p in pngs + volumes] + options)
        files = pngs + volumes
        load = lambda: slices_from_files(pngs, volumes, resolution, min_foreground)

    images, subjects, origins = slice_cache.cached(load, cache_dir, key)
    if len(images) == 0:
        raise UserError(f"data.path: no slice with brain in it was found in {path or MNI152_SOURCE} "
                        f"(data.min_foreground is {min_foreground})")
    slice_labels, class_names = labels_lib.assign(labels, path, files, origins)
    return Dataset(images=images, source=source, cache_key=key, subjects=subjects, labels=slice_labels,
                   class_names=class_names)


def _has_segmentation_only(root: str) -> bool:
    pngs, volumes = find_files(root, include_segmentation=True)
    return bool(pngs or volumes)


def _mni152_slices(resolution: int, min_foreground: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    slices = volume_to_slices(mni152_volume(), MNI152_SOURCE, min_foreground)
    one_volume = np.zeros(len(slices), np.int32)
    return _stack([square_and_resize(s, resolution) for s in slices], resolution), one_volume, one_volume


def mirrored(dataset: Dataset) -> Dataset:
    """`dataset` followed by its slices mirrored left-right (along the width), a new Dataset.

    A mirrored slice keeps its subject (without subjects, each slice is its
    own), so a split by subject puts it on the same side as its original, and
    the held-out side holds only the mirrors of held-out slices. The cache key is a new one: nothing derived
    from the unmirrored set is taken for it.
    """
    subjects = dataset.subjects if dataset.subjects is not None else np.arange(len(dataset), dtype=np.int32)
    twice = lambda a: None if a is None else np.concatenate([a, a])  # noqa: E731
    return Dataset(images=np.concatenate([dataset.images, dataset.images[:, :, ::-1]]),
                   source=f"{dataset.source}, with each slice also mirrored left-right",
                   cache_key=fingerprint([dataset.cache_key, "mirrored"]),
                   subjects=twice(subjects), labels=twice(dataset.labels), class_names=dataset.class_names)


# ---------------------------------------------------------------- on device


def to_float(images_u8: jax.Array) -> jax.Array:
    """uint8 [..., 1] -> float32 in [-1, 1] (x / 127.5 - 1, as the paper)."""
    return images_u8.astype(jnp.float32) / 127.5 - 1.0


def to_float_host(images_u8: np.ndarray) -> np.ndarray:
    """`to_float` in numpy, for host-side work (evaluation) that should not touch the device."""
    return np.asarray(images_u8, np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> uint8 (clipped, rounded)."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def epoch_batch_indices(key: jax.Array, step: jax.Array, num_images: int, batch_size: int) -> jax.Array:
    """Indices of batch `step`: each epoch is a fresh permutation (remainder dropped).

    Jittable; depends only on (key, step), so a resumed run draws the same batches.
    """
    steps_per_epoch = num_images // batch_size
    epoch, position = step // steps_per_epoch, step % steps_per_epoch
    permutation = jax.random.permutation(jax.random.fold_in(key, epoch), num_images)
    return jax.lax.dynamic_slice(permutation, (position * batch_size,), (batch_size,))

"""Generated sets on disk, ready to train another network: PNG, OASIS layout or NIfTI, plus a manifest.

    png     sample_000000.png, ...                              (flat folder)
    oasis   keras_png_slices_train/case_001_slice_0.nii.png, ...  (the OASIS keras_png_slices layout,
            32 slices per case; mrigen's own loader and OASIS readers take it as it is)
    nifti   generated_0000.nii.gz, ...                          (up to 32 slices stacked per volume)

Every format writes manifest.json: model, loss, checkpoint step, seed, count,
resolution, files. Pixel values are uint8, (x + 1) * 127.5 of the generator's
[-1, 1] output, as in the PNG slices of the training data. The images are the
same for every format given the seed: batch i uses fold_in(key, 64 i), as
sampling.write_samples.

A conditional run's export also names each file's class in the manifest
(`labels`): with `per_class`, N images of each class go to <folder>/<class>/
in the format's layout (image i of every class from the same latent);
without, image i is of class i mod C.
"""

import datetime
import json
import os
from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mrigen import images as images_lib
from mrigen.data import to_uint8
from mrigen.errors import UserError, writing

FORMATS = ("png", "oasis", "nifti")
MANIFEST = "manifest.json"
OASIS_FOLDER = "keras_png_slices_train"
SLICES_PER_CASE = 32  # OASIS keras_png_slices: 11,328 training slices = 354 cases x 32.
# In-plane field of view of a slice: OASIS's 256 px slices are 1 mm per pixel.
FIELD_OF_VIEW_MM = 256.0


def generated_images(sampler, key: jax.Array, count: int, batch_size: int = 64,
                     label: Optional[int] = None) -> Iterator[np.ndarray]:
    """The generated set one image at a time: [R, R] uint8.

    A conditional sampler makes class `label`, or image i of class i mod C when it is None.
    """
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        batch = np.asarray(sampler(jax.random.fold_in(key, start), batch_size,
                                   *_batch_labels(sampler, start, batch_size, label)))[:n]
        yield from to_uint8(batch[..., 0])


def _batch_labels(sampler, start: int, batch_size: int, label: Optional[int]) -> tuple:
    """() for an unconditional sampler, else the labels of images start .. start + batch_size - 1."""
    if not sampler.class_names:
        return ()
    if label is not None:
        return (jnp.full((batch_size,), label, jnp.int32),)
    return (jnp.arange(start, start + batch_size, dtype=jnp.int32) % len(sampler.class_names),)


def oasis_name(index: int) -> str:
    """Image `index`'s path in the OASIS layout: case_001_slice_0.nii.png for index 0."""
    case, slice_index = divmod(index, SLICES_PER_CASE)
    return os.path.join(OASIS_FOLDER, f"case_{case + 1:03d}_slice_{slice_index}.nii.png")


def nifti_affine(resolution: int, depth: int) -> np.ndarray:
    """RAS voxel-to-mm affine of a [R, R, depth] stack, centred on the origin.

    In-plane spacing is FIELD_OF_VIEW_MM / R; the stacking axis gets the same
    spacing. The slices are independent samples, so that spacing is nominal.
    Every volume of an export uses depth = slices_per_volume (a shorter last
    volume shares the others' affine).
    """
    spacing = FIELD_OF_VIEW_MM / resolution
    shape = np.array([resolution, resolution, depth], np.float64)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (shape - 1) / 2
    return affine


def slice_to_voxels(image_u8: np.ndarray) -> np.ndarray:
    """An axial slice as displayed (anterior up) -> the volume's [x, y] plane; data.volume_to_slices inverted."""
    return np.rot90(image_u8, k=-1)


def write_nifti(stack: list[np.ndarray], path: str, affine: np.ndarray) -> None:
    """Slices [R, R] uint8 stacked along the third (superior) axis into one .nii.gz."""
    import nibabel as nib  # Deferred: only this format needs it.

    volume = np.stack([slice_to_voxels(s) for s in stack], axis=2)
    image = nib.Nifti1Image(volume, affine)
    image.set_qform(image.affine, code=2)  # "aligned": mm coordinates, not a scanner's.
    image.set_sform(image.affine, code=2)
    image.header.set_xyzt_units("mm")
    image.header["cal_min"], image.header["cal_max"] = 0, 255
    image.header["descrip"] = b"mrigen generated slices, stacked"
    temporary = f"{path}.{os.getpid()}.tmp.nii.gz"
    with writing(path):
        nib.save(image, temporary)
        os.replace(temporary, path)


def manifest_files(folder: str) -> list[str]:
    """The files (manifest included) that an earlier export's manifest.json lists in `folder`."""
    manifest = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest):
        return []
    try:
        with open(manifest) as f:
            listed = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        listed = []
    return [os.path.join(folder, p) for p in listed] + [manifest]


def existing_images(folder: str, class_names: Sequence[str] = ()) -> list[str]:
    """PNG and NIfTI files already in `folder` (or its OASIS subfolder, or those of its class folders)."""
    found = []
    roots = [folder] + [os.path.join(folder, name) for name in class_names]
    for sub in [path for root in roots for path in (root, os.path.join(root, OASIS_FOLDER))]:
        if os.path.isdir(sub):
            found += sorted(os.path.join(sub, n) for n in os.listdir(sub)
                            if n.lower().endswith((".png", ".nii", ".nii.gz")))
    return found


def export(sampler, key: jax.Array, count: int, folder: str, fmt: str, info: dict,
           overwrite: bool = False, slices_per_volume: int = SLICES_PER_CASE, per_class: int = 0) -> dict:
    """Writes `count` generated images to `folder` in format `fmt`, then manifest.json.

    info: what the manifest records of the source (model, loss, workdir, seed).
    per_class: > 0 (a conditional sampler only): that many images of each
    class instead of `count`, each class in its own subfolder.
    Refuses a folder that holds images or a manifest unless `overwrite`, which
    first removes the files an earlier export's manifest lists (so a smaller
    export leaves none of a larger one behind). Returns the manifest.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r}; choose one of {list(FORMATS)}")
    if count < 1:
        raise UserError(f"--num_samples: {count} must be at least 1")
    if slices_per_volume < 1:
        raise UserError(f"--slices_per_volume: {slices_per_volume} must be at least 1")
    if per_class < 0:
        raise UserError(f"--per_class: {per_class} must be at least 1 (or 0: --num_samples images in all)")
    if per_class and not sampler.class_names:
        raise UserError("--per_class: this run is unconditional (trained without data.labels); "
                        "use --num_samples")
    classes = sampler.class_names
    previous = manifest_files(folder) or existing_images(folder, classes)
    if previous and not overwrite:
        raise UserError(f"--out: {folder} already holds images ({os.path.relpath(previous[0], folder)}, ...); "
                        f"pass --overwrite to replace them")
    for path in manifest_files(folder):
        if os.path.isfile(path):
            os.remove(path)
    with writing(folder):
        os.makedirs(folder, exist_ok=True)

    affine = nifti_affine(sampler.resolution, slices_per_volume)
    if per_class:
        files, labels = [], {}
        for label, name in enumerate(classes):
            written = _write_images(generated_images(sampler, key, per_class, label=label),
                                    os.path.join(folder, name), fmt, slices_per_volume, affine)
            files += [os.path.join(name, path) for path, _ in written]
            labels.update({os.path.join(name, path): name for path, _ in written})
        count = per_class * len(classes)
    else:
        written = _write_images(generated_images(sampler, key, count), folder, fmt, slices_per_volume, affine)
        files = [path for path, _ in written]
        # Image i is of class i mod C: a file's label, or for a volume those of its slices in order.
        labels = {path: (classes[indices[0] % len(classes)] if fmt != "nifti" else
                         [classes[i % len(classes)] for i in indices])
                  for path, indices in written} if classes else {}
    manifest = {
        **info,
        "checkpoint_step": sampler.step,
        "count": count,
        "resolution": sampler.resolution,
        "format": fmt,
        "values": "uint8, (x + 1) * 127.5 of the generator's output x in [-1, 1]",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }
    if fmt == "nifti":
        manifest["slices_per_volume"] = slices_per_volume
        manifest["affine"] = affine.tolist()
        manifest["layout"] = ("axial slices stacked along the third axis (RAS, anterior up when displayed); "
                              "the slices are independent samples, so the slice spacing is nominal")
    elif fmt == "oasis":
        manifest["layout"] = f"OASIS keras_png_slices: {SLICES_PER_CASE} slices per case; cases are nominal"
    if classes:
        manifest["classes"] = list(classes)
        if per_class:
            manifest["per_class"] = per_class
        manifest["labels"] = labels
    temporary = os.path.join(folder, f"{MANIFEST}.tmp")
    with writing(os.path.join(folder, MANIFEST)):
        with open(temporary, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(temporary, os.path.join(folder, MANIFEST))
    return manifest


def _write_images(stream: Iterator[np.ndarray], folder: str, fmt: str, slices_per_volume: int,
                  affine: np.ndarray) -> list[tuple[str, list[int]]]:
    """The stream written to `folder` in `fmt`: (file relative to folder, indices of its images) per file."""
    with writing(folder):
        os.makedirs(folder, exist_ok=True)
    if fmt == "nifti":
        return _write_volumes(stream, folder, slices_per_volume, affine)
    written = []
    for i, image in enumerate(stream):
        name = oasis_name(i) if fmt == "oasis" else f"sample_{i:06d}.png"
        images_lib.save_png(image, os.path.join(folder, name))
        written.append((name, [i]))
    return written


def _write_volumes(stream: Iterator[np.ndarray], folder: str, per_volume: int,
                   affine: np.ndarray) -> list[tuple[str, list[int]]]:
    written, stack = [], []
    for i, image in enumerate(stream):
        stack.append(image)
        if len(stack) == per_volume:
            written.append((f"generated_{len(written):04d}.nii.gz", list(range(i + 1 - len(stack), i + 1))))
            write_nifti(stack, os.path.join(folder, written[-1][0]), affine)
            stack = []
    if stack:
        start = sum(len(indices) for _, indices in written)
        written.append((f"generated_{len(written):04d}.nii.gz", list(range(start, start + len(stack)))))
        write_nifti(stack, os.path.join(folder, written[-1][0]), affine)
    return written

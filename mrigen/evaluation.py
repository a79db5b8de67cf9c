"""`--mode=evaluate`: the paper's realism and diversity measures for a run or a folder.

Generated images are compared with a reference set of training images, and
so are real images the model did not train on: that real-vs-real row is the
floor. With `data.holdout` (mrigen.holdout) the reference is the whole
training set and the floor is the holdout; without, the training data is
split with a fixed seed into two disjoint halves and the floor is in-sample
(the report says so). Generated sets have the floor's size, so sigma and
delta compare sets of equal N. The PCA basis is fitted on the training set and
cached beside the decoded data.

mrigen.metrics (scipy.stats, scikit-learn: ~1.5 s of imports) is imported
where it is used, so that training, which imports this module, pays for it
only when it evaluates.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mrigen import class_evaluation, data, holdout, images, models, sampling
from mrigen import state as state_lib
from mrigen.errors import UserError, writing

if TYPE_CHECKING:
    from mrigen.metrics import pca


def pca_basis(dataset: data.Dataset, cache_dir: str) -> pca.PCABasis:
    """The 16-direction PCA basis of `dataset`, cached as pca16_<key>.npz."""
    from mrigen.metrics import pca

    path = os.path.join(os.path.expanduser(cache_dir), f"pca16_{dataset.cache_key}.npz") if cache_dir else ""
    if path and os.path.exists(path):
        try:
            return pca.load_basis(path)
        except (OSError, ValueError, KeyError):
            logging.warning("%s: unreadable PCA basis, fitting it again", path)
    basis = pca.fit_pca_basis(data.to_float_host(dataset.images))
    if path:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pca.save_basis(basis, path)
        except OSError as e:
            logging.warning("could not cache the PCA basis in %s: %s", path, e)
    return basis


def generate_images(sampler: sampling.Sampler, count: int, seed: int, batch_size: int = 64,
                    label: Optional[int] = None) -> np.ndarray:
    """[count, R, R, 1] float32 in [-1, 1] from the sampler, in fixed-size batches (all of class `label` if given).

    Each class has its own stream of latents, other than the unconditional one's.
    """
    key, labels = jax.random.PRNGKey(seed), ()
    if label is not None:
        key = jax.random.fold_in(jax.random.fold_in(key, 0x7FFFFFFF), label)
        labels = (jnp.full(batch_size, label, jnp.int32),)
    batches = [np.asarray(sampler(jax.random.fold_in(key, i), batch_size, *labels))
               for i in range(0, count, batch_size)]
    return np.concatenate(batches)[:count]


def generate_for_evaluation(sampler: sampling.Sampler, split: holdout.Split, count: int,
                            seed: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`count` generated images to evaluate against `split`, and their labels (None for an unconditional run).

    A conditional run makes each class in the held-out set's share (class_evaluation.class_counts), class by class.
    """
    floor_labels = _class_labels(sampler, split)
    if floor_labels is None:
        return generate_images(sampler, count, seed), None
    return generate_by_class(sampler, class_evaluation.class_counts(floor_labels, len(sampler.class_names), count),
                             seed)


def generate_by_class(sampler: sampling.Sampler, counts, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """counts[c] images of each class c, class by class, and their [N] int32 labels."""
    parts = [generate_images(sampler, int(n), seed, label=c) for c, n in enumerate(counts) if n]
    return np.concatenate(parts), np.repeat(np.arange(len(counts), dtype=np.int32), counts)


def _class_labels(sampler: sampling.Sampler, split: holdout.Split) -> Optional[np.ndarray]:
    """The held-out labels when a conditional run is evaluated against labeled data of its classes, else None."""
    if not sampler.class_names:
        return None
    class_evaluation.check_same_classes(sampler.class_names, split.training, "evaluated")
    return split.evaluation_labels()[1]


def evaluate(split: holdout.Split, generated: np.ndarray, out_dir: str, cache_dir: str,
             seed: int = 0, label: str = "generated", generated_labels: Optional[np.ndarray] = None) -> dict:
    """Every metric for `generated` ([N, R, R, 1] in [-1, 1]) against `split`'s data; writes the report.

    out_dir receives eval.json, report.md, real_vs_generated.png and
    closest_pairs.png (each generated image beside its nearest training image).
    generated_labels ([N] int32, a conditional run's): each class is also
    evaluated on its own (class_evaluation), under results["classes"].
    """
    from mrigen import metrics
    from mrigen.metrics import memorization, report

    dataset = split.training
    if generated.shape[1:] != dataset.images.shape[1:]:
        raise UserError(f"{label}: images are {generated.shape[1]}x{generated.shape[2]}, the training data "
                        f"{dataset.resolution}x{dataset.resolution}")
    reference_u8, floor_u8, in_sample = split.evaluation_sets()
    reference, floor = data.to_float_host(reference_u8), data.to_float_host(floor_u8)
    basis = pca_basis(dataset, cache_dir)
    results = metrics.evaluate_sets(reference, generated, floor, basis=basis, rng_seed=seed,
                                    floor_in_sample=in_sample)
    floor_source = ("the other half of the training data (in-sample)" if in_sample
                    else f"held out from training: {split.note}")
    results["source"] = {"training data": dataset.source, "generated": label, "held-out real": floor_source,
                         "split": f"{len(reference)} reference / {len(floor)} held-out real images"}
    with writing(out_dir, "the evaluation report"):
        if generated_labels is not None:
            reference_labels, floor_labels = split.evaluation_labels()
            sets = {"reference": (reference, reference_labels), "floor": (floor, floor_labels),
                    "generated": (generated, generated_labels)}
            results["classes"] = class_evaluation.evaluate_classes(sets, dataset.class_names, basis, seed,
                                                                   in_sample, out_dir)
        report.write_report(results, out_dir)
        report.save_side_by_side_png(images.representative(reference, 8, seed),
                                     images.representative(generated, 8, seed),
                                     os.path.join(out_dir, "real_vs_generated.png"))
        pairs = {"closest_pairs": results["sets"]["generated"]["closest_pairs"]}
        memorization.save_closest_pairs_png(generated, reference, pairs, os.path.join(out_dir, "closest_pairs.png"))
    return results


def training_metrics(generated: np.ndarray, basis: pca.PCABasis, seed: int = 0,
                     reference_profiles: Optional[np.ndarray] = None) -> dict:
    """The cheap subset logged during training: rho, sigma and delta (with N), MS-SSIM, spectrum distance.

    generated: [N, R, R, 1] float32 in [-1, 1]. reference_profiles: the
    training images' radial log power spectra (spectrum.radial_profiles); the
    spectrum distances (all rings, upper half) are logged when given. Keys are
    prefixed `eval_`.
    """
    from mrigen import metrics
    from mrigen.metrics import pca, spectrum

    coords, sq_norm = pca.project(generated, basis)
    covariance = pca.covariance_spectrum(generated, seed=seed)
    results = {"eval_rho": float(pca.realism_from_projection(coords, sq_norm).mean()),
               "eval_sigma": float(covariance.sigma), "eval_delta": int(covariance.count_above()),
               "eval_n": int(covariance.n),
               "eval_ms_ssim": float(metrics.msssim.ms_ssim_diversity(generated, 200, seed))}
    if reference_profiles is not None:
        distance = spectrum.profile_distance(spectrum.radial_profiles(generated), reference_profiles,
                                             generated.shape[1])
        results.update(eval_spectrum=distance["distance"], eval_spectrum_high=distance["distance_high"])
    return results


class TrainingEvaluator:
    """Every `eval_every_steps` steps, `training_metrics` of images from fixed latents.

    The PCA basis is that of the whole training set (cached beside the data);
    results join the next stats.jsonl record as eval_* fields. Off when
    eval_every_steps is 0.
    """

    def __init__(self, config, dataset: data.Dataset, arch: models.base.Architecture):
        self.every = config.get("eval_every_steps", 0)
        self.arch = arch
        self._results = {}
        if self.every:
            from mrigen.metrics import spectrum

            self.basis = pca_basis(dataset, config.data.cache_dir)
            self.reference_profiles = spectrum.radial_profiles(
                data.to_float_host(images.representative(dataset.images, 512, config.seed)))
            count = config.get("eval_num_images", 64)
            self.z = arch.sample_latent(jax.random.PRNGKey(config.seed + 2), count)

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def run(self, state: dict) -> None:
        stage = self.arch.stages[int(state["stage"])]
        fake = np.asarray(sampling.generate(self.arch.generator(stage), state_lib.generator_variables(state),
                                            self.z, state["alpha"]))
        if fake.shape[1] != self.basis.image_shape[0]:
            return  # ProGAN below full size: the PCA space exists at full resolution only.
        self._results = training_metrics(fake, self.basis, reference_profiles=self.reference_profiles)

    def take_results(self) -> dict:
        results, self._results = self._results, {}
        return results


def evaluate_workdir(config, workdir: str, out_dir: Optional[str], count: int, seed: int,
                     ema: bool = True) -> tuple[dict, str]:
    """Evaluates the latest checkpoint in `workdir` against its training data (its EMA generator if `ema`)."""
    sampler = sampling.load_sampler(workdir, ema=ema)
    split = _training_data(config, sampler.resolution)
    count = count or len(split.evaluation_sets()[1])
    out_dir = out_dir or os.path.join(workdir, f"eval_step{sampler.step}")
    generated, labels = generate_for_evaluation(sampler, split, count, seed)
    label = f"{config.model} + {config.loss}, step {sampler.step}"
    return evaluate(split, generated, out_dir, config.data.cache_dir, seed, label, labels), out_dir


def evaluate_folder(config, images_path: str, out_dir: str, seed: int) -> tuple[dict, str]:
    """Evaluates a folder of images made by any tool against the config's training data.

    With labeled training data and a folder whose sub-folders are class names (--mode=sample --per_class
    writes such a folder), each class is evaluated too.
    """
    split = _training_data(config, config.data.resolution)
    by_class = _has_class_folders(images_path, split.training.class_names)
    try:
        folder = data.load_dataset(images_path, config.data.resolution, include_segmentation=True,
                                   labels="folders" if by_class else "")
    except UserError as e:  # data.py names data.path (or data.labels), the field it reads; here it is --eval_images
        raise UserError("--eval_images: " + re.sub(r"^(config\.)?data\.(path|labels): ", "", str(e))) from None
    folder = holdout.with_classes_of(split.training, folder, f"--eval_images: {images_path}")
    generated = data.to_float_host(folder.images)
    return evaluate(split, generated, out_dir, config.data.cache_dir, seed, images_path, folder.labels), out_dir


def _has_class_folders(path: str, class_names: tuple) -> bool:
    """Whether `path` is a folder whose sub-folders are all among `class_names` (and there is one at least)."""
    if not class_names or not os.path.isdir(path):
        return False
    folders = [name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))]
    return bool(folders) and set(folders) <= set(class_names)


def _training_data(config, resolution: int) -> holdout.Split:
    """The config's data at `resolution` (a ProGAN checkpoint may be short of the config's)."""
    data_config = config.data.copy_and_resolve_references()
    data_config.resolution = resolution
    return holdout.load(data_config)

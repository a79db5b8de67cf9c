"""`--mode=experiment`: every selected architecture x loss, trained, evaluated, one report.

Layout of an experiment folder DIR:

    DIR/<model>_<loss>/      each run's workdir (checkpoints, stats.jsonl, TensorBoard events,
                             loss_curves.png, progress.png/gif, eval_step<N>/ with its own report)
    DIR/<model>_<loss>/experiment_run.json   written once the run is trained and evaluated
    DIR/grids/<model>_<loss>.png             each run's sample grid (fixed latents)
    DIR/grids.png            all grids in one picture: models down, losses across
    DIR/report.md            Table 3's columns for the real data and every run, with flags
    DIR/experiment.json      the same numbers, the experiment's config and each run's record

Resuming: a run with experiment_run.json is finished and skipped; any other
run trains (resuming from its checkpoint), is evaluated, then gets that file.
A run that diverges is recorded as diverged and the experiment goes on.

Flags: "diverged" (a loss became NaN/Inf: training stopped there, the run is
not evaluated); "collapsed" (see `collapse_reasons`); "stopped at R px"
(ProGAN ran out of wall-clock budget before its last stage; its images are
upsampled to the data's resolution for the metrics).

This module plans and runs the experiment and collects each run's record
(`summarize`); mrigen/experiment_report.py writes report.md, experiment.json
and grids.png from those records.
"""

import contextlib
import dataclasses
import json
import logging
import os
from typing import Optional

import ml_collections
import numpy as np

from mrigen import (config_base, data, distributed, evaluation, experiment_report, holdout, images, losses, models,
                    plots, run_config, sampling, tensorboard, train, utility, workdir_lock)
from mrigen.errors import UserError, WriteError, writing
from mrigen.metrics.report import to_json
from mrigen.models.base import upsample_nearest

RUN_RECORD = "experiment_run.json"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Fields a finished run's record may differ in without meaning another experiment.
IGNORED_DIFFERENCES = frozenset({"data.cache_dir"})


@dataclasses.dataclass(frozen=True)
class Run:
    """One architecture x loss of an experiment.

    config: the run's complete training config (base config, shared fields, budget).
    planned_images: images its schedule shows D (the budget, rounded to whole steps).
    """

    model: str
    loss: str
    config: ml_collections.ConfigDict
    workdir: str
    planned_images: int

    @property
    def name(self) -> str:
        return f"{self.model}_{self.loss}"

    @property
    def label(self) -> str:
        return f"{self.model} + {self.loss}"


# ---------------------------------------------------------------- the plan


def names(value, field: str, known) -> list[str]:
    """A list field as names: ('dcgan', 'progan') or 'dcgan,progan'; unknown names are refused."""
    items = [value] if isinstance(value, str) else list(value)
    result = [name.strip() for item in items for name in str(item).split(",") if name.strip()]
    if not result:
        raise UserError(f"config.{field}: empty; name at least one of {sorted(known)}")
    for name in result:
        if name not in known:
            raise UserError(f"config.{field}: unknown name {name!r}; choose from {sorted(known)}")
    return list(dict.fromkeys(result))


def resolve_config_path(spec: str) -> tuple[str, Optional[str]]:
    """'configs/dcgan.py:quick' -> (an existing path, 'quick'); relative paths from cwd, then the repository."""
    path, _, variant = spec.partition(":")
    if not os.path.isabs(path) and not os.path.isfile(path):
        path = os.path.join(REPO_ROOT, path)
    return path, variant or None


def base_config(config, model: str) -> ml_collections.ConfigDict:
    """The model's config file (config.base_configs), the paper's recipe if config.paper_recipe, then shared."""
    if model not in config.base_configs:
        raise UserError(f"config.base_configs: no config file for model {model!r}")
    spec = config.base_configs[model]
    try:
        base = run_config.from_file(*resolve_config_path(spec))
    except ValueError as e:
        raise UserError(f"config.base_configs.{model}: {e}") from None
    if base.model != model:
        raise UserError(f"config.base_configs.{model}: {spec} is a config of model {base.model!r}")
    if config.paper_recipe:
        config_base.paper_recipe(base)
    for key, value in run_config.flatten(config.shared).items():
        *parents, leaf = key.split(".")
        node = base
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise UserError(f"config.shared.{key}: {spec} has no field {key}")
        try:
            node[leaf] = value
        except TypeError as e:
            raise UserError(f"config.shared.{key}: {e}") from None
    return base


def apply_budget(config, budget_images: int, num_images: int) -> None:
    """Sets the run's length so that it shows D about `budget_images` images.

    Single-stage models: train.epochs = budget / N. ProGAN: the budget is
    split evenly over its stages (train.epochs_per_stage).
    """
    if budget_images <= 0:
        return
    epochs = budget_images / num_images
    if config.model == "progan":
        config.train.epochs_per_stage = epochs / len(models.build(config).stages)
    else:
        config.train.epochs = epochs


def plan(config, workdir: str, num_images: int) -> list[Run]:
    """Every run of the experiment, each config built and checked; trains and writes nothing."""
    if config.budget_images < 0 or config.budget_seconds < 0:
        raise UserError("config.budget_images, config.budget_seconds: must not be negative")
    runs = []
    for model, loss in selected_pairs(config):
        run = base_config(config, model)
        run.loss = loss
        trained = num_images * (2 if run.data.mirror else 1)  # data.mirror: each slice and its mirror image
        apply_budget(run, config.budget_images, trained)
        run_config.validate(run)
        arch = models.build(run)
        phases = train.schedule(arch, trained, run.train.batch_size)
        runs.append(Run(model, loss, run, os.path.join(workdir, f"{model}_{loss}"),
                        phases[-1].end * run.train.batch_size))
    return runs


def selected_pairs(config) -> list[tuple[str, str]]:
    """(model, loss) of each run: config.runs if set ('progan_wgan_gp', ...), else models x losses."""
    if config.get("runs"):
        known = [f"{m}_{l}" for m in models.ARCHITECTURES for l in losses.LOSSES]
        return [tuple(name.split("_", 1)) for name in names(config.runs, "runs", known)]
    return [(model, loss) for model in names(config.models, "models", models.ARCHITECTURES)
            for loss in names(config.losses, "losses", losses.LOSSES)]


def load_data(config) -> holdout.Split:
    """The experiment's data (config.shared.data), with the real images its runs never train on."""
    return holdout.load(config.shared.data)


# ---------------------------------------------------------------- running


def run_experiment(config, workdir: str) -> dict:
    """Trains and evaluates every unfinished run, then writes the report. Returns experiment.json's dict."""
    split = load_data(config)
    dataset = split.training
    runs = plan(config, workdir, len(dataset))
    records = {}
    for run in runs:
        records[run.name] = read_record(run, config)
    # Each run's training also takes the lock of its own folder.
    with workdir_lock.held(workdir, enabled=distributed.is_main_process()):
        for i, run in enumerate(runs):
            if records[run.name] is not None:
                logging.info("Run %d/%d %s: finished earlier (%s)", i + 1, len(runs), run.label,
                             records[run.name]["status"])
                continue
            logging.info("Run %d/%d %s: training in %s", i + 1, len(runs), run.label, run.workdir)
            records[run.name] = train_and_evaluate(run, config, split)
            if distributed.is_main_process():
                with _resume_advice_on_write_errors():
                    write_record(run, records[run.name])
            distributed.wait_for_all(f"{run.name} evaluated")  # While process 0 evaluates, the others wait.
        results = summarize(config, runs, records, dataset)
        if distributed.is_main_process():
            with _resume_advice_on_write_errors():
                experiment_report.write_outputs(results, workdir, dataset, config.eval.grid_images)
    return results


@contextlib.contextmanager
def _resume_advice_on_write_errors():
    """A failed write outside training (whose errors name the checkpoint to resume from), with what to do."""
    try:
        yield
    except WriteError as e:
        fix = "free space" if e.disk_full else "fix that"
        raise WriteError(f"{e}; {fix} and run the same command to resume", e.errno) from None


def read_record(run: Run, config) -> Optional[dict]:
    """A finished run's record, or None; a record of another config is refused."""
    path = os.path.join(run.workdir, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        recorded = run_config.flatten(record["config"])
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: unreadable ({e}); delete it to train and evaluate {run.name} again") from None
    planned = run_config.flatten(json.loads(run_config.to_json(run.config)))
    recorded["budget_seconds"], planned["budget_seconds"] = record.get("budget_seconds"), config.budget_seconds
    different = sorted(k for k in set(recorded) | set(planned)
                       if k not in IGNORED_DIFFERENCES and recorded.get(k) != planned.get(k))
    if different:
        key = different[0]
        raise UserError(f"{path}: {run.name} finished with {key} = {recorded.get(key)!r}, this experiment "
                        f"asks for {planned.get(key)!r}; use a new --workdir (or delete {run.workdir})")
    return record


def write_record(run: Run, record: dict) -> None:
    path = os.path.join(run.workdir, RUN_RECORD)
    with writing(path):
        os.makedirs(run.workdir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(to_json(record), f, indent=2)
        os.replace(path + ".tmp", path)


def train_and_evaluate(run: Run, config, split: holdout.Split) -> dict:
    """Trains `run` (resuming), evaluates it, and returns its record (status done or diverged)."""
    record = {"name": run.name, "model": run.model, "loss": run.loss,
              "config": json.loads(run_config.to_json(run.config)),
              "budget_seconds": config.budget_seconds, "planned_images": run.planned_images}
    try:
        _train(run, config.budget_seconds)
    except train.DivergedError as e:
        logging.warning("%s diverged: %s", run.label, e)
        record.update(status="diverged", error=str(e), **timing(run.workdir))
        return record
    record.update(status="done", **timing(run.workdir))
    with _resume_advice_on_write_errors():
        record.update(evaluate_run(run, config, split))
    return record


def _train(run: Run, budget_seconds: float) -> None:
    if not budget_seconds:
        train.train(run.config, run.workdir)
        return
    remaining = budget_seconds - timing(run.workdir)["train_seconds"]
    if remaining > 0:
        train.train(run.config, run.workdir, time_budget_s=remaining)


def timing(workdir: str) -> dict:
    """Images shown, training seconds and steady images/s, from the run's stats.jsonl.

    Each process that trained the run (first start and every resume) logged
    its own elapsed time from 0: the run's time is the sum of each one's last
    (the time between a process's last log and its end is not counted).
    images/s is the median of the logged rates, leaving out each process's
    first record (it includes compiling).
    """
    records = plots.read_stats(workdir) if os.path.isfile(os.path.join(workdir, plots.STATS_FILE)) else []
    seconds, rates, previous = 0.0, [], None
    for record in records:
        if previous is not None and _same_process(previous, record):
            rates.append(record.get("img_per_sec", 0.0))
        elif previous is not None:
            seconds += previous.get("elapsed_sec", 0.0)
        previous = record
    seconds += previous.get("elapsed_sec", 0.0) if previous else 0.0
    shown = records[-1]["images_seen"] if records else 0
    rate = float(np.median(rates)) if rates else (shown / seconds if seconds else 0.0)
    return {"images_seen": shown, "steps": records[-1]["step"] if records else 0,
            "train_seconds": seconds, "img_per_sec": rate}


def _same_process(a: dict, b: dict) -> bool:
    """Whether two consecutive stats records were logged by one training process."""
    if "time" in a and "time" in b:  # Unix time minus elapsed time is the process's start.
        return abs((b["time"] - b["elapsed_sec"]) - (a["time"] - a["elapsed_sec"])) < 1.0
    return b.get("elapsed_sec", 0.0) >= a.get("elapsed_sec", 0.0)


def evaluate_run(run: Run, config, split: holdout.Split) -> dict:
    """The metrics of the run's latest checkpoint against the data; writes its grid and eval report.

    Several processes: each generates the images (a computation over every process's devices); process 0
    alone computes the metrics, writes and returns them (the others return the checkpoint's step).
    """
    sampler = sampling.load_sampler(run.workdir)
    dataset = split.training
    count = config.eval.num_images or len(split.evaluation_sets()[1])
    generated, labels = evaluation.generate_for_evaluation(sampler, split, count, config.eval.seed)
    grid = evaluation.generate_images(sampler, config.eval.grid_images, config.eval.seed)  # classes in turn
    if not distributed.is_main_process():
        return {"checkpoint_step": sampler.step, "resolution_reached": sampler.resolution}
    stopped_at = None
    if sampler.resolution != dataset.resolution:  # ProGAN stopped by the clock before its last stage.
        stopped_at = sampler.resolution
        generated, grid = (np.asarray(upsample_nearest(x, dataset.resolution // sampler.resolution))
                           for x in (generated, grid))
    grid_path = os.path.join(os.path.dirname(run.workdir), "grids", f"{run.name}.png")
    images.save_grid(grid, grid_path)
    out = os.path.join(run.workdir, f"eval_step{sampler.step}")
    results = evaluation.evaluate(split, generated, out, config.shared.data.cache_dir, config.eval.seed,
                                  f"{run.label}, step {sampler.step}", labels)
    tensorboard.write_eval(run.workdir, sampler.step, results)
    return {"checkpoint_step": sampler.step, "resolution_reached": sampler.resolution,
            "stopped_at_resolution": stopped_at, "eval_dir": out, "grid": grid_path, "metrics": results["sets"],
            "utility": utility.for_experiment_run(sampler, split, run.workdir, config.eval)}


# ---------------------------------------------------------------- flags and the results


def collapse_reasons(generated: dict, real: dict, rule) -> list[str]:
    """Why a generated set counts as collapsed (empty if it does not).

    generated, real: evaluation rows (held-out real for `real`). Collapsed:
    sigma below rule.sigma_fraction of the real sigma at equal N, or
    diversity 1 - MS-SSIM below rule.diversity_fraction of the real set's.
    Both catch a generator that makes (nearly) one image whatever z is.
    """
    reasons = []
    n = generated.get("n")
    real_sigma = real.get("sigma") if real.get("n") == n else real.get("sigma_common")
    if n != real.get("n") and real.get("n_common") != n:
        real_sigma = None  # No real sigma at the generated set's N.
    if real_sigma and generated.get("sigma") is not None and generated["sigma"] < rule.sigma_fraction * real_sigma:
        reasons.append(f"sigma {generated['sigma']:.3g} < {rule.sigma_fraction} x real {real_sigma:.3g}")
    if generated.get("ms_ssim") is not None and real.get("ms_ssim") is not None:
        # MS-SSIM of identical images can round to just above 1.
        diversity, real_diversity = max(1.0 - generated["ms_ssim"], 0.0), 1.0 - real["ms_ssim"]
        if diversity < rule.diversity_fraction * real_diversity:
            reasons.append(f"1 - MS-SSIM {diversity:.3f} < {rule.diversity_fraction} x real {real_diversity:.3f}")
    return reasons


def summarize(config, runs: list[Run], records: dict, dataset: data.Dataset) -> dict:
    """experiment.json's content: the real rows, each run's record with its flags."""
    evaluated = [records[r.name] for r in runs if records[r.name].get("metrics")]
    real = {}
    if evaluated:
        sets = evaluated[0]["metrics"]
        real = {"training data": sets["training data"], "held-out real": sets.get("held-out real", {})}
    rows = []
    for run in runs:
        record = dict(records[run.name])
        flags = []
        if record["status"] == "diverged":
            flags.append("diverged")
        elif record.get("metrics"):
            reasons = collapse_reasons(record["metrics"]["generated"], real.get("held-out real", {}),
                                       config.collapse)
            if reasons:
                flags.append("collapsed")
                record["collapse_reasons"] = reasons
            if record.get("stopped_at_resolution"):
                flags.append(f"stopped at {record['stopped_at_resolution']} px")
        record["flags"] = flags
        rows.append(record)
    return {"config": json.loads(run_config.to_json(config)),
            "data": {"source": dataset.source, "images": len(dataset), "resolution": dataset.resolution},
            "real": real, "runs": rows}


# ---------------------------------------------------------------- --dry_run


def describe(config) -> str:
    """The plan as text: data found, then each run's length and parameter counts."""
    from mrigen import dryrun

    dataset = load_data(config).training
    runs = plan(config, "", len(dataset))
    lines = [run_config.to_json(config), "", dryrun.describe_data(dataset), "",
             f"{len(runs)} runs:"]
    for run in runs:
        counts = dryrun.parameter_counts(run.config)
        lines.append(f"  {run.name:18s} {run.planned_images:>9,} images in "
                     f"{run.planned_images // run.config.train.batch_size:,} steps of "
                     f"{run.config.train.batch_size}; G {counts['generator']:,} parameters, "
                     f"D {counts['discriminator']:,}")
    if config.budget_seconds:
        lines.append(f"each capped at {config.budget_seconds:g} s of training")
    return "\n".join(lines)

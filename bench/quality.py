"""Which improvements make better images: the paper's recipe and the recipe plus each one, at one budget.

Each variant trains the base config (default: DCGAN + DRAGAN at 64 px, the
quick preset) for the same number of images on the same data, with a fifth
of it held out by subject, and is evaluated against those held-out images
with the whole evaluation suite. The variants differ from the paper's recipe
in the fields below only (VARIANTS); "preset" is the base config as it is.
Writes into --workdir:

    quality.md     one table: each metric with its interval, and the verdict
    quality.json   the same numbers
    quality.png    every variant's sample grid, beside held-out real slices
    <variant>/     each variant's experiment (its run's workdir, report, grid)

Run (the README's table, 64 px, ~45 min on 2 cores):
  .venv/bin/python bench/quality.py --workdir workdirs/quality
  .venv/bin/python bench/quality.py --workdir DIR --data_path /data/keras_png_slices_data --budget_images 50000
  .venv/bin/python bench/quality.py --workdir DIR --variants paper,ema --budget_images 2048   # a subset
  .venv/bin/python bench/quality.py --workdir DIR --variants paper,preset   # the :quick preset against the paper
Run the same command again to continue: finished variants are skipped.
"""

import argparse
import json
import os
import sys
import time

import ml_collections

from mrigen import experiment, plots, run_config
from mrigen.metrics.comparison import FAMILY
from mrigen.metrics.report import to_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

# Each variant: the paper's recipe (configs/experiment.py's paper_recipe: every improvement off, whatever
# the base config's preset switches on) plus these fields; "preset" is the base config as it is.
EMA = {"train.ema_kimg": 0.5, "train.ema_rampup": 0.1}
DIFFAUGMENT = {"train.augment": "fixed", "train.augment_p": 0.25}
ADA = {"train.augment": "ada", "train.augment_p": 0.0, "train.ada_target": 0.6, "train.ada_kimg": 10.0}
R1 = {"loss": "r1", "train.r1_gamma": 0.1}
MIRROR = {"data.mirror": True}
RESIZE = {"arch.upsample": "resize"}  # DCGAN only: G upsamples by nearest x2 then a convolution.
PRESET = "preset"
VARIANTS = {
    "paper": {},
    "ema": EMA,
    "diffaugment": DIFFAUGMENT,
    "ada": ADA,
    "r1": R1,
    "mirror": MIRROR,
    "resize": RESIZE,
    "all": {**EMA, **ADA, **R1, **MIRROR},
    PRESET: {},
}
SHOWN = ("spectrum", "spectrum_high", "kid", "feature_fd", "precision", "recall", "coverage",
         "duplicate_share", "swd", "pca_fd")


def experiment_config(args, variant: str):
    """configs/experiment.py with one run: the base config, the paper's recipe plus `variant`'s fields."""
    config = run_config.from_file(os.path.join(REPO_ROOT, "configs", "experiment.py"))
    base = run_config.from_file(*experiment.resolve_config_path(args.base))
    config.paper_recipe = variant != PRESET
    fields = dict(VARIANTS[variant])
    loss = fields.pop("loss", base.loss)
    config.runs = (f"{base.model}_{loss}",)
    config.base_configs[base.model] = args.base
    config.budget_images = args.budget_images
    shared = {"seed": args.seed, "data": {"path": args.data_path, "resolution": base.data.resolution,
                                          "cache_dir": args.cache_dir, "holdout": args.holdout}}
    for key, value in fields.items():
        section, leaf = key.split(".")
        shared.setdefault(section, {})[leaf] = value
    config.shared = ml_collections.ConfigDict(shared)
    config.eval.seed = args.seed
    config.eval.grid_images = 16
    return config


def run_variant(args, variant: str) -> dict:
    """The variant's experiment (trained and evaluated, or read back once done): its one run's record."""
    config = experiment_config(args, variant)
    results = experiment.run_experiment(config, os.path.join(args.workdir, variant))
    record = results["runs"][0]
    return {"variant": variant, "fields": VARIANTS[variant], "record": record,
            "real": results["real"]}


def interval(entry) -> str:
    if not entry:
        return "-"
    value, low, high = entry["value"], entry["low"], entry["high"]
    digits = 4 if abs(value) < 0.01 else 3
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def render_table(rows: list[dict], floor: dict) -> str:
    """quality.md's table: a row for the held-out floor, then one per variant."""
    header = ["variant", "images", "train time"] + list(SHOWN) + ["distinguishable by"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| held-out real (floor) | - | - | " + " | ".join(
        interval(floor.get("texture", {}).get(m)) for m in SHOWN) + " | - |")
    for row in rows:
        record = row["record"]
        generated = record.get("metrics", {}).get("generated", {})
        flags = record.get("flags", [])
        verdict = generated.get("distinguishable_by")
        told = "-" if verdict is None else (", ".join(verdict) if verdict else "none")
        name = row["variant"] + (f" (**{', '.join(flags)}**)" if flags else "")
        minutes = record.get("train_seconds", 0) / 60
        lines.append(f"| {name} | {record.get('images_seen', 0):,} | {minutes:.1f} min | " + " | ".join(
            interval(generated.get("texture", {}).get(m)) for m in SHOWN) + f" | {told} |")
    return "\n".join(lines)


def render_markdown(args, rows: list[dict], floor: dict, seconds: float) -> str:
    described = "; ".join(f"**{row['variant']}**: " + (", ".join(
        f"{k} = {v!r}" for k, v in VARIANTS[row["variant"]].items()) or (
        f"{args.base} as it is" if row["variant"] == PRESET else "the paper's recipe")) for row in rows)
    metric_names = "; ".join(f"{m}: {FAMILY[m].description} ({FAMILY[m].worse} is worse)" for m in SHOWN)
    return "\n".join([
        "# Quality benchmark", "",
        f"Base config {args.base}; data {args.data_path or 'the embedded MNI152 template'}, "
        f"holdout {args.holdout}; {args.budget_images:,} images shown per variant; seed {args.seed}. "
        f"Wall time of the whole benchmark: {seconds / 60:.1f} min.", "",
        f"Variants (the paper's recipe plus): {described}.", "",
        render_table(rows, floor), "",
        "Each cell: value [95% interval] of the generated set against the training data; the first row is the "
        "held-out real images' own (the floor). *Distinguishable by*: the metrics by which the variant is worse "
        "than the floor at family-wise level 0.05 (docs/metrics.md); *none* means no metric tells it from real "
        "data.", "",
        f"Metrics: {metric_names}.", "",
        "![samples of every variant](quality.png)", "",
    ])


def save_picture(rows: list[dict], workdir: str, reals_path: str, path: str) -> None:
    """Held-out real slices, then each variant's grid, in one row of panels."""
    plt = plots.pyplot()
    panels = [("training data", reals_path, [])] + [
        (row["variant"], row["record"].get("grid"), row["record"].get("flags", [])) for row in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.8), squeeze=False)
    for ax, (title, grid_path, flags) in zip(axes[0], panels):
        ax.axis("off")
        if grid_path and os.path.isfile(grid_path):
            ax.imshow(plots.read_gray(grid_path), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title + (f"\n{', '.join(flags)}" if flags else ""), fontsize=9,
                     color="red" if flags else "black")
    fig.tight_layout()
    plots.save_figure(fig, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="workdirs/quality")
    parser.add_argument("--base", default="configs/dcgan.py:quick", help="config file[:variant] every variant starts from")
    parser.add_argument("--data_path", default="", help="data.path ('' = the embedded MNI152 template)")
    parser.add_argument("--holdout", default="0.2", help="data.holdout: a fraction (by subject) or a folder")
    parser.add_argument("--budget_images", type=int, default=8192, help="real images shown to D per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_dir", default="~/.cache/mrigen")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.budget_images < 1:
        parser.error("--budget_images: must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    rows = [run_variant(args, variant) for variant in args.variants]
    floor = rows[0]["real"].get("held-out real", {})
    reals_path = os.path.join(args.workdir, args.variants[0], "grids", "training_data.png")
    os.makedirs(args.workdir, exist_ok=True)
    save_picture(rows, args.workdir, reals_path, os.path.join(args.workdir, "quality.png"))
    with open(os.path.join(args.workdir, "quality.json"), "w") as f:
        json.dump(to_json({"args": vars(args), "floor": floor, "variants": rows}), f, indent=2)
    text = render_markdown(args, rows, floor, time.time() - start)
    with open(os.path.join(args.workdir, "quality.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

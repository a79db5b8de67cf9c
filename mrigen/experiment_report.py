"""An experiment's report, written from experiment.json's content (`experiment.summarize`).

    DIR/report.md                    Table 3's columns for the real data and every run, with flags
    DIR/experiment.json              the same numbers, the experiment's config and each run's record
    DIR/grids/training_data.png      training slices, for comparison
    DIR/grids.png                    every run's sample grid in one picture: models down, losses across

The results dict is the only input besides the data: the report of an
experiment can be written again from its experiment.json.
"""

import json
import os
from typing import Optional

import numpy as np

from mrigen import data, images, plots
from mrigen.errors import writing
from mrigen.metrics.report import to_json


def write_outputs(results: dict, workdir: str, dataset: data.Dataset, grid_images: int) -> None:
    """report.md, experiment.json, grids/training_data.png and the combined grids.png into `workdir`."""
    for name, text in (("experiment.json", json.dumps(to_json(results), indent=2)),
                       ("report.md", render_markdown(results))):
        path = os.path.join(workdir, name)
        with writing(path):
            os.makedirs(workdir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
    # Slices spread over the whole set: the data's slices go from the base of the brain to the top.
    spread = np.linspace(0, len(dataset) - 1, min(grid_images, len(dataset))).astype(int)
    reals_path = os.path.join(workdir, "grids", "training_data.png")
    images.save_grid(data.to_float(dataset.images[spread]), reals_path)
    save_combined_grid(results, reals_path, os.path.join(workdir, "grids.png"))


# ---------------------------------------------------------------- report.md


def render_markdown(results: dict) -> str:
    """report.md: one table in the layout of the paper's Table 3, plus budget, data and flags."""
    config, data_info = results["config"], results["data"]
    budget = []
    if config["budget_images"]:
        budget.append(f"{config['budget_images']:,} images shown per run "
                      f"({config['budget_images'] / data_info['images']:.1f} epochs)")
    else:
        budget.append("each model's own length (its base config's epochs)")
    if config["budget_seconds"]:
        budget.append(f"at most {config['budget_seconds']:g} s of training per run")
    held_out = results["real"].get("held-out real", {})
    if config["shared"]["data"].get("holdout"):
        sets = (f"the training data; the held-out real images ({held_out.get('n', '-')}, data.holdout = "
                f"{config['shared']['data']['holdout']!r}, never trained on) are the real-vs-real floor")
    else:
        sets = (f"the reference half of the data; the held-out real half ({held_out.get('n', '-')} images, "
                f"also trained on) is the real-vs-real floor")
    lines = [
        "# Experiment", "",
        f"Data: {data_info['images']} slices at {data_info['resolution']}x{data_info['resolution']} from "
        f"{data_info['source']}. Budget: {'; '.join(budget)}. Each run is evaluated on "
        f"{_first_n(results)} generated images against {sets}.", "",
        "| run | images shown | train time | img/s | rho | sigma (N) | delta | SWD | MS-SSIM | PCA-FD | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("training data", "held-out real"):
        row = results["real"].get(name)
        if row:
            lines.append(_table_row(name, None, row))
    for record in results["runs"]:
        row = record.get("metrics", {}).get("generated", {})
        lines.append(_table_row(_label(record), record, row))
    rule = config["collapse"]
    lines += [
        "",
        "rho, sigma, delta: the paper's realism, total variation and number of significant eigenvalues "
        "(sigma grows with N: compare rows of equal N). SWD (x1e3, average over levels) and PCA-FD: "
        "distance to the reference half, lower is closer. MS-SSIM: mean over random pairs within the "
        "set, lower is more diverse. Train time includes compiling; img/s is the median logged rate.",
        "",
        f"Flags: **diverged**: a loss or gradient became NaN/Inf, training stopped there and the run is not "
        f"evaluated. **collapsed**: sigma below {rule['sigma_fraction']} x the held-out real sigma at "
        f"equal N, or 1 - MS-SSIM below {rule['diversity_fraction']} x the held-out real set's. "
        f"**stopped at R px**: the wall-clock budget ended ProGAN's growth early; its images were "
        f"upsampled for the metrics.",
    ] + _utility_lines(results["runs"]) + [
        "", "![sample grids](grids.png)", "",
        "Per run: " + ", ".join(f"[{r['name']}]({r['name']}/)" for r in results["runs"])
        + " (each holds loss_curves.png, progress.png, TensorBoard events and its eval_step*/report.md).",
    ]
    return "\n".join(lines) + "\n"


def _utility_lines(records: list) -> list:
    """The utility test of each conditional run (mrigen.utility): balanced accuracy on held-out real images."""
    tested = [r for r in records if r.get("utility")]
    if not tested:
        return []
    lines = ["", "## Synthetic data for a classifier", "",
             "Balanced accuracy on the real test images of the fixed classifier of `--mode=utility`, trained on "
             "the real images, on those plus N synthetic images per class, or on the N synthetic images alone "
             "(mean ± sd over seeds; each run's utility.md has the setup and each class's recall).", "",
             "| run | real | real + synthetic | synthetic only |", "|---|---|---|---|"]
    for record in tested:
        cells = [f"{_number(u['mean'], 3)} ± {_number(u['sd'], 3)}" if _number(u["sd"], 3) != "-"
                 else _number(u["mean"], 3)
                 for u in (record["utility"][c] for c in ("real", "real_plus_synthetic", "synthetic"))]
        lines.append(f"| {_label(record)} | " + " | ".join(cells) + " |")
    return lines


def _label(record: dict) -> str:
    """'dcgan + wgan': a run's name in the report (as `experiment.Run.label`)."""
    return f"{record['model']} + {record['loss']}"


def _first_n(results: dict) -> str:
    for record in results["runs"]:
        if record.get("metrics"):
            return str(record["metrics"]["generated"]["n"])
    return "-"


def _table_row(name: str, record: Optional[dict], row: dict) -> str:
    cells = [name]
    if record is None:
        cells += ["-", "-", "-"]
    else:
        cells += [f"{record.get('images_seen', 0):,}", _duration(record.get("train_seconds")),
                  _number(record.get("img_per_sec"), 0)]
    cells += [_number(row.get("rho"), 3), f"{_number(row.get('sigma'), 1)} ({row.get('n', '-')})",
              _number(row.get("delta"), 0), _number(row.get("swd", {}).get("avg"), 2),
              _number(row.get("ms_ssim"), 3), _number(row.get("pca_fd"), 2)]
    flags = (record or {}).get("flags", [])
    cells.append(", ".join(f"**{f}**" for f in flags) if flags else "")
    return "| " + " | ".join(cells) + " |"


def _number(value, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:,.{digits}f}"  # None or NaN: no value


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


# ---------------------------------------------------------------- grids.png


def save_combined_grid(results: dict, reals_path: str, path: str) -> None:
    """Every run's grid in one figure: a row per model, a column per loss, flags in red.

    The first column shows training slices (first row only), for comparison.
    """
    plt = plots.pyplot()
    records = results["runs"]
    models_ = list(dict.fromkeys(r["model"] for r in records))
    losses_ = list(dict.fromkeys(r["loss"] for r in records))
    fig, axes = plt.subplots(len(models_), len(losses_) + 1,
                             figsize=(2.4 * (len(losses_) + 1), 2.7 * len(models_)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    _show(axes[0, 0], plots.read_gray(reals_path), "training data", "black")
    for record in records:
        ax = axes[models_.index(record["model"]), losses_.index(record["loss"]) + 1]
        flags = record.get("flags", [])
        title = _label(record) + (f"\n{', '.join(flags)}" if flags else "")
        if record.get("grid") and os.path.isfile(record["grid"]):
            _show(ax, plots.read_gray(record["grid"]), title, "red" if flags else "black")
        else:
            ax.text(0.5, 0.5, record["status"], ha="center", va="center", transform=ax.transAxes, color="red")
            ax.set_title(title, fontsize=9, color="red")
    fig.tight_layout()
    plots.save_figure(fig, path)


def _show(ax, image_u8: np.ndarray, title: str, color: str) -> None:
    ax.imshow(image_u8, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=9, color=color)

"""Pictures of a run: loss curves from stats.jsonl, and the fixed-latent grids over time.

    loss_curves.png    D and G losses, penalty terms, D's mean outputs, against images shown
    progress.png       a montage of up to 12 samples/step_*.png grids, first to last
    progress.gif       every grid as an animation (the original code's training animations)

Written at the end of each run and by `--mode=plots`; matplotlib's Agg
backend, so no display is needed.
"""

import glob
import json
import os
import re

import numpy as np
from PIL import Image

from mrigen.errors import UserError, writing

STATS_FILE = "stats.jsonl"
# Panels of the loss figure: (title, fields drawn, y label).
PANELS = (
    ("losses", ("d_loss", "g_loss", "d_adversarial"), "loss"),
    ("penalty terms", ("penalty", "drift"), "value"),
    ("discriminator outputs", ("real_logit", "fake_logit"), "mean D(x)"),
)
LABELS = {"d_loss": "D loss (total)", "g_loss": "G loss", "d_adversarial": "D loss (adversarial part)",
          "penalty": "gradient penalty", "drift": "drift D(x)^2",
          "real_logit": "D(real)", "fake_logit": "D(fake)"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # Files only; never a window.
    import matplotlib.pyplot as plt

    return plt


def read_stats(workdir: str) -> list[dict]:
    """The records of `workdir`/stats.jsonl, in order (a line cut short by a kill is skipped)."""
    path = os.path.join(workdir, STATS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; has this run trained yet?")
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def save_loss_curves(records: list[dict], path: str, title: str = "") -> None:
    """Three panels against thousands of images shown; ProGAN's stage changes as dotted lines."""
    if not records:
        raise UserError(f"{path}: no training statistics to plot yet")
    plt = pyplot()
    kimg = np.array([r["images_seen"] for r in records], np.float64) / 1000.0
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(8, 9), sharex=True)
    for ax, (panel, fields, ylabel) in zip(axes, PANELS):
        drawn = [f for f in fields if any(f in r for r in records)]
        for field in drawn:
            values = np.array([r.get(field, np.nan) for r in records], np.float64)
            ax.plot(kimg, values, label=LABELS.get(field, field), linewidth=1)
        if drawn:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "none for this loss", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        for x, label in _stage_starts(records):
            ax.axvline(x, color="gray", linestyle=":", linewidth=0.8)
            if ax is axes[0]:
                ax.text(x, 1.0, f" {label}", transform=ax.get_xaxis_transform(), fontsize=7,
                        va="top", color="gray")
    axes[-1].set_xlabel("thousands of real images shown (kimg)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def _stage_starts(records: list[dict]) -> list[tuple[float, str]]:
    """(kimg, '16px fade-in' or '16px') where each stage after the first begins."""
    starts = []
    for previous, record in zip(records, records[1:]):
        if record.get("stage") != previous.get("stage"):
            fading = record.get("alpha", 1.0) < 1.0
            starts.append((previous["images_seen"] / 1000.0,
                           f"{record.get('resolution')}px{' fade-in' if fading else ''}"))
    return starts


def sample_grids(workdir: str) -> list[tuple[int, str]]:
    """(step, path) of every samples/step_XXXXXXXX.png, by step."""
    found = []
    for path in glob.glob(os.path.join(workdir, "samples", "step_*.png")):
        match = re.fullmatch(r"step_(\d+)\.png", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def evenly_spaced(items: list, count: int) -> list:
    """At most `count` items, first and last included, spread evenly."""
    if len(items) <= count:
        return list(items)
    indices = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in indices]


def save_montage(grids: list[tuple[int, str]], path: str, max_frames: int = 12,
                 images_per_step: int = 0) -> None:
    """The fixed-latent grids at up to `max_frames` steps, side by side, titled by step (and kimg)."""
    if not grids:
        raise UserError(f"{path}: no sample grids (samples/step_*.png) to assemble yet")
    plt = pyplot()
    frames = evenly_spaced(grids, max_frames)
    columns = min(len(frames), 4)
    rows = -(-len(frames) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (step, frame_path) in zip(axes.ravel(), frames):
        ax.imshow(read_gray(frame_path), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        label = f"step {step}"
        if images_per_step:
            label += f" ({step * images_per_step / 1000:.1f} kimg)"
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def save_animation(grids: list[tuple[int, str]], path: str, frame_ms: int = 250) -> None:
    """Every grid as one GIF frame, scaled to the largest grid (ProGAN's grids grow)."""
    if not grids:
        raise UserError(f"{path}: no sample grids (samples/step_*.png) to animate yet")
    frames = [Image.fromarray(read_gray(p)) for _, p in grids]
    size = max(f.size for f in frames)
    frames = [f if f.size == size else f.resize(size, Image.Resampling.NEAREST) for f in frames]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]  # Hold the last frame.
    temporary = f"{path}.{os.getpid()}.tmp"
    with writing(path):
        frames[0].save(temporary, format="GIF", save_all=True, append_images=frames[1:], duration=durations,
                       loop=0)
        os.replace(temporary, path)


def write_run_plots(workdir: str, out_dir: str = "") -> list[str]:
    """loss_curves.png, progress.png and progress.gif of `workdir` into `out_dir` (default: workdir).

    Returns the paths written; a run with no statistics or grids yet is a UserError.
    """
    out_dir = out_dir or workdir
    with writing(out_dir):
        os.makedirs(out_dir, exist_ok=True)
    records = read_stats(workdir)
    paths = [os.path.join(out_dir, name) for name in ("loss_curves.png", "progress.png", "progress.gif")]
    save_loss_curves(records, paths[0], _title(workdir))
    grids = sample_grids(workdir)
    save_montage(grids, paths[1], images_per_step=_images_per_step(records))
    save_animation(grids, paths[2])
    return paths


def _images_per_step(records: list[dict]) -> int:
    last = records[-1] if records else {}
    return last["images_seen"] // last["step"] if last.get("step") else 0


def _title(workdir: str) -> str:
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        return f"{config['model']} + {config['loss']}"
    except (OSError, ValueError, KeyError):
        return os.path.basename(os.path.normpath(workdir))


def read_gray(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def save_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with writing(path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fig.savefig(temporary, dpi=100, format="png")
            os.replace(temporary, path)
    finally:
        plt.close(fig)

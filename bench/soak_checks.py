"""The soak benchmark's checks (bench/soak.py): a soaked run's outputs against an uninterrupted run's.

Functions of files and pytrees only, so that tests/test_soak_bench.py can show
on small made-up inputs that each one still finds what it is for.
"""

import collections
import json
import os

TIMING_FIELDS = {"img_per_sec", "elapsed_sec", "time"}  # when a step ran, not what it computed
TMP_CHECKPOINT = ".orbax-checkpoint-tmp"  # Orbax's name for a checkpoint folder still being written


def temporary_checkpoints(workdir: str, since: float) -> list[str]:
    """The checkpoint folders still being written that were made at or after time `since` (not older runs')."""
    directory = os.path.join(workdir, "checkpoints")
    try:
        names = [n for n in os.listdir(directory) if TMP_CHECKPOINT in n]
    except FileNotFoundError:
        return []
    made = []
    for name in names:
        try:
            if os.stat(os.path.join(directory, name)).st_ctime >= since:
                made.append(name)
        except FileNotFoundError:  # renamed, complete, meanwhile
            pass
    return sorted(made)


def stray_temporaries(workdir: str) -> list[str]:
    """Temporary files and folders left anywhere in workdir (a save, a PNG, the lock, stats.jsonl cut short)."""
    found = []
    for directory, subdirs, names in os.walk(workdir):
        for name in subdirs + names:
            if TMP_CHECKPOINT in name or name.endswith(".tmp"):
                found.append(os.path.relpath(os.path.join(directory, name), workdir))
        subdirs[:] = [d for d in subdirs if TMP_CHECKPOINT not in d]
    return sorted(found)


def file_lines(path: str) -> list[str]:
    """The lines of a text file, each with its newline (the last may lack one); [] if it is missing."""
    try:
        with open(path) as f:
            return f.readlines()
    except FileNotFoundError:
        return []


def stats_problems(lines: list[str], reference: list[dict], final_step: int) -> list[str]:
    """What is wrong with a stats.jsonl's lines: cut or unreadable lines, steps not 1..final_step once each
    and in order, values unlike the reference's records (timings aside). [] if nothing."""
    problems, records = [], []
    for number, line in enumerate(lines, 1):
        try:
            if not line.endswith("\n"):
                raise ValueError
            records.append(json.loads(line))
        except ValueError:
            problems.append(f"line {number} is cut short or not JSON")
    steps = [r.get("step") for r in records]
    counts = collections.Counter(steps)
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    missing = sorted(set(range(1, final_step + 1)) - set(counts))
    extra = sorted(s for s in counts if s not in range(1, final_step + 1))
    if duplicated:
        problems.append(f"steps logged more than once: {duplicated}")
    if missing:
        problems.append(f"steps missing: {missing}")
    if extra:
        problems.append(f"steps outside 1..{final_step}: {extra}")
    if not (duplicated or missing or extra) and steps != sorted(steps):
        problems.append("steps out of order")
    expected = {r["step"]: r for r in reference}
    differing = [r["step"] for r in records if r.get("step") in expected
                 and without_timings(r) != without_timings(expected[r["step"]])]
    if differing:
        problems.append(f"values unlike the reference's at steps {differing}")
    return problems


def without_timings(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING_FIELDS}


def flat_leaves(state) -> dict:
    """{'["g"]["params"]...': numpy array} for every leaf of a state pytree (PRNG keys as their raw data)."""
    import jax
    import numpy as np

    def raw(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf)

    return {jax.tree_util.keystr(path): raw(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def state_differences(soaked, reference) -> list[str]:
    """Every leaf that is not bit for bit the reference's: missing, extra, another dtype or shape, other bits."""
    a, b = flat_leaves(soaked), flat_leaves(reference)
    problems = [f"{key}: only in the reference" for key in sorted(set(b) - set(a))]
    problems += [f"{key}: not in the reference" for key in sorted(set(a) - set(b))]
    for key in sorted(set(a) & set(b)):
        x, y = a[key], b[key]
        if (x.dtype, x.shape) != (y.dtype, y.shape):
            problems.append(f"{key}: {x.dtype}{list(x.shape)}, the reference's {y.dtype}{list(y.shape)}")
        elif x.tobytes() != y.tobytes():
            changed = int((x.reshape(-1).view(f"u{x.itemsize}") != y.reshape(-1).view(f"u{y.itemsize}")).sum())
            problems.append(f"{key}: {changed} of {x.size} values differ")
    return problems


def file_differences(soaked_dir: str, reference_dir: str) -> list[str]:
    """The files of two folders that are not byte for byte the same, or only in one of them."""
    def files(d):
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    a, b = files(soaked_dir), files(reference_dir)
    problems = [f"{name}: only in the reference" for name in sorted(set(b) - set(a))]
    problems += [f"{name}: not in the reference" for name in sorted(set(a) - set(b))]
    for name in sorted(set(a) & set(b)):
        with open(os.path.join(soaked_dir, name), "rb") as x, open(os.path.join(reference_dir, name), "rb") as y:
            if x.read() != y.read():
                problems.append(f"{name}: differs")
    return problems


def scalar_differences(soaked: dict, reference: dict) -> list[str]:
    """TensorBoard's {tag: [(step, value), ...]} (purges applied) unlike the reference's, timings aside."""
    tags = sorted(tag for tag in set(soaked) | set(reference) if tag.split("/")[-1] not in TIMING_FIELDS)
    problems = []
    for tag in tags:
        a, b = soaked.get(tag, []), reference.get(tag, [])
        if a != b:
            steps = [s for s, _ in a]
            again = sorted({s for s in steps if steps.count(s) > 1})
            problems.append(f"{tag}: {len(a)} points, the reference {len(b)}"
                            + (f", steps {again} more than once" if again else ", other values"))
    return problems

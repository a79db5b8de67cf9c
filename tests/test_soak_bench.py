"""The soak benchmark's checks (bench/soak_checks.py) find what they are for, on small made-up inputs.

The soak itself (bench/soak.py: 20 SIGKILLs of one run) takes minutes and is
not part of the suite; these make sure its verdict cannot silently pass.
"""

import importlib.util
import json
import os
import time

import jax
import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def checks():
    spec = importlib.util.spec_from_file_location("soak_checks", os.path.join(ROOT, "bench", "soak_checks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def records(steps, **changed):
    """stats.jsonl records of `steps`; changed: step -> d_loss of that step instead of the usual one."""
    return [{"step": s, "images_seen": 8 * s, "d_loss": changed.get(f"d{s}", 1.0 / s), "img_per_sec": 100.0 + s,
             "elapsed_sec": 0.5 * s, "time": 1e9 + s} for s in steps]


def lines(recs):
    return [json.dumps(r) + "\n" for r in recs]


def test_stats_pass_with_each_step_once_and_other_timings(checks):
    reference = records(range(1, 6))
    retimed = [{**r, "img_per_sec": 1.0, "elapsed_sec": 9.0, "time": 2e9} for r in reference]
    assert checks.stats_problems(lines(retimed), reference, 5) == []


@pytest.mark.parametrize("soaked, expected", [
    (lines(records([1, 2, 3, 3, 4, 5])), "steps logged more than once: [3]"),
    (lines(records([1, 2, 4, 5])), "steps missing: [3]"),
    (lines(records([1, 2, 3, 4])), "steps missing: [5]"),
    (lines(records([1, 2, 3, 4, 5, 6])), "steps outside 1..5: [6]"),
    (lines(records([1, 3, 2, 4, 5])), "steps out of order"),
    (lines(records(range(1, 6), d4=0.3)), "values unlike the reference's at steps [4]"),
    (lines(records(range(1, 6)))[:-1] + [lines(records([5]))[0][:-9]], "line 5 is cut short or not JSON"),
    (lines(records(range(1, 6)))[:-1] + [json.dumps(records([5])[0])], "line 5 is cut short or not JSON"),
])
def test_stats_problems_are_found_and_named(checks, soaked, expected):
    assert expected in checks.stats_problems(soaked, records(range(1, 6)), 5)


def small_state():
    return {"g": {"params": {"kernel": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)}},
            "d_opt": (np.zeros(3, np.float32), np.array([np.nan, 0.0], np.float32)),
            "step": np.int32(7), "rng": np.asarray(jax.random.key_data(jax.random.PRNGKey(0)))}


def test_states_bit_for_bit_equal_pass_nans_included(checks):
    assert checks.state_differences(small_state(), small_state()) == []


def test_a_typed_prng_key_is_compared_by_its_bits(checks):
    a, b, c = ({"rng": jax.random.key(seed)} for seed in (0, 0, 1))
    assert checks.state_differences(a, b) == []
    assert checks.state_differences(a, c) == ["['rng']: 1 of 2 values differ"]


def test_one_bit_anywhere_in_a_state_is_found_and_named(checks):
    reference = small_state()
    one_ulp = small_state()
    one_ulp["g"]["params"]["kernel"][1, 2] = np.nextafter(one_ulp["g"]["params"]["kernel"][1, 2], np.float32(2))
    assert checks.state_differences(one_ulp, reference) == ["['g']['params']['kernel']: 1 of 12 values differ"]
    signed_zero = small_state()
    signed_zero["d_opt"][1][1] = -0.0  # == 0.0, other bits
    assert checks.state_differences(signed_zero, reference) == ["['d_opt'][1]: 1 of 2 values differ"]


def test_missing_extra_and_retyped_leaves_are_found(checks):
    reference = small_state()
    changed = small_state()
    del changed["rng"]
    changed["augment_p"] = np.float32(0.0)
    changed["step"] = np.int64(7)
    assert checks.state_differences(changed, reference) == [
        "['rng']: only in the reference", "['augment_p']: not in the reference",
        "['step']: int64[], the reference's int32[]"]


def test_files_are_compared_byte_for_byte(checks, tmp_path):
    soaked, reference = tmp_path / "soaked", tmp_path / "reference"
    for folder in (soaked, reference):
        folder.mkdir()
        (folder / "step_00000005.png").write_bytes(b"\x89PNG same")
    (soaked / "step_00000010.png").write_bytes(b"\x89PNG cut")
    (reference / "step_00000010.png").write_bytes(b"\x89PNG whole")
    (reference / "step_00000015.png").write_bytes(b"\x89PNG")
    assert checks.file_differences(str(soaked), str(reference)) == [
        "step_00000015.png: only in the reference", "step_00000010.png: differs"]
    assert checks.file_differences(str(reference), str(reference)) == []


def test_temporaries_left_anywhere_in_a_workdir_are_found(checks, tmp_path):
    (tmp_path / "checkpoints" / "8").mkdir(parents=True)
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "step_00000010.png.4242.tmp").write_bytes(b"")
    (tmp_path / "samples" / "step_00000005.png").write_bytes(b"")
    (tmp_path / "stats.jsonl").write_text("")
    assert checks.stray_temporaries(str(tmp_path)) == [
        os.path.join("checkpoints", "12.orbax-checkpoint-tmp"), os.path.join("samples", "step_00000010.png.4242.tmp")]
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp" / "state").rmdir()
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp").rmdir()
    (tmp_path / "samples" / "step_00000010.png.4242.tmp").unlink()
    assert checks.stray_temporaries(str(tmp_path)) == []


def test_tensorboard_scalars_must_be_the_reference_s_once_per_step_timings_aside(checks):
    reference = {"loss/d_loss": [(1, 0.5), (2, 0.4)], "progress/img_per_sec": [(1, 90.0), (2, 95.0)]}
    retimed = {"loss/d_loss": [(1, 0.5), (2, 0.4)], "progress/img_per_sec": [(1, 10.0), (2, 11.0)]}
    assert checks.scalar_differences(retimed, reference) == []
    twice = {"loss/d_loss": [(1, 0.5), (2, 0.4), (2, 0.4)]}
    assert checks.scalar_differences(twice, reference) == ["loss/d_loss: 3 points, the reference 2, steps [2] more "
                                                           "than once"]
    other = {"loss/d_loss": [(1, 0.5), (2, 0.41)], "loss/g_loss": [(1, 0.7)]}
    assert checks.scalar_differences(other, reference) == ["loss/d_loss: 2 points, the reference 2, other values",
                                                           "loss/g_loss: 1 points, the reference 0, other values"]


def test_only_the_saves_a_run_began_count_as_its_saves_in_progress(checks, tmp_path):
    (tmp_path / "checkpoints" / "8").mkdir(parents=True)
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp").mkdir()
    assert checks.temporary_checkpoints(str(tmp_path), since=time.time() - 60) == ["12.orbax-checkpoint-tmp"]
    assert checks.temporary_checkpoints(str(tmp_path), since=time.time() + 60) == []  # an older run's
    assert checks.temporary_checkpoints(str(tmp_path / "nothing"), since=0) == []

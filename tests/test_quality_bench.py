"""The quality benchmark's variants: each is the paper's recipe plus its own fields, at one budget."""

import importlib.util
import os

import pytest

from conftest import ROOT
from mrigen import experiment, run_config


def load_bench():
    spec = importlib.util.spec_from_file_location("quality", os.path.join(ROOT, "bench", "quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality():
    return load_bench()


def planned(quality, variant: str, budget: int = 960, base: str = "configs/dcgan.py:quick"):
    args = quality.parse_args(["--budget_images", str(budget), "--base", base, "--variants", variant])
    config = quality.experiment_config(args, variant)
    (run,) = experiment.plan(config, "/tmp/unused", 110)
    return run


def test_the_paper_variant_switches_every_improvement_off_even_on_a_preset_with_them_on(quality, tmp_path):
    preset = tmp_path / "improved.py"
    preset.write_text(
        "from mrigen import config_base\n"
        "def get_config(variant=None):\n"
        "    config = config_base.get_config(model='dcgan', loss='dragan')\n"
        "    config_base.shrink(config, 'quick', 'improved.py')\n"
        "    config.train.epochs = 1.0\n"
        "    config.train.ema_kimg, config.train.augment, config.train.augment_p = 1.0, 'ada', 0.3\n"
        "    config.data.mirror = True\n"
        "    return config\n")
    run = planned(quality, "paper", base=str(preset))
    tc = run.config.train
    assert (tc.ema_kimg, tc.augment, tc.augment_p, run.config.data.mirror) == (0.0, "", 0.0, False)
    assert run.config.loss == "dragan" and run.config.data.holdout == "0.2"


def test_each_variant_adds_only_its_own_fields(quality):
    paper = run_config.flatten(planned(quality, "paper").config)
    for variant, fields in quality.VARIANTS.items():
        if variant == quality.PRESET:
            continue
        run = planned(quality, variant)
        flat = run_config.flatten(run.config)
        assert {k: flat[k] for k in fields} == fields, variant
        # train.epochs: the same budget over a mirrored (twice as large) set.
        assert {k for k, v in flat.items() if paper.get(k) != v} - {"train.epochs"} <= set(fields), variant
        assert run.name == f"dcgan_{fields.get('loss', 'dragan')}"


def test_the_preset_variant_is_the_base_config_as_it_is(quality):
    base = run_config.flatten(run_config.from_file(os.path.join(ROOT, "configs", "dcgan.py"), "quick"))
    preset = run_config.flatten(planned(quality, quality.PRESET).config)
    # What the benchmark sets for every variant: the budget, the seed and the data with its holdout.
    shared = {"train.epochs", "seed", "data.path", "data.resolution", "data.cache_dir", "data.holdout"}
    assert {k for k, v in preset.items() if base[k] != v} <= shared
    paper = run_config.flatten(planned(quality, "paper").config)
    assert {k for k in base if preset[k] != paper[k]} >= {"train.ema_kimg"}  # the preset has its improvements


def test_every_variant_shows_the_same_images_mirrored_or_not(quality):
    # 110 training slices, batch 16: 960 images are 60 steps; mirroring doubles an epoch, not the budget.
    plain, mirrored = planned(quality, "paper"), planned(quality, "mirror")
    assert plain.planned_images == mirrored.planned_images == 960
    assert mirrored.config.train.epochs == pytest.approx(plain.config.train.epochs / 2)


def test_unknown_variants_are_refused(quality, capsys):
    with pytest.raises(SystemExit) as stop:
        quality.parse_args(["--variants", "paper,bogus"])
    assert stop.value.code == 2 and "bogus" in capsys.readouterr().err


def test_the_paper_variant_pins_dcgan_upsampling_and_other_models_plan_without_it(quality, tmp_path):
    preset = tmp_path / "resized.py"
    preset.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {os.path.join(ROOT, 'configs')!r})\n"
        "import dcgan\n"
        "def get_config(variant=None):\n"
        "    config = dcgan.get_config('quick')\n"
        "    config.arch.upsample = 'resize'\n"
        "    return config\n")
    assert planned(quality, "paper", base=str(preset)).config.arch.upsample == "transposed"
    assert planned(quality, "resize", base=str(preset)).config.arch.upsample == "resize"
    srresnet = planned(quality, "paper", base="configs/srresnet.py:quick").config
    assert "upsample" not in srresnet.arch and srresnet.model == "srresnet"

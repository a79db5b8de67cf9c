"""--mode=experiment: architecture x loss runs, resumable as a whole, one Table 3 report."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, main_in_process
from mrigen import config_base, experiment, run_config, tensorboard, train, workdir_lock
from mrigen.errors import UserError
from test_cli import assert_one_line_error, main_py

EXPERIMENT = os.path.join(ROOT, "configs", "experiment.py")
RUNS = ["dcgan_wgan", "dcgan_dragan", "srresnet_wgan", "srresnet_dragan"]


def smoke_experiment(cache_dir: str, **fields):
    config = run_config.from_file(EXPERIMENT, "smoke")
    config.shared.data.cache_dir = cache_dir
    for key, value in fields.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shared_cache_dir):
    """configs/experiment.py:smoke run by main.py: 2 models x 2 losses, a few steps each."""
    workdir = str(tmp_path_factory.mktemp("experiment") / "exp")
    result = main_py("--mode=experiment", f"--config={EXPERIMENT}:smoke", f"--workdir={workdir}",
                     f"--config.shared.data.cache_dir={shared_cache_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture
def copy_of(finished, tmp_path):
    """A private copy of the finished experiment, for tests that change it."""
    workdir = str(tmp_path / "exp")
    shutil.copytree(finished, workdir)
    return workdir


def test_the_experiment_trains_evaluates_and_reports_every_run(finished):
    with open(os.path.join(finished, "experiment.json")) as f:
        results = json.load(f)
    assert [r["name"] for r in results["runs"]] == RUNS
    for record in results["runs"]:
        assert record["status"] == "done"
        assert record["images_seen"] == record["planned_images"] == 16  # the budget: 2 steps of 8
        assert record["train_seconds"] > 0 and record["img_per_sec"] > 0
        generated = record["metrics"]["generated"]
        assert generated["n"] == 16 and 0 <= generated["rho"] <= 1 and generated["swd"]["avg"] > 0
        run_dir = os.path.join(finished, record["name"])
        assert os.path.isfile(os.path.join(run_dir, experiment.RUN_RECORD))
        assert os.path.isfile(os.path.join(run_dir, "eval_step2", "report.md"))
        assert os.path.isfile(os.path.join(run_dir, "loss_curves.png"))
        assert tensorboard.read_scalars(run_dir)["eval/rho"] == [(2, pytest.approx(generated["rho"]))]
        grid = np.asarray(Image.open(os.path.join(finished, "grids", f"{record['name']}.png")))
        assert grid.shape == (2 * 34 - 2, 2 * 34 - 2)  # eval.grid_images = 4 images of 32 px
    assert results["real"]["held-out real"]["n"] == 68 and results["real"]["training data"]["n"] == 68
    # Two steps of an untrained generator make one grey image whatever z is.
    assert all("collapsed" in r["flags"] for r in results["runs"])

    report = open(os.path.join(finished, "report.md")).read()
    assert "| training data | - | - | - | 0.9" in report and "| held-out real |" in report
    for name in ("dcgan + wgan", "dcgan + dragan", "srresnet + wgan", "srresnet + dragan"):
        assert f"| {name} | 16 |" in report
    assert "**collapsed**" in report and "![sample grids](grids.png)" in report
    assert "for a classifier" not in report and all(r["utility"] is None for r in results["runs"])  # no labels
    combined = Image.open(os.path.join(finished, "grids.png"))
    assert combined.size[0] > combined.size[1] > 300  # 2 model rows x (real + 2 loss) columns


def test_conditional_runs_are_evaluated_by_class_and_for_a_classifier(tmp_path, shared_cache_dir):
    """An experiment of one run on the template's slices in 2 axial classes: its per-class evaluation and its
    utility test (3 seeds of a classifier trained 20 steps) are in the run's folder, the report and its JSON."""
    config = smoke_experiment(shared_cache_dir, runs=("dcgan_wgan",))
    config.shared.data.labels = "slice_level:2"
    config.eval.num_images = 0  # the held-out half: 68 images, enough for each class's own evaluation
    config.eval.utility_steps = 20
    results = experiment.run_experiment(config, str(tmp_path / "exp"))
    record, = results["runs"]
    run_dir = tmp_path / "exp" / "dcgan_wgan"
    with open(run_dir / "utility.json") as f:
        tested = json.load(f)
    assert tested["setup"]["classes"] == ["level_0", "level_1"] and len(tested["setup"]["seeds"]) == 3
    for condition, row in record["utility"].items():
        assert row["mean"] == pytest.approx(tested["conditions"][condition]["mean"]["balanced_accuracy"])
        assert 0 <= row["mean"] <= 1 and row["images"] == tested["conditions"][condition]["images"]
    with open(run_dir / "eval_step2" / "eval.json") as f:
        assert list(json.load(f)["classes"]) == ["level_0", "level_1"]
    report = open(tmp_path / "exp" / "report.md").read()
    heading = "## Synthetic data for a classifier"
    assert heading in report and "\n| dcgan + wgan | " in report.split(heading)[1]


def test_a_rerun_skips_finished_runs_and_continues_the_unfinished(copy_of, shared_cache_dir, monkeypatch):
    unfinished = os.path.join(copy_of, "srresnet_dragan")
    os.remove(os.path.join(unfinished, experiment.RUN_RECORD))  # As if killed before it was evaluated.
    shutil.rmtree(os.path.join(unfinished, "eval_step2"))
    stamps = {name: os.path.getmtime(os.path.join(copy_of, name, experiment.RUN_RECORD)) for name in RUNS[:3]}
    trained = []
    real_train = train.train
    monkeypatch.setattr(train, "train", lambda config, workdir, **kw: trained.append(workdir)
                        or real_train(config, workdir, **kw))

    results = experiment.run_experiment(smoke_experiment(shared_cache_dir), copy_of)

    assert trained == [unfinished]
    for name, stamp in stamps.items():
        assert os.path.getmtime(os.path.join(copy_of, name, experiment.RUN_RECORD)) == stamp
    assert os.path.isfile(os.path.join(unfinished, experiment.RUN_RECORD))
    assert os.path.isfile(os.path.join(unfinished, "eval_step2", "eval.json"))
    assert [r["status"] for r in results["runs"]] == ["done"] * 4


def test_a_diverged_run_is_flagged_and_the_experiment_goes_on(copy_of, shared_cache_dir, monkeypatch):
    for name in ("dcgan_wgan", "srresnet_wgan"):
        os.remove(os.path.join(copy_of, name, experiment.RUN_RECORD))

    def fake_train(config, workdir, **kw):
        if workdir.endswith("dcgan_wgan"):
            raise train.DivergedError("training diverged at step 1: d_loss is not finite")

    monkeypatch.setattr(train, "train", fake_train)
    results = experiment.run_experiment(smoke_experiment(shared_cache_dir), copy_of)

    by_name = {r["name"]: r for r in results["runs"]}
    assert by_name["dcgan_wgan"]["status"] == "diverged" and by_name["dcgan_wgan"]["flags"] == ["diverged"]
    assert "step 1" in by_name["dcgan_wgan"]["error"] and "metrics" not in by_name["dcgan_wgan"]
    assert by_name["srresnet_wgan"]["status"] == "done"  # the run after it was still evaluated
    assert "| dcgan + wgan | 16 | " in open(os.path.join(copy_of, "report.md")).read()
    assert "**diverged**" in open(os.path.join(copy_of, "report.md")).read()
    with open(os.path.join(copy_of, "dcgan_wgan", experiment.RUN_RECORD)) as f:
        assert json.load(f)["status"] == "diverged"  # and a rerun will not train it again


def test_a_finished_run_of_another_budget_is_refused(finished, shared_cache_dir):
    config = smoke_experiment(shared_cache_dir, budget_images=24)
    with pytest.raises(UserError, match="dcgan_wgan finished with train.epochs"):
        experiment.run_experiment(config, finished)


def test_an_experiment_in_use_is_refused_and_left_as_it_was(copy_of, shared_cache_dir):
    before = {name: os.path.getmtime(os.path.join(copy_of, name)) for name in ("experiment.json", "report.md")}
    lock = workdir_lock.WorkdirLock(copy_of)
    lock.acquire()  # as a second `main.py --mode=experiment` on this workdir would find it
    try:
        with pytest.raises(UserError, match=f"workdir: {copy_of} is in use: PID {os.getpid()} on .* is training"):
            experiment.run_experiment(smoke_experiment(shared_cache_dir), copy_of)
    finally:
        lock.release()
    assert {name: os.path.getmtime(os.path.join(copy_of, name)) for name in before} == before
    experiment.run_experiment(smoke_experiment(shared_cache_dir), copy_of)  # every run done: the report again
    assert os.path.getmtime(os.path.join(copy_of, "report.md")) > before["report.md"]
    assert not os.path.exists(os.path.join(copy_of, workdir_lock.LOCK_FILE))  # released at the end


def test_the_wall_clock_budget_stops_a_run_early(tmp_path, shared_cache_dir):
    config = smoke_experiment(shared_cache_dir, models=("dcgan",), losses=("dragan",),
                              budget_images=160, budget_seconds=0.01)
    results = experiment.run_experiment(config, str(tmp_path / "exp"))
    record = results["runs"][0]
    assert record["planned_images"] == 160
    assert record["status"] == "done" and record["images_seen"] == 8  # one step: the clock ran out
    assert record["checkpoint_step"] == 1
    assert "at most 0.01 s of training per run" in open(tmp_path / "exp" / "report.md").read()


def test_dry_run_lists_the_runs_and_trains_nothing(tmp_path, shared_cache_dir):
    workdir = tmp_path / "exp"
    result = main_py("--mode=experiment", f"--config={EXPERIMENT}:smoke", f"--workdir={workdir}", "--dry_run",
                     f"--config.shared.data.cache_dir={shared_cache_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data: 137 slices of 32x32 px" in result.stdout and "4 runs:" in result.stdout
    for name in RUNS:
        assert name in result.stdout
    assert result.stdout.count("16 images in 2 steps of 8") == 4
    assert not workdir.exists()


def test_an_experiment_config_needs_experiment_mode(tmp_path):
    assert_one_line_error(main_in_process(f"--config={EXPERIMENT}:smoke", f"--workdir={tmp_path}"),
                          "--config: an experiment config works only with --mode=experiment")


# ---------------------------------------------------------------- the pieces


def test_the_budget_sets_each_model_s_length(shared_cache_dir):
    # A comma-separated item, as --config.models=dcgan,progan gives it.
    config = smoke_experiment(shared_cache_dir, models=("dcgan,progan",), losses=("wgan_gp",), budget_images=1000)
    dcgan, progan = experiment.plan(config, "DIR", num_images=137)
    assert dcgan.workdir == os.path.join("DIR", "dcgan_wgan_gp") and progan.name == "progan_wgan_gp"
    assert dcgan.config.train.epochs == pytest.approx(1000 / 137)
    assert dcgan.planned_images == 1000  # 125 steps of 8
    stages = 7  # 4 px, then a fade-in and a stabilize stage for 8, 16 and 32 px
    assert progan.config.train.epochs_per_stage == pytest.approx(1000 / 137 / stages)
    assert "epochs" not in progan.config.train  # ProGAN's length is its stages', nothing else
    assert abs(progan.planned_images - 1000) <= stages * 8 / 2  # each stage rounded to whole steps
    assert progan.config.data.resolution == 32 and progan.config.arch.width == 1 / 32  # shared, then its base


def test_runs_pick_pairs_instead_of_every_combination(shared_cache_dir):
    config = smoke_experiment(shared_cache_dir, runs=("srresnet_wgan,dcgan_dragan",))
    assert [r.name for r in experiment.plan(config, "DIR", 137)] == ["srresnet_wgan", "dcgan_dragan"]
    with pytest.raises(UserError, match="config.runs: unknown name 'dcgan_hinge'"):
        experiment.plan(smoke_experiment(shared_cache_dir, runs=("dcgan_hinge",)), "DIR", 137)


def test_every_run_is_the_paper_s_recipe_unless_the_experiment_says_otherwise():
    config = run_config.from_file(EXPERIMENT, "cpu32")  # its base configs are the :quick presets
    config.runs = ("dcgan_dragan,srresnet_dragan",)
    for run in experiment.plan(config, "DIR", 137):
        flat = run_config.flatten(run.config)
        assert {k: v for k, v in config_base.PAPER_RECIPE.items() if k in flat} == {
            k: flat[k] for k in config_base.PAPER_RECIPE if k in flat}, run.name
    config.paper_recipe = False
    dcgan, srresnet = experiment.plan(config, "DIR", 137)
    assert dcgan.config.train.ema_kimg > 0 and srresnet.config.train.ema_kimg > 0  # as the presets have it


def test_bad_experiment_fields_are_named(shared_cache_dir):
    with pytest.raises(UserError, match="config.losses: unknown name 'hinge'"):
        experiment.plan(smoke_experiment(shared_cache_dir, losses=("dragan,hinge",)), "DIR", 137)
    config = smoke_experiment(shared_cache_dir)
    config.shared.arch = {"no_such_field": 1}
    with pytest.raises(UserError, match="config.shared.arch.no_such_field"):
        experiment.plan(config, "DIR", 137)


@pytest.mark.parametrize("generated, reasons", [
    ({"n": 68, "sigma": 7.5, "ms_ssim": 0.62}, []),
    ({"n": 68, "sigma": 1.0, "ms_ssim": 0.62}, ["sigma"]),
    ({"n": 68, "sigma": 7.5, "ms_ssim": 0.95}, ["1 - MS-SSIM"]),
    ({"n": 16, "sigma": 0.3, "ms_ssim": 0.62}, ["sigma"]),  # compared with real sigma at N = 16
])
def test_collapse_rule(generated, reasons):
    real = {"n": 68, "sigma": 8.0, "ms_ssim": 0.6, "n_common": 16, "sigma_common": 2.0}
    rule = run_config.from_file(EXPERIMENT).collapse
    found = experiment.collapse_reasons(generated, real, rule)
    assert [r.split(" ")[0] for r in found] == [r.split(" ")[0] for r in reasons]


def test_training_time_adds_up_each_process(tmp_path):
    records = [  # a first process killed after step 20, then a resumed one
        {"step": 10, "images_seen": 80, "elapsed_sec": 30.0, "time": 1030.0, "img_per_sec": 5.0},
        {"step": 20, "images_seen": 160, "elapsed_sec": 40.0, "time": 1040.0, "img_per_sec": 8.0},
        {"step": 30, "images_seen": 240, "elapsed_sec": 45.0, "time": 2045.0, "img_per_sec": 4.0},
        {"step": 40, "images_seen": 320, "elapsed_sec": 55.0, "time": 2055.0, "img_per_sec": 9.0},
    ]
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    timing = experiment.timing(str(tmp_path))
    assert timing["train_seconds"] == 95.0 and timing["images_seen"] == 320 and timing["steps"] == 40
    assert timing["img_per_sec"] == 8.5  # median of the records after each process's first

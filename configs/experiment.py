"""The paper's experiment: each architecture x loss trained for one budget, evaluated, one report.

Each run trains in <workdir>/<model>_<loss>/ from its model's config file
(below) with the `shared` fields overriding it, then is evaluated; the
experiment writes <workdir>/report.md (Table 3's columns for every run),
experiment.json and the sample grids. Run the same command again to continue
a killed experiment: finished runs are skipped, an unfinished one resumes
from its checkpoint.

Run:
  python main.py --mode=experiment --config=configs/experiment.py --workdir=workdirs/experiment
  python main.py --mode=experiment --config=configs/experiment.py:cpu32 --workdir=workdirs/experiment_cpu32   # all 18, small
  python main.py --mode=experiment --config=configs/experiment.py --workdir=workdirs/dragan_only \
    --config.losses=dragan --config.budget_images=200000 --config.shared.data.path=/data/keras_png_slices_data
  python main.py --mode=experiment --config=configs/experiment.py:cpu32 --workdir=workdirs/table3_cpu32 \
    --config.runs=dcgan_dragan,srresnet_dragan,progan_wgan_gp   # Table 3's three rows (README)
  python main.py --mode=experiment --config=configs/experiment.py:cpu32 --workdir=DIR --dry_run   # the plan, nothing trained
Variants after the colon: `cpu32` (32x32, tiny models, a CPU), `smoke` (tiny, tests).
"""

import ml_collections


def get_config(variant=None):
    config = ml_collections.ConfigDict()
    config.models = ("dcgan", "srresnet", "progan")  # Architectures to train (on the command line: dcgan,progan).
    # Losses each architecture is trained with: the paper's five, then r1 (beyond the paper).
    config.losses = ("gan", "lsgan", "wgan", "wgan_gp", "dragan", "r1")
    config.runs = ()  # Instead of models x losses, these model_loss pairs (e.g. dcgan_dragan,progan_wgan_gp).
    # Each model's training config, file.py or file.py:variant; relative paths are from the repository root.
    config.base_configs = ml_collections.ConfigDict({
        "dcgan": "configs/dcgan.py",
        "srresnet": "configs/srresnet.py",
        "progan": "configs/progan.py",
    })
    config.budget_images = 0  # Real images shown to D per run (0 = each base config's own length).
    config.budget_seconds = 0.0  # Wall-clock cap on each run's training in seconds (0 = none).
    # Every run the paper's recipe: what the base configs switch on beyond the paper (the :quick presets'
    # moving average, augmentation, resize upsampling; docs/improvements.md) is switched off before `shared`
    # applies. False: each run as its base config has it.
    config.paper_recipe = True

    # Fields that override every run's base config (names as in configs/dcgan.py).
    config.shared = ml_collections.ConfigDict()
    config.shared.seed = 0  # Seeds initialization, batches, latents and penalties of every run.
    config.shared.data = ml_collections.ConfigDict()
    config.shared.data.path = ""  # PNG folder, NIfTI/Analyze file or folder; "" = embedded MNI152 template.
    config.shared.data.resolution = 256  # Side length of every run's images (the paper's 256).
    config.shared.data.cache_dir = "~/.cache/mrigen"  # Decoded datasets and PCA bases are cached here.

    config.eval = ml_collections.ConfigDict()
    config.eval.num_images = 0  # Generated images per run (0 = the held-out real half's size, for equal N).
    config.eval.seed = 0  # Seed of the evaluated latents and of the metrics' random choices.
    config.eval.grid_images = 16  # Generated images in each run's grid in the report.
    # Conditional runs (shared.data.labels set): the --mode=utility test of each, a table in the report.
    config.eval.utility = True
    config.eval.utility_seeds = 3  # Classifier seeds per training set.
    config.eval.utility_steps = 1000  # Classifier training steps.

    # A run is flagged "collapsed" when its generated set is far less varied than real data:
    config.collapse = ml_collections.ConfigDict()
    config.collapse.sigma_fraction = 0.25  # sigma below this fraction of the held-out real sigma (equal N),
    config.collapse.diversity_fraction = 0.5  # or 1 - MS-SSIM below this fraction of the held-out real one's.

    if variant == "cpu32":  # 32x32, tiny models: 1-4 min per run on 2 CPU cores (40 min for the paper's 15).
        config.budget_images = 3200  # About 23 epochs of the 137 MNI152 slices.
        config.base_configs.dcgan = "configs/dcgan.py:quick"
        config.base_configs.srresnet = "configs/srresnet.py:quick"
        config.base_configs.progan = "configs/progan.py:quick"
        config.shared.data.resolution = 32
        config.shared.arch = ml_collections.ConfigDict()
        config.shared.arch.width = 0.125  # The quick variants' width, also for SRResNet and ProGAN.
        config.shared.arch.latent_dim = 64  # Size of z.
        config.shared.train = ml_collections.ConfigDict()
        config.shared.train.batch_size = 16  # Global batch.
        config.shared.log_every_steps = 10  # stats.jsonl and TensorBoard interval.
        config.shared.sample_every_steps = 20  # Fixed-latent grid interval (the progress montage).
        config.shared.checkpoint_every_steps = 50  # Checkpoint interval.
        config.shared.num_grid_samples = 16  # Images per fixed-latent grid.
    elif variant == "smoke":  # Two tiny runs of a few steps each, for tests.
        config.models = ("dcgan", "srresnet")
        config.losses = ("wgan", "dragan")
        config.budget_images = 16
        config.base_configs.dcgan = "configs/dcgan.py:smoke"
        config.base_configs.srresnet = "configs/srresnet.py:smoke"
        config.base_configs.progan = "configs/progan.py:smoke"
        config.shared.data.resolution = 32
        config.eval.num_images = 16
        config.eval.grid_images = 4
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/experiment.py; known: cpu32, smoke")
    return config

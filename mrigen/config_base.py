"""The fields every model's config shares, and the `quick` and `smoke` variants.

configs/dcgan.py, configs/srresnet.py and configs/progan.py start from
`get_config()` and set only what is their own; the defaults here are the
paper's (256 px, batch 64, Adam). `shrink(config, variant)` turns any of them
into a CPU-sized run.
"""

import ml_collections

VARIANTS = ("quick", "smoke")


def get_config(model: str, loss: str) -> ml_collections.ConfigDict:
    """The shared fields at the paper's values for `model` trained with `loss`."""
    config = ml_collections.ConfigDict()
    config.model = model  # Architecture: dcgan, srresnet or progan.
    config.loss = loss  # gan, lsgan, wgan, wgan_gp, dragan (the paper) or r1.
    config.seed = 0  # Seeds initialization, batches, latents and penalties.

    config.data = ml_collections.ConfigDict()
    config.data.path = ""  # PNG folder, NIfTI/Analyze file or folder; "" = embedded MNI152 template.
    config.data.resolution = 256  # Side length of the training images (a power of two).
    config.data.include_segmentation = False  # Also read *_seg_* folders (OASIS masks).
    config.data.min_foreground = 0.05  # Volumes: drop axial slices with less brain than this fraction.
    config.data.cache_dir = "~/.cache/mrigen"  # Decoded datasets are cached here ("" = no cache).
    # Real images never trained on, the evaluation's floor: "" (none: an in-sample floor), a fraction
    # such as "0.2" (split off by subject), or a folder/file of images (docs/data.md).
    config.data.holdout = ""
    config.data.mirror = False  # Also train on each slice mirrored left-right (twice the images).
    # Classes of the slices, for conditional models: "" (none), "folders", "csv:PATH" or "slice_level:K"
    # (docs/data.md).
    config.data.labels = ""
    config.data.balanced = False  # With labels: batches hold the classes in turn, not as the data has them.

    config.arch = ml_collections.ConfigDict()
    config.arch.width = 1.0  # Multiplies every channel count (1.0 = the paper's model).
    config.arch.latent_dim = 256  # Size of z.

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64  # Global batch, split across all devices.
    config.train.learning_rate = 2e-4  # Adam step size (G and D).
    config.train.b1 = 0.5  # Adam beta1.
    config.train.b2 = 0.999  # Adam beta2.
    config.train.update_ratio = 1  # G updates after each D update, on the same z.
    config.train.real_target = 0.9  # One-sided label smoothing: target for real images (gan, lsgan, dragan).
    config.train.penalty_weight = 0.25  # lambda of the gradient penalty (wgan_gp, dragan).
    config.train.clip_value = 0.01  # wgan: critic weights clipped to [-c, c].
    config.train.drift = 0.0  # Weight of the drift term D(x)^2 in D's loss (ProGAN uses 0.001).
    config.train.compute_dtype = "float32"  # float32 or bfloat16 activations (parameters stay float32).
    # Beyond the paper (docs/improvements.md); off here, so the configs are the paper's recipe.
    config.train.ema_kimg = 0.0  # Half-life of the moving average of G's weights, in 1000s of images (0 = none).
    config.train.ema_rampup = 0.05  # Half-life at most this fraction of the images seen so far (0 = no ramp-up).
    config.train.augment = ""  # Augment every image D sees: "" (never), "fixed" (probability augment_p), "ada".
    config.train.augment_p = 0.0  # Probability of each transform ("fixed"), or its starting value ("ada").
    config.train.ada_target = 0.6  # "ada": p rises while the mean sign of D(real) is above this.
    config.train.ada_interval = 4  # "ada": steps between updates of p.
    config.train.ada_kimg = 100.0  # "ada": 1000s of images over which p can move by at most 1.
    config.train.r1_gamma = 1.0  # Loss r1: gamma of the penalty gamma/2 ||grad_x D(x_real)||^2.

    config.log_every_steps = 50  # One line in stats.jsonl (and the progress bar) per this many steps.
    config.sample_every_steps = 500  # Fixed-latent sample grid in samples/ every this many steps.
    config.checkpoint_every_steps = 1000  # Checkpoint interval (also saved at the end).
    config.keep_checkpoints = 3  # How many recent checkpoints to keep.
    config.num_grid_samples = 64  # Images in each sample grid.
    # Cheap metrics in stats.jsonl every this many steps (0 = off): rho, sigma, delta, MS-SSIM, spectrum distance.
    config.eval_every_steps = 0
    config.eval_num_images = 64  # Generated images those metrics use.
    return config


def shrink(config: ml_collections.ConfigDict, variant: str, file: str) -> ml_collections.ConfigDict:
    """`config` made small: `quick` (64x64, a CPU in minutes) or `smoke` (tiny, for tests).

    The length of the run (epochs) is each model's own and set by its file.
    Raises ValueError naming `file` for any other variant.
    """
    if variant == "quick":
        config.data.resolution = 64
        config.arch.width = 0.125
        config.arch.latent_dim = 64
        config.train.batch_size = 16
        config.log_every_steps = 10
        config.sample_every_steps = 100
        config.checkpoint_every_steps = 200
        # What works best at this budget (bench/quality.py, README "Beyond the paper"): samples from a
        # moving average of G, which smooths the speckle at almost no cost.
        config.train.ema_kimg = 0.5
        config.train.ema_rampup = 0.1
    elif variant == "smoke":
        config.data.resolution = 32
        config.arch.width = 1 / 32
        config.arch.latent_dim = 16
        config.train.batch_size = 8
        config.log_every_steps = 1
        config.sample_every_steps = 2
        config.checkpoint_every_steps = 2
        config.num_grid_samples = 8
    else:
        raise ValueError(f"unknown variant {variant!r} of {file}; known: {', '.join(VARIANTS)}")
    return config


# Every improvement beyond the paper switched off: the values of get_config(), and DCGAN's own upsampling.
PAPER_RECIPE = {"train.ema_kimg": 0.0, "train.augment": "", "train.augment_p": 0.0, "data.mirror": False,
                "arch.upsample": "transposed"}


def paper_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with every improvement of docs/improvements.md off, as in the paper (fields it lacks skipped).

    The loss is left as it is: R1 is a loss the experiment chooses, not a trick added to one.
    """
    for key, value in PAPER_RECIPE.items():
        section, leaf = key.split(".")
        if leaf in config[section]:
            config[section][leaf] = value
    return config

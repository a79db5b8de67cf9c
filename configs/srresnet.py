"""SRResNet + DRAGAN, the paper's second model (SPEC sections 2-4).

Run:
  python main.py --config=configs/srresnet.py --workdir=workdirs/srresnet
  python main.py --config=configs/srresnet.py:quick --workdir=workdirs/srresnet_quick   # 64x64, CPU
  python main.py --config=configs/srresnet.py --workdir=workdirs/srresnet --config.data.path=/data/keras_png_slices_data
Variants after the colon: `quick` (small, 64x64, CPU), `smoke` (tiny, tests).
"""

import ml_collections


def get_config(variant=None):
    config = ml_collections.ConfigDict()
    config.model = "srresnet"  # Architecture: dcgan, srresnet or progan.
    config.loss = "dragan"  # gan, lsgan, wgan, wgan_gp or dragan.
    config.seed = 0  # Seeds initialization, batches, latents and penalties.

    config.data = ml_collections.ConfigDict()
    config.data.path = ""  # PNG folder, NIfTI/Analyze file or folder; "" = embedded MNI152 template.
    config.data.resolution = 256  # Side length of the training images (a power of two, >= 16 for SRResNet).
    config.data.include_segmentation = False  # Also read *_seg_* folders (OASIS masks).
    config.data.min_foreground = 0.05  # Volumes: drop axial slices with less brain than this fraction.
    config.data.cache_dir = "~/.cache/mrigen"  # Decoded datasets are cached here ("" = no cache).

    config.arch = ml_collections.ConfigDict()
    config.arch.width = 1.0  # Multiplies every channel count (1.0 = the paper's model).
    config.arch.latent_dim = 256  # Size of z, drawn from N(0, I) and scaled to unit length.

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64  # Global batch, split across all devices.
    config.train.epochs = 60.0  # Passes over the training set.
    config.train.learning_rate = 2e-4  # Adam step size (G and D).
    config.train.b1 = 0.5  # Adam beta1.
    config.train.b2 = 0.999  # Adam beta2.
    config.train.update_ratio = 2  # G updates after each D update, on the same z.
    config.train.real_target = 0.9  # One-sided label smoothing: target for real images (gan, lsgan, dragan).
    config.train.penalty_weight = 0.25  # lambda of the gradient penalty (wgan_gp, dragan).
    config.train.clip_value = 0.01  # wgan: critic weights clipped to [-c, c].
    config.train.drift = 0.0  # Weight of the drift term D(x)^2 in D's loss (ProGAN uses 0.001).
    config.train.compute_dtype = "float32"  # float32 or bfloat16 activations (parameters stay float32).
    config.train.reset_optimizer_per_stage = True  # Growing models only: fresh Adam state per stage.

    config.log_every_steps = 50  # One line in stats.jsonl (and the progress bar) per this many steps.
    config.sample_every_steps = 500  # Fixed-latent sample grid in samples/ every this many steps.
    config.checkpoint_every_steps = 1000  # Checkpoint interval (also saved at the end).
    config.keep_checkpoints = 3  # How many recent checkpoints to keep.
    config.num_grid_samples = 64  # Images in each sample grid.
    config.eval_every_steps = 0  # Cheap metrics (rho, sigma, delta, MS-SSIM) in stats.jsonl every this many steps; 0 = off.
    config.eval_num_images = 64  # Generated images those metrics use.

    if variant == "quick":  # Small model at 64x64 for a CPU.
        config.data.resolution = 64
        config.arch.width = 0.125
        config.arch.latent_dim = 64
        config.train.batch_size = 16
        config.train.epochs = 20.0
        config.log_every_steps = 10
        config.sample_every_steps = 100
        config.checkpoint_every_steps = 200
    elif variant == "smoke":  # Tiny: a couple of steps, for tests.
        config.data.resolution = 32
        config.arch.width = 1 / 32
        config.arch.latent_dim = 16
        config.train.batch_size = 8
        config.train.epochs = 0.12
        config.log_every_steps = 1
        config.sample_every_steps = 2
        config.checkpoint_every_steps = 2
        config.num_grid_samples = 8
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/srresnet.py; known: quick, smoke")
    return config

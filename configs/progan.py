"""ProGAN + WGAN-GP, the paper's third model (SPEC sections 2-4).

Grows from 4x4 to data.resolution: stage 0 at 4x4, then per doubling a
fade-in stage and a stabilize stage (13 stages for 256 px), each lasting
train.epochs_per_stage passes over the training set.

Run:
  python main.py --config=configs/progan.py --workdir=workdirs/progan
  python main.py --config=configs/progan.py:quick --workdir=workdirs/progan_quick   # 4 -> 64 px, CPU
  python main.py --config=configs/progan.py --workdir=workdirs/progan --config.data.path=/data/keras_png_slices_data
Variants after the colon: `quick` (small, up to 64x64, CPU), `smoke` (tiny, 4 -> 16 px, tests).
"""

import ml_collections


def get_config(variant=None):
    config = ml_collections.ConfigDict()
    config.model = "progan"  # Architecture: dcgan, srresnet or progan.
    config.loss = "wgan_gp"  # gan, lsgan, wgan, wgan_gp or dragan.
    config.seed = 0  # Seeds initialization, batches, latents and penalties.

    config.data = ml_collections.ConfigDict()
    config.data.path = ""  # PNG folder, NIfTI/Analyze file or folder; "" = embedded MNI152 template.
    config.data.resolution = 256  # Final side length (a power of two from 4 to 256); sets the number of stages.
    config.data.include_segmentation = False  # Also read *_seg_* folders (OASIS masks).
    config.data.min_foreground = 0.05  # Volumes: drop axial slices with less brain than this fraction.
    config.data.cache_dir = "~/.cache/mrigen"  # Decoded datasets are cached here ("" = no cache).

    config.arch = ml_collections.ConfigDict()
    config.arch.width = 1.0  # Multiplies every channel count (1.0 = 512, 512, 256, 128, 64, 32, 16).
    config.arch.latent_dim = 512  # Size of z, drawn from N(0, I) and scaled to unit length.
    config.arch.pixel_norm = True  # Pixelwise feature normalization after each G conv (progan5.py has none).

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64  # Global batch, split across all devices.
    config.train.epochs_per_stage = 20.0  # Passes over the training set in each of the stages.
    config.train.epochs = 260.0  # Not read by ProGAN (its length is epochs_per_stage x stages); shown for reference.
    config.train.learning_rate = 1e-3  # Adam step size (G and D).
    config.train.b1 = 0.0  # Adam beta1.
    config.train.b2 = 0.999  # Adam beta2.
    config.train.update_ratio = 1  # G updates after each D update, on the same z.
    config.train.real_target = 0.9  # One-sided label smoothing: target for real images (gan, lsgan, dragan).
    config.train.penalty_weight = 0.25  # lambda of the gradient penalty (wgan_gp, dragan).
    config.train.clip_value = 0.01  # wgan: critic weights clipped to [-c, c].
    config.train.drift = 0.001  # Weight of the drift term D(x)^2 in D's loss.
    config.train.compute_dtype = "float32"  # float32 or bfloat16 activations (parameters stay float32).
    config.train.reset_optimizer_per_stage = True  # Fresh Adam state at each stage (as the original code).

    config.log_every_steps = 50  # One line in stats.jsonl (and the progress bar) per this many steps.
    config.sample_every_steps = 500  # Fixed-latent sample grid in samples/ every this many steps.
    config.checkpoint_every_steps = 1000  # Checkpoint interval (also saved at the end of every stage).
    config.keep_checkpoints = 3  # How many recent checkpoints to keep.
    config.num_grid_samples = 64  # Images in each sample grid.
    config.eval_every_steps = 0  # Cheap metrics (rho, sigma, delta, MS-SSIM) in stats.jsonl every this many steps; 0 = off.
    config.eval_num_images = 64  # Generated images those metrics use.

    if variant == "quick":  # Small model growing to 64x64 on a CPU.
        config.data.resolution = 64
        config.arch.width = 0.125
        config.arch.latent_dim = 64
        config.train.batch_size = 16
        config.train.epochs_per_stage = 4.0
        config.train.epochs = 36.0
        config.log_every_steps = 10
        config.sample_every_steps = 100
        config.checkpoint_every_steps = 200
    elif variant == "smoke":  # Tiny: 4 -> 16 px in 5 stages of a few steps, for tests.
        config.data.resolution = 16
        config.arch.width = 1 / 32
        config.arch.latent_dim = 16
        config.train.batch_size = 8
        config.train.epochs_per_stage = 0.18  # 3 steps per stage on the 137 MNI152 slices.
        config.train.epochs = 0.9
        config.log_every_steps = 1
        config.sample_every_steps = 2
        config.checkpoint_every_steps = 2
        config.num_grid_samples = 8
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/progan.py; known: quick, smoke")
    return config

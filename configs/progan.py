"""ProGAN + WGAN-GP, the paper's third model (docs/models.md, docs/losses.md).

Grows from 4x4 to data.resolution: stage 0 at 4x4, then per doubling a
fade-in stage and a stabilize stage (13 stages for 256 px), each lasting
train.epochs_per_stage passes over the training set.

Run:
  python main.py --config=configs/progan.py                 # the paper's run, into workdirs/progan
  python main.py --config=configs/progan.py:quick           # 4 -> 64 px, CPU, into workdirs/progan_quick
  python main.py --config=configs/progan.py --config.data.path=/data/keras_png_slices_data
Variants after the colon: `quick` (small, up to 64x64, CPU), `smoke` (tiny, 4 -> 16 px, tests).
The fields every model shares, with their comments, are in mrigen/config_base.py.
"""

from mrigen import config_base


def get_config(variant=None):
    config = config_base.get_config(model="progan", loss="wgan_gp")
    config.data.resolution = 256  # Final side length (a power of two from 4 to 256); sets the number of stages.
    config.arch.latent_dim = 512  # Size of z, drawn from N(0, I) and scaled to unit length.
    config.arch.pixel_norm = True  # Pixelwise feature normalization after each G conv (progan5.py has none).
    config.train.epochs_per_stage = 20.0  # Passes over the training set in each of the stages.
    config.train.learning_rate = 1e-3  # Adam step size (G and D).
    config.train.b1 = 0.0  # Adam beta1.
    config.train.update_ratio = 1  # G updates after each D update, on the same z.
    config.train.drift = 0.001  # Weight of the drift term D(x)^2 in D's loss.
    config.train.reset_optimizer_per_stage = True  # Fresh Adam state at each stage (as the original code).

    if variant:
        config_base.shrink(config, variant, "configs/progan.py")
    if variant == "quick":  # A small model growing to 64x64 on a CPU.
        config.train.epochs_per_stage = 4.0
    elif variant == "smoke":  # 4 -> 16 px in 5 stages of 3 steps on the 137 MNI152 slices.
        config.data.resolution = 16
        config.train.epochs_per_stage = 0.18
    return config

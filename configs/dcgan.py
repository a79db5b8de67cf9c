"""DCGAN + DRAGAN, the paper's first model (docs/models.md, docs/losses.md).

Run:
  python main.py --config=configs/dcgan.py                  # the paper's run, into workdirs/dcgan
  python main.py --config=configs/dcgan.py:quick            # 64x64, ~7 min on 2 CPU cores, into workdirs/dcgan_quick
  python main.py --config=configs/dcgan.py --config.data.path=/data/keras_png_slices_data
Variants after the colon: `quick` (small, 64x64, CPU), `smoke` (tiny, tests).
The fields every model shares, with their comments, are in mrigen/config_base.py.
"""

from mrigen import config_base


def get_config(variant=None):
    config = config_base.get_config(model="dcgan", loss="dragan")
    config.arch.latent_dim = 256  # Size of z, drawn from U(-1, 1).
    # How G doubles the resolution: "transposed" (the paper's stride-2 transposed convolutions) or
    # "resize" (nearest-neighbour x2, then a convolution: no checkerboard; docs/improvements.md).
    config.arch.upsample = "transposed"
    config.train.epochs = 60.0  # Passes over the training set.
    config.train.update_ratio = 3  # G updates after each D update, on the same z.

    if variant:
        config_base.shrink(config, variant, "configs/dcgan.py")
    if variant == "quick":  # Recognizable slices in about 7 minutes on a 2-core CPU (README).
        config.train.epochs = 60.0
        # What won at this budget (bench/quality.py, docs/improvements.md), with the moving average of G
        # of every :quick preset: resize upsampling (no checkerboard speckle) and DiffAugment (variety).
        config.arch.upsample = "resize"
        config.train.augment = "fixed"
        config.train.augment_p = 0.25
    elif variant == "smoke":  # A couple of steps, for tests.
        config.train.epochs = 0.12
    return config

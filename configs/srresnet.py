"""SRResNet + DRAGAN, the paper's second model (docs/models.md, docs/losses.md).

Run:
  python main.py --config=configs/srresnet.py               # the paper's run, into workdirs/srresnet
  python main.py --config=configs/srresnet.py:quick         # 64x64, CPU, into workdirs/srresnet_quick
  python main.py --config=configs/srresnet.py --config.data.path=/data/keras_png_slices_data
Variants after the colon: `quick` (small, 64x64, CPU), `smoke` (tiny, tests).
The fields every model shares, with their comments, are in mrigen/config_base.py.
"""

from mrigen import config_base


def get_config(variant=None):
    config = config_base.get_config(model="srresnet", loss="dragan")
    config.arch.latent_dim = 256  # Size of z, drawn from N(0, I) and scaled to unit length.
    config.arch.residual_blocks = 16  # Residual blocks of the generator (the paper's 16).
    config.train.epochs = 60.0  # Passes over the training set.
    config.train.update_ratio = 2  # G updates after each D update, on the same z.

    if variant:
        config_base.shrink(config, variant, "configs/srresnet.py")
    if variant == "quick":  # A small model at 64x64 for a CPU.
        config.train.epochs = 20.0
    elif variant == "smoke":  # A couple of steps, for tests.
        config.train.epochs = 0.12
        config.arch.residual_blocks = 2  # Each block is compiled anew; tests need the structure, not the depth.
    return config

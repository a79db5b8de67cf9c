"""mrigen command line: train, sample, evaluate or plot a brain-MRI GAN, or run the paper's experiment.

  python main.py --config=configs/dcgan.py          # trains into workdirs/dcgan (the default --workdir)
  python main.py --config=configs/dcgan.py:smoke --mode=sample   # samples the run in workdirs/dcgan_smoke
  python main.py --config=configs/dcgan.py --workdir=workdirs/dcgan
  python main.py --config=configs/dcgan.py --workdir=workdirs/dcgan --dry_run
  python main.py --config=configs/dcgan.py --workdir=workdirs/dcgan --mode=sample --num_samples=100 --out=samples
  python main.py --config=configs/dcgan.py --workdir=workdirs/dcgan --mode=sample --format=nifti --out=generated
  python main.py --config=configs/dcgan.py --workdir=workdirs/cond --mode=sample --per_class=100 --out=by_class
  python main.py --config=configs/dcgan.py --workdir=workdirs/dcgan --mode=evaluate
  python main.py --config=configs/dcgan.py --workdir=workdirs/dcgan --mode=plots
  python main.py --config=configs/dcgan.py --workdir=workdirs/cond --mode=utility   # a classifier on synthetic data
  python main.py --mode=experiment --config=configs/experiment.py --workdir=workdirs/experiment
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mrigen import cli, distributed
from mrigen.errors import UserError

config_flags.DEFINE_config_file("config", cli.DEFAULT_CONFIG, "Config file (file.py or file.py:variant).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and samples of this run "
                    "(default: workdirs/<config file name>[_<variant>] in the current folder).")
flags.DEFINE_enum("mode", "train", cli.MODES, "What to do with the run in --workdir.")
flags.DEFINE_integer("num_samples", 64, "--mode=sample: how many images to write.")
flags.DEFINE_string("out", None, "--mode=sample/interpolate/evaluate/plots/utility: output folder "
                    "(default: inside --workdir).")
flags.DEFINE_bool("overwrite", False, "--mode=sample: replace the images already in --out.")
flags.DEFINE_enum("format", "png", ["png", "oasis", "nifti"],
                  "--mode=sample: flat PNG files, the OASIS keras_png_slices layout, or NIfTI stacks.")
flags.DEFINE_integer("slices_per_volume", 32, "--mode=sample --format=nifti: slices stacked in each file.")
flags.DEFINE_integer("per_class", 0, "A run trained with data.labels: --mode=sample writes this many images of "
                     "each class, in OUT/<class>/ (0: --num_samples images, the classes in turn); --mode=utility "
                     "adds this many synthetic images of each class (0: as many as the largest real class has).")
flags.DEFINE_integer("sample_seed", 0, "--mode=sample/interpolate/evaluate: seed of the latents; --mode=utility: "
                     "the first seed (of the latents and of the classifier).")
flags.DEFINE_bool("raw_generator", False, "--mode=sample/interpolate/evaluate/utility: G's own weights, not their "
                  "moving average (runs with train.ema_kimg > 0 sample the average by default).")
flags.DEFINE_integer("utility_seeds", cli.UTILITY_SEEDS, "--mode=utility: seeds of each training set (at least 1); "
                     "the table gives their mean and standard deviation.")
flags.DEFINE_integer("utility_steps", cli.UTILITY_STEPS, "--mode=utility: training steps of each classifier "
                     "(at least 1).")
flags.DEFINE_integer("num_eval", 0, "--mode=evaluate: generated images (0: as many as the held-out real half).")
flags.DEFINE_string("eval_images", None, "--mode=evaluate: a folder of images to evaluate instead of --workdir's "
                    "model (sub-folders named as the data's classes: each class too).")
flags.DEFINE_bool("dry_run", False, "--mode=train/experiment: print the resolved config, the data found and "
                  "the parameter counts, then exit without training.")
flags.DEFINE_string("coordinator_address", None, "Several processes: host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "Several processes: how many take part.")
flags.DEFINE_integer("process_id", None, "Several processes: this one's index, 0 .. num_processes - 1.")
flags.DEFINE_integer("distributed_timeout", 120, "Several processes: seconds to wait for the others.")
FLAGS = flags.FLAGS


def main(argv):
    del argv  # parse_flags refused any argument that is not a flag
    logging.set_verbosity(logging.INFO)
    cli.configure_logging()
    try:
        distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               FLAGS.distributed_timeout)
        cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, FLAGS)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code if hasattr(e, "exit_code") else 2
        if isinstance(e, distributed.PeerLost):  # JAX's shutdown at exit would wait for the lost process
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        sys.exit(code)


def parse_flags(argv):
    """absl's parser, with bad flags and config files reported on one line (exit 2) instead of a traceback."""
    try:
        return cli.parse_flags(FLAGS, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

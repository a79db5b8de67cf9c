"""The training state: one pytree holding everything a run needs to continue.

The state is a plain dict:
  g, d:          the networks' variables ({'params': ..., 'batch_stats': ...})
  g_opt, d_opt:  optimizer states
  step:          iterations done (one D update + r G updates each)
  images_seen:   real images shown to D so far
  stage, alpha:  ProGAN's growth stage and fade-in blend (0 and 1 elsewhere)
  rng:           the run's base PRNG key; per-step keys fold the step into it
and, only when the config asks for them (so the paper's runs keep their format):
  g_ema:         moving average of G's variables (train.ema_kimg > 0)
  augment_p:     probability of each augmentation of D's inputs (train.augment set)
  ada_sign_sum:  sum of sign(D(real)) since ADA's last update of p (train.augment = "ada")
Checkpoints hold exactly this tree, so a resumed run continues bit for bit.
"""

import logging
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mrigen import checkpoint, parallel
from mrigen.errors import UserError
from mrigen.models.base import Architecture, Stage

State = dict


def create_optimizer(train_config) -> optax.GradientTransformation:
    """Adam as in the paper (TensorFlow's b2 = 0.999, eps = 1e-8)."""
    return optax.adam(train_config.learning_rate, b1=train_config.b1, b2=train_config.b2, eps=1e-8)


def init_variables(module, key: jax.Array, example: jax.Array, labels=None) -> dict:
    """The module's variables for inputs shaped like `example` (alpha 1, train mode); labels for a conditional one."""
    if labels is None:  # The unconditional networks, called exactly as before labels existed.
        return dict(jax.jit(lambda k, x: module.init(k, x, 1.0, train=True))(key, example))
    return dict(jax.jit(lambda k, x, y: module.init(k, x, 1.0, train=True, labels=y))(key, example, labels))


def initial_state(arch: Architecture, stage: Stage, optimizer, seed: int, batch_size: int,
                  train_config=None) -> State:
    """A fresh state for `stage`: new weights from `seed`, step 0.

    train_config: the config's train fields; they add g_ema, augment_p and
    ada_sign_sum when the run uses an EMA or augmentation (None: neither).
    """
    key_g, key_d, key_run = jax.random.split(jax.random.PRNGKey(seed), 3)
    group = min(4, batch_size)  # D's minibatch layer needs a whole group.
    z = jnp.zeros((group, arch.latent_dim), jnp.float32)
    x = jnp.zeros((group, stage.resolution, stage.resolution, 1), jnp.float32)
    labels = jnp.zeros((group,), jnp.int32) if arch.num_classes else None
    g = init_variables(arch.generator(stage), key_g, z, labels)
    d = init_variables(arch.discriminator(stage), key_d, x, labels)
    state = {
        "g": g,
        "d": d,
        "g_opt": optimizer.init(g["params"]),
        "d_opt": optimizer.init(d["params"]),
        "step": jnp.int32(0),
        "images_seen": jnp.int32(0),
        "stage": jnp.int32(stage.index),
        "alpha": jnp.float32(0.0 if stage.fade_in else 1.0),
        "rng": key_run,
    }
    if train_config is not None and train_config.ema_kimg > 0:
        state["g_ema"] = jax.tree.map(jnp.copy, g)
    if train_config is not None and train_config.augment:
        state["augment_p"] = jnp.float32(train_config.augment_p)
    if train_config is not None and train_config.augment == "ada":
        state["ada_sign_sum"] = jnp.float32(0.0)
    return state


def ema_beta(images_seen: jax.Array, batch_size: int, train_config) -> jax.Array:
    """The weight of the old average in this step's EMA update (StyleGAN2-ADA's schedule).

    The half-life is train.ema_kimg thousand images, at most ema_rampup times
    the images seen before this step, so the average forgets the random
    initialization quickly; beta = 0.5 ** (batch / half-life).
    """
    half_life = jnp.float32(train_config.ema_kimg * 1000.0)
    if train_config.ema_rampup > 0:
        half_life = jnp.minimum(half_life, images_seen.astype(jnp.float32) * train_config.ema_rampup)
    return jnp.power(0.5, batch_size / jnp.maximum(half_life, 1e-8))


def ema_update(average, current, beta: jax.Array):
    """beta * average + (1 - beta) * current, leaf by leaf (weights and batch-norm statistics)."""
    return jax.tree.map(lambda a, c: (beta * a + (1.0 - beta) * c).astype(a.dtype), average, current)


def generator_variables(state: State, ema: bool = True) -> dict:
    """G's variables to sample from: the moving average where the run keeps one (ema), else G itself."""
    return state["g_ema"] if ema and "g_ema" in state else state["g"]


def carry_over(fresh: Any, previous: Any) -> Any:
    """`fresh` with every leaf whose path also exists in `previous` taken from `previous`.

    Used when ProGAN grows: new blocks keep their fresh weights, existing
    blocks carry over unchanged.
    """
    old = {jax.tree_util.keystr(path): leaf
           for path, leaf in jax.tree_util.tree_flatten_with_path(previous)[0]}
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: old.get(jax.tree_util.keystr(path), leaf), fresh)


def grow_state(state: State, arch: Architecture, stage: Stage, optimizer, config) -> State:
    """The state moved into `stage`: new keys added, existing weights unchanged."""
    fresh = initial_state(arch, stage, optimizer, config.seed, config.train.batch_size, config.train)
    grown = dict(state)
    grown["g"] = carry_over(fresh["g"], state["g"])
    if "g_ema" in state:
        grown["g_ema"] = carry_over(fresh["g_ema"], state["g_ema"])
    grown["d"] = carry_over(fresh["d"], state["d"])
    if config.train.reset_optimizer_per_stage:
        grown["g_opt"], grown["d_opt"] = fresh["g_opt"], fresh["d_opt"]
    else:
        grown["g_opt"] = carry_over(fresh["g_opt"], state["g_opt"])
        grown["d_opt"] = carry_over(fresh["d_opt"], state["d_opt"])
    grown["stage"], grown["alpha"] = fresh["stage"], fresh["alpha"]
    return grown


def restore_or_init(ckpt: checkpoint.Checkpointer, arch: Architecture, optimizer, config,
                    resume: bool = True) -> State:
    """The latest checkpoint's state if there is one, else a fresh state.

    A checkpoint of another model or resolution, or a damaged one, raises
    UserError: a run never silently starts over in a workdir that holds one.
    resume: False when the caller only reads the state (sampling, evaluation):
    it logs "Loaded checkpoint N" rather than "Resuming from".
    """
    first = arch.stages[0]
    latest = ckpt.latest_step()
    if latest is None:
        return initial_state(arch, first, optimizer, config.seed, config.train.batch_size, config.train)
    meta = ckpt.read_meta(latest)
    stage = _checkpoint_stage(meta, arch, f"{ckpt.directory}: checkpoint {latest}")
    target = jax.eval_shape(lambda: initial_state(arch, stage, optimizer, config.seed,
                                                  config.train.batch_size, config.train))
    # Replicated over this run's devices, whatever topology wrote the checkpoint.
    sharding = parallel.replicated(parallel.data_mesh())
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), target)
    if resume:
        logging.info("Resuming from %s, step %d (stage %d)", ckpt.directory, latest, stage.index)
    else:
        logging.info("Loaded checkpoint %d of %s (stage %d)", latest, ckpt.directory, stage.index)
    return ckpt.restore(latest, target)


def _checkpoint_stage(meta: dict, arch: Architecture, name: str) -> Stage:
    """The stage a checkpoint's record names; refuses one written by another model."""
    new_workdir = "use a new --workdir to start a new run"
    if meta.get("model", arch.name) != arch.name:
        raise UserError(f"{name} is of model {meta['model']!r}, not {arch.name!r}; {new_workdir}")
    stage_index = int(meta.get("stage", 0))
    if not 0 <= stage_index < len(arch.stages):
        raise UserError(f"{name} is at stage {stage_index}, which this model does not have; {new_workdir}")
    stage = arch.stages[stage_index]
    classes = tuple(meta.get("classes", ()))
    if classes != arch.class_names:
        described = lambda names: f"the classes {', '.join(names)}" if names else "no labels"  # noqa: E731
        raise UserError(f"{name} was trained with {described(classes)}, this config's data has "
                        f"{described(arch.class_names)}; {new_workdir}")
    if meta.get("resolution", stage.resolution) != stage.resolution:
        raise UserError(f"{name} is at {meta['resolution']}x{meta['resolution']} px, this config at "
                        f"{stage.resolution}x{stage.resolution}; {new_workdir}")
    return stage


def checkpoint_meta(state: State, arch: Architecture) -> dict:
    """What a checkpoint records beside the state; a conditional run's class names too (for sampling)."""
    stage = arch.stages[int(state["stage"])]
    meta = {"step": int(state["step"]), "images_seen": int(state["images_seen"]),
            "stage": stage.index, "resolution": stage.resolution, "model": arch.name}
    if arch.class_names:
        meta["classes"] = list(arch.class_names)
    return meta


def checkpoint_classes(ckpt: checkpoint.Checkpointer) -> tuple:
    """The class names the latest checkpoint was trained with; () for an unconditional run or none saved."""
    latest = ckpt.latest_step()
    return () if latest is None else tuple(ckpt.read_meta(latest).get("classes", ()))

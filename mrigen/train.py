"""Training: the jitted GAN step, the stage schedule, and the loop."""

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrigen import checkpoint, data, images, losses, models, parallel, run_config, sampling
from mrigen.state import State, checkpoint_meta, create_optimizer, grow_state, restore_or_init
from mrigen.errors import UserError
from mrigen.models.base import Architecture, Stage, real_images_for_stage


# ---------------------------------------------------------------- the step


def make_train_step(arch: Architecture, stage: Stage, schedule_start: int, stage_steps: int,
                    loss: losses.Loss, optimizer, train_config, num_images: int,
                    mesh) -> Callable[[State, jax.Array], tuple[State, dict]]:
    """The jitted iteration for one stage: one D update, then r G updates on the same z.

    Returns step(state, dataset_u8 [N, R, R, 1]) -> (state, metrics). The
    batch is drawn from the device-resident dataset inside the step and split
    across the mesh's devices; parameters are replicated, so gradients and
    batch statistics are averaged over the global batch.
    """
    generator, discriminator = arch.generator(stage), arch.discriminator(stage)
    tc = train_config
    batch_size = tc.batch_size
    batch_sharding = parallel.batch_sharded(mesh)

    def alpha_at(step):
        if not stage.fade_in:
            return jnp.float32(1.0)
        return jnp.clip((step - schedule_start).astype(jnp.float32) / stage_steps, 0.0, 1.0)

    def run_d(d_vars, x, alpha):
        logits, updated = discriminator.apply(d_vars, x, alpha, train=True, mutable=["batch_stats"])
        return logits, {**d_vars, **updated}

    def run_g(g_vars, z, alpha):
        fake, updated = generator.apply(g_vars, z, alpha, train=True, mutable=["batch_stats"])
        return fake, {**g_vars, **updated}

    def step_fn(state: State, dataset_u8: jax.Array):
        step = state["step"]
        alpha = alpha_at(step)
        key_epochs = jax.random.fold_in(state["rng"], 0)
        key_z, key_penalty = jax.random.split(jax.random.fold_in(jax.random.fold_in(state["rng"], 1), step))

        indices = data.epoch_batch_indices(key_epochs, step, num_images, batch_size)
        real = jax.lax.with_sharding_constraint(data.to_float(dataset_u8[indices]), batch_sharding)
        real = real_images_for_stage(real, stage, alpha)
        z = jax.lax.with_sharding_constraint(arch.sample_latent(key_z, batch_size), batch_sharding)
        fake, _ = run_g(state["g"], z, alpha)

        def d_objective(d_params):
            d_vars = {**state["d"], "params": d_params}
            real_logits, d_vars = run_d(d_vars, real, alpha)
            fake_logits, d_vars = run_d(d_vars, fake, alpha)
            d_loss = loss.d_loss(real_logits, fake_logits, tc.real_target)
            terms = {"d_adversarial": d_loss, "real_logit": jnp.mean(real_logits),
                     "fake_logit": jnp.mean(fake_logits)}
            if loss.penalty_points is not None:
                points = loss.penalty_points(key_penalty, real, fake)
                penalty = losses.gradient_penalty(lambda x: run_d(d_vars, x, alpha)[0], points)
                d_loss = d_loss + tc.penalty_weight * penalty
                terms["penalty"] = penalty
            if tc.drift:
                drift = jnp.mean(jnp.square(real_logits))
                d_loss = d_loss + tc.drift * drift
                terms["drift"] = drift
            return d_loss, (d_vars, terms)

        (d_loss, (d_vars, terms)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
            state["d"]["params"])
        d_updates, d_opt = optimizer.update(d_grads, state["d_opt"], state["d"]["params"])
        d_params = optax.apply_updates(state["d"]["params"], d_updates)
        if loss.clips_critic:
            d_params = losses.clip_weights(d_params, tc.clip_value)
        d_vars = {**d_vars, "params": d_params}

        def g_objective(g_params, g_vars):
            fake, g_vars = run_g({**g_vars, "params": g_params}, z, alpha)
            fake_logits, _ = run_d(d_vars, fake, alpha)
            return loss.g_loss(fake_logits, tc.real_target), g_vars

        def g_update(_, carry):
            g_vars, g_opt, _ = carry
            (g_loss, g_vars_new), grads = jax.value_and_grad(g_objective, has_aux=True)(
                g_vars["params"], g_vars)
            updates, g_opt = optimizer.update(grads, g_opt, g_vars["params"])
            g_vars = {**g_vars_new, "params": optax.apply_updates(g_vars["params"], updates)}
            return g_vars, g_opt, g_loss

        # Unrolled: XLA:CPU ran the same updates ~5x slower inside a fori_loop.
        carry = (state["g"], state["g_opt"], jnp.float32(0.0))
        for i in range(tc.update_ratio):
            carry = g_update(i, carry)
        g_vars, g_opt, g_loss = carry

        new_state = {
            **state,
            "g": g_vars, "d": d_vars, "g_opt": g_opt, "d_opt": d_opt,
            "step": step + 1,
            "images_seen": state["images_seen"] + batch_size,
            "alpha": alpha,
        }
        metrics = {"d_loss": d_loss, "g_loss": g_loss, "alpha": alpha, **terms}
        return new_state, metrics

    return jax.jit(step_fn, donate_argnums=0, out_shardings=parallel.replicated(mesh))


# ---------------------------------------------------------------- schedule


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stage placed on the run's step axis: steps [start, start + steps)."""

    stage: Stage
    start: int
    steps: int

    @property
    def end(self) -> int:
        return self.start + self.steps


def schedule(arch: Architecture, num_images: int, batch_size: int) -> list[Phase]:
    """Every stage's step range; a stage of e epochs lasts e * N / batch steps (at least 1)."""
    phases, start = [], 0
    for stage in arch.stages:
        steps = max(1, int(round(stage.epochs * num_images / batch_size)))
        phases.append(Phase(stage, start, steps))
        start += steps
    return phases


# ---------------------------------------------------------------- the loop


def train(config, workdir: str) -> State:
    """Trains `config`'s model in `workdir`, resuming from its latest checkpoint.

    Writes config.json, stats.jsonl, sample grids under samples/, a grid of
    real images (reals.png) and checkpoints under checkpoints/. Returns the
    final state.
    """
    run_config.validate(config)
    arch = models.build(config)
    loss = losses.get(config.loss)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    run_config.prepare_workdir(workdir, config)

    dataset = data.load_dataset(config.data.path, config.data.resolution,
                                config.data.include_segmentation, config.data.min_foreground,
                                config.data.cache_dir)
    if len(dataset) < config.train.batch_size:
        raise UserError(f"train.batch_size: {config.train.batch_size} is larger than the "
                        f"{len(dataset)} images found in {dataset.source}")
    logging.info("Data: %d slices at %dx%d from %s", len(dataset), dataset.resolution,
                 dataset.resolution, dataset.source)

    optimizer = create_optimizer(config.train)
    ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
    state = restore_or_init(ckpt, arch, optimizer, config)
    replicated = parallel.replicated(mesh)
    state = jax.device_put(state, replicated)
    dataset_on_device = jax.device_put(dataset.images, replicated)

    phases = schedule(arch, len(dataset), config.train.batch_size)
    total_images = phases[-1].end * config.train.batch_size
    reals_path = os.path.join(workdir, "reals.png")
    if not os.path.exists(reals_path):
        images.save_grid(data.to_float(dataset.images[:config.num_grid_samples]), reals_path)
    grid_z = arch.sample_latent(jax.random.PRNGKey(config.seed + 1), config.num_grid_samples)

    progress = ProgressReporter(workdir, total_images, int(state["images_seen"]))
    try:
        for phase in phases:
            if int(state["step"]) >= phase.end:
                continue
            if int(state["stage"]) < phase.stage.index:
                state = jax.device_put(grow_state(state, arch, phase.stage, optimizer, config), replicated)
            state = _train_phase(state, phase, arch, loss, optimizer, config, len(dataset), mesh,
                                 dataset_on_device, ckpt, progress, grid_z, workdir)
        final_step = int(state["step"])
        if ckpt.latest_step() != final_step:
            ckpt.save(final_step, state, checkpoint_meta(state, arch), force=True)
        _save_sample_grid(state, arch, grid_z, workdir)
    finally:
        progress.close()
        ckpt.close()
    return state


def _train_phase(state, phase: Phase, arch, loss, optimizer, config, num_images, mesh,
                 dataset_on_device, ckpt, progress, grid_z, workdir) -> State:
    stage = phase.stage
    step_fn = make_train_step(arch, stage, phase.start, phase.steps, loss, optimizer,
                              config.train, num_images, mesh)
    progress.stage_label = (f"stage {stage.index + 1}/{len(arch.stages)} {stage.resolution}px"
                            if len(arch.stages) > 1 else "")
    step = int(state["step"])
    while step < phase.end:
        state, metrics = step_fn(state, dataset_on_device)
        step += 1
        progress.advance(config.train.batch_size)
        last = step == phase.end
        log = step % config.log_every_steps == 0 or last
        save = step % config.checkpoint_every_steps == 0 or (last and len(arch.stages) > 1)
        if log or save:  # Never log or save a diverged state.
            values = check_finite(step, jax.device_get(metrics))
        if log:
            progress.log(step, stage, values)
        if step % config.sample_every_steps == 0:
            _save_sample_grid(state, arch, grid_z, workdir)
        if save:
            ckpt.save(step, state, checkpoint_meta(state, arch))
    return state


class DivergedError(UserError):
    """A loss or penalty became NaN or Inf."""


def check_finite(step: int, metrics: dict) -> dict:
    """The metrics as floats; raises DivergedError naming the step and quantity if any is not finite."""
    values = {k: float(v) for k, v in metrics.items()}
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        raise DivergedError(f"training diverged at step {step}: {', '.join(bad)} is not finite; "
                            f"the last good checkpoint is kept")
    return values


def _save_sample_grid(state: State, arch: Architecture, grid_z: jax.Array, workdir: str) -> None:
    stage = arch.stages[int(state["stage"])]
    fake = sampling.generate(arch.generator(stage), state["g"], grid_z, state["alpha"])
    images.save_grid(np.asarray(fake), os.path.join(workdir, "samples", f"step_{int(state['step']):08d}.png"))


class ProgressReporter:
    """The progress bar and stats.jsonl: images seen, img/s, losses, ETA."""

    def __init__(self, workdir: str, total_images: int, images_seen: int):
        from tqdm import tqdm

        self.stats_path = os.path.join(workdir, "stats.jsonl")
        self.bar = tqdm(total=total_images, initial=images_seen, unit="img", unit_scale=True,
                        dynamic_ncols=True, mininterval=1.0)
        self.stage_label = ""
        self._last_time, self._last_images = time.perf_counter(), images_seen
        self._start = time.time()

    def advance(self, batch_size: int) -> None:
        self.bar.update(batch_size)

    def log(self, step: int, stage: Stage, metrics: dict) -> None:
        now, seen = time.perf_counter(), self.bar.n
        rate = (seen - self._last_images) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_images = now, seen
        record = {"step": step, "images_seen": int(seen), "stage": stage.index,
                  "resolution": stage.resolution, "img_per_sec": rate,
                  "elapsed_sec": time.time() - self._start, **metrics}
        with open(self.stats_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        postfix = {"D": f"{metrics['d_loss']:.3f}", "G": f"{metrics['g_loss']:.3f}", "img/s": f"{rate:.0f}"}
        if self.stage_label:
            postfix["stage"] = f"{self.stage_label} a={metrics['alpha']:.2f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()

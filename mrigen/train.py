"""Training: the jitted GAN step, the stage schedule, and the loop."""

import contextlib
import dataclasses
import logging
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrigen import (augment, checkpoint, data, distributed, evaluation, holdout, images, labels, losses, models,
                    parallel, plots, run_config, sampling, step_cache, workdir_lock)
from mrigen.divergence import DivergedError, check_finite  # noqa: F401 (DivergedError: part of train's API)
from mrigen.errors import UserError, WriteError
from mrigen.progress import ProgressReporter
from mrigen.signals import Interrupted, StopSignals
from mrigen.state import (State, checkpoint_meta, create_optimizer, ema_beta, ema_update, generator_variables,
                          grow_state, restore_or_init)
from mrigen.models.base import Architecture, Stage, real_images_for_stage


# ---------------------------------------------------------------- the step


def make_train_step(arch: Architecture, stage: Stage, schedule_start: int, stage_steps: int,
                    loss: losses.Loss, optimizer, train_config, num_images: int,
                    mesh) -> Callable[[State, jax.Array], tuple[State, dict]]:
    """The jitted iteration for one stage: one D update, then r G updates on the same z.

    Returns step(state, dataset_u8 [N, R, R, 1]) -> (state, metrics). The
    batch is drawn from the device-resident dataset inside the step and split
    across the mesh's devices; parameters are replicated, so gradients and
    batch statistics are averaged over the global batch. For a conditional
    `arch` the dataset is `labels.device_data`'s dict: the batch's labels are those
    of its images (drawn class-balanced when it holds a class table), and G
    makes fakes of the same labels.
    """
    generator, discriminator = arch.generator(stage), arch.discriminator(stage)
    tc = train_config
    batch_size = tc.batch_size
    batch_sharding = parallel.batch_sharded(mesh)

    def alpha_at(step):
        if not stage.fade_in:
            return jnp.float32(1.0)
        return jnp.clip((step - schedule_start).astype(jnp.float32) / stage_steps, 0.0, 1.0)

    def conditioned(y):
        return {} if y is None else {"labels": y}  # Unconditional networks are called as they always were.

    def run_d(d_vars, x, alpha, y):
        logits, updated = discriminator.apply(d_vars, x, alpha, train=True, mutable=["batch_stats"],
                                              **conditioned(y))
        return logits, {**d_vars, **updated}

    def run_g(g_vars, z, alpha, y):
        fake, updated = generator.apply(g_vars, z, alpha, train=True, mutable=["batch_stats"], **conditioned(y))
        return fake, {**g_vars, **updated}

    def augmented(x, key, p):
        return augment.augment(key, x, p) if tc.augment else x

    def step_fn(state: State, dataset):
        step = state["step"]
        alpha = alpha_at(step)
        key_epochs = jax.random.fold_in(state["rng"], 0)
        key_z, key_penalty = jax.random.split(jax.random.fold_in(jax.random.fold_in(state["rng"], 1), step))
        key_aug_real, key_aug_fake, key_aug_g = jax.random.split(
            jax.random.fold_in(jax.random.fold_in(state["rng"], 2), step), 3)
        p = state.get("augment_p")

        dataset_u8, y = (dataset["images"], dataset["labels"]) if isinstance(dataset, dict) else (dataset, None)
        if isinstance(dataset, dict) and "classes" in dataset:
            indices = labels.balanced_batch_indices(key_epochs, step, dataset["classes"], batch_size)
        else:
            indices = data.epoch_batch_indices(key_epochs, step, num_images, batch_size)
        real = jax.lax.with_sharding_constraint(data.to_float(dataset_u8[indices]), batch_sharding)
        real = real_images_for_stage(real, stage, alpha)
        if y is not None:
            y = jax.lax.with_sharding_constraint(y[indices], batch_sharding)
        z = jax.lax.with_sharding_constraint(arch.sample_latent(key_z, batch_size), batch_sharding)
        fake, _ = run_g(state["g"], z, alpha, y)

        def d_objective(d_params):
            d_vars = {**state["d"], "params": d_params}
            real_logits, d_vars = run_d(d_vars, augmented(real, key_aug_real, p), alpha, y)
            fake_logits, d_vars = run_d(d_vars, augmented(fake, key_aug_fake, p), alpha, y)
            d_loss = loss.d_loss(real_logits, fake_logits, tc.real_target)
            terms = {"d_adversarial": d_loss, "real_logit": jnp.mean(real_logits),
                     "fake_logit": jnp.mean(fake_logits), "real_sign": jnp.mean(jnp.sign(real_logits))}
            if loss.penalty is not None:
                # D as the loss sees it: through the real images' augmentation, the labels fixed.
                d_fn = lambda x: run_d(d_vars, augmented(x, key_aug_real, p), alpha, y)[0]  # noqa: E731
                penalty = loss.penalty(d_fn, key_penalty, real, fake)
                d_loss = d_loss + loss.penalty_weight(tc) * penalty
                terms["penalty"] = penalty
            if tc.drift:
                drift = jnp.mean(jnp.square(real_logits))
                d_loss = d_loss + tc.drift * drift
                terms["drift"] = drift
            return d_loss, (d_vars, terms)

        (d_loss, (d_vars, terms)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
            state["d"]["params"])
        terms["d_grad_norm"] = optax.tree.norm(d_grads)
        d_updates, d_opt = optimizer.update(d_grads, state["d_opt"], state["d"]["params"])
        d_params = optax.apply_updates(state["d"]["params"], d_updates)
        if loss.clips_critic:
            d_params = losses.clip_weights(d_params, tc.clip_value)
        d_vars = {**d_vars, "params": d_params}

        def g_objective(g_params, g_vars):
            fake, g_vars = run_g({**g_vars, "params": g_params}, z, alpha, y)
            fake_logits, _ = run_d(d_vars, augmented(fake, key_aug_g, p), alpha, y)
            return loss.g_loss(fake_logits, tc.real_target), g_vars

        def g_update(_, carry):
            g_vars, g_opt, _, grad_norm = carry
            (g_loss, g_vars_new), grads = jax.value_and_grad(g_objective, has_aux=True)(
                g_vars["params"], g_vars)
            updates, g_opt = optimizer.update(grads, g_opt, g_vars["params"])
            g_vars = {**g_vars_new, "params": optax.apply_updates(g_vars["params"], updates)}
            # jnp.maximum propagates NaN, so a NaN in any of the r updates is reported.
            return g_vars, g_opt, g_loss, jnp.maximum(grad_norm, optax.tree.norm(grads))

        # Unrolled: XLA:CPU ran the same updates ~5x slower inside a fori_loop.
        carry = (state["g"], state["g_opt"], jnp.float32(0.0), jnp.float32(0.0))
        for i in range(tc.update_ratio):
            carry = g_update(i, carry)
        g_vars, g_opt, g_loss, g_grad_norm = carry

        new_state = {
            **state,
            "g": g_vars, "d": d_vars, "g_opt": g_opt, "d_opt": d_opt,
            "step": step + 1,
            "images_seen": state["images_seen"] + batch_size,
            "alpha": alpha,
        }
        if "g_ema" in state:
            beta = ema_beta(state["images_seen"], batch_size, tc)
            new_state["g_ema"] = ema_update(state["g_ema"], g_vars, beta)
        if tc.augment == "ada":
            new_state["augment_p"], new_state["ada_sign_sum"] = augment.ada_step(
                p, state["ada_sign_sum"] + terms["real_sign"] * batch_size, step + 1, batch_size, tc)
        if tc.augment:
            terms["augment_p"] = new_state["augment_p"]
        # A finite norm means every new weight is finite: checking the metrics
        # vouches for the weights a checkpoint would hold.
        metrics = {"d_loss": d_loss, "g_loss": g_loss, "alpha": alpha, **terms,
                   "g_grad_norm": g_grad_norm,
                   "d_param_norm": optax.tree.norm(d_params),
                   "g_param_norm": optax.tree.norm(g_vars["params"])}
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


@dataclasses.dataclass
class Run:
    """What a training run holds beside its state: the parts every step of the loop uses."""

    config: object
    workdir: str
    arch: Architecture
    loss: losses.Loss
    optimizer: object
    mesh: object
    dataset: data.Dataset
    dataset_on_device: jax.Array
    checkpointer: checkpoint.Checkpointer
    progress: ProgressReporter
    stop: StopSignals
    evaluator: evaluation.TrainingEvaluator
    grid_z: jax.Array
    grid_labels: Optional[jax.Array] = None  # A conditional model's grid: one row per class.

    @property
    def writes(self) -> bool:
        """Process 0 writes grids, stats and plots; the others only compute."""
        return self.progress.writes


def train(config, workdir: str, time_budget_s: Optional[float] = None) -> State:
    """Trains `config`'s model in `workdir`, resuming from its latest checkpoint.

    Writes config.json, stats.jsonl, TensorBoard events, sample grids under
    samples/, a grid of real images (reals.png), checkpoints under
    checkpoints/ and, at the end, the plots of mrigen.plots. Returns the
    final state. Everything that can be refused (config, workdir, data, the
    checkpoint to resume) is checked before the first write to the workdir;
    process 0 holds the workdir's lock (mrigen.workdir_lock) from then to the
    end. time_budget_s: stop after the first step that ends this many
    seconds after training began, with a checkpoint (the state returned then
    falls short of the schedule). Raises DivergedError on a NaN/Inf,
    Interrupted after SIGINT/SIGTERM, WriteError (naming the file, and the
    checkpoint to resume from) when a write fails. In a multi-process run a
    signal to any process, or any process's time budget, stops every process
    after the same step.
    """
    run_config.validate(config)
    arch = models.build(config)
    loss = losses.get(config.loss)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    run_config.check_workdir(workdir, config)
    main = distributed.is_main_process()
    workdir_lock.check_free(workdir, enabled=main)  # Before the data loads: a workdir in use is refused at once.
    with StopSignals() as stop:
        split = holdout.load(config.data)
        dataset = data.mirrored(split.training) if config.data.mirror else split.training
        if len(dataset) < config.train.batch_size:
            raise UserError(f"train.batch_size: {config.train.batch_size} is larger than the "
                            f"{len(dataset)} images found in {dataset.source}")
        logging.info("Data: %d slices at %dx%d from %s%s", len(dataset), dataset.resolution,
                     dataset.resolution, dataset.source, f"; held out: {split.note}" if split.note else "")
        if dataset.class_names:
            arch = models.build(config, dataset.class_names)
            logging.info("Classes (%s): %s", config.data.labels, ", ".join(
                f"{name} {count}" for name, count in zip(dataset.class_names, np.bincount(dataset.labels))))
        with _resume_advice_on_write_errors(workdir), workdir_lock.held(workdir, enabled=main):
            state, progress = _restore_and_train(config, workdir, arch, loss, mesh, split, dataset, stop,
                                                 time_budget_s)
            if main:
                _write_plots(workdir)
    if main:
        print(progress.summary(workdir), flush=True)
    return state


def _restore_and_train(config, workdir, arch, loss, mesh, split, dataset, stop, time_budget_s):
    """The latest checkpoint (or a new state) trained to the end of the schedule; returns it and the progress."""
    optimizer = create_optimizer(config.train)
    ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints, writer=True)
    try:
        state = restore_or_init(ckpt, arch, optimizer, config)
        distributed.wait_for_all(f"restored step {int(state['step'])}")  # Then the first collective is near.
        early = distributed.agreed_stop(stop.received, False)
        if early.signum is not None:
            raise Interrupted(f"stopped by {early.source} before the first step; nothing to save",
                              early.signum)
        if distributed.is_main_process():
            run_config.write_config(workdir, config)
        phases = schedule(arch, len(dataset), config.train.batch_size)
        replicated = parallel.replicated(mesh)
        progress = ProgressReporter(workdir, phases[-1].end * config.train.batch_size,
                                    int(state["images_seen"]), int(state["step"]), time_budget_s,
                                    writes=distributed.is_main_process())
        try:
            grid_z, grid_labels = sampling.grid_latents(arch, jax.random.PRNGKey(config.seed + 1),
                                                        config.num_grid_samples)
            run = Run(config, workdir, arch, loss, optimizer, mesh, dataset,
                      jax.device_put(labels.device_data(dataset, config.data.get("balanced", False)), replicated),
                      ckpt, progress, stop, evaluation.TrainingEvaluator(config, split.training, arch),
                      grid_z, grid_labels)
            state = _train(run, jax.device_put(state, replicated), phases)
        finally:
            progress.close()
    except distributed.PeerLost:
        raise  # Closing would wait for a save that needs the lost process.
    except BaseException:
        ckpt.close()
        raise
    ckpt.close()
    return state, progress


@contextlib.contextmanager
def _resume_advice_on_write_errors(workdir: str):
    """A failed write's one-line error, with what was kept and how to resume."""
    try:
        yield
    except WriteError as e:
        raise WriteError(f"{e}; {checkpoint.resume_advice(workdir, e)}", e.errno) from None


def _train(run: Run, state: State, phases: list[Phase]) -> State:
    """Every phase the checkpoint has not finished, then a final checkpoint and sample grid."""
    reals_path = os.path.join(run.workdir, "reals.png")
    if run.writes and not os.path.exists(reals_path):
        shown = images.representative(run.dataset.images, run.config.num_grid_samples, run.config.seed)
        images.save_grid(data.to_float(shown), reals_path)
    for phase in phases:
        if int(state["step"]) >= phase.end:
            continue
        if int(state["stage"]) < phase.stage.index:
            state = jax.device_put(grow_state(state, run.arch, phase.stage, run.optimizer, run.config),
                                   parallel.replicated(run.mesh))
        state, out_of_time = _train_phase(run, state, phase)
        if out_of_time:  # Not into the next stage either.
            break
    final_step = int(state["step"])
    if run.checkpointer.latest_step() != final_step:
        run.checkpointer.save(final_step, state, checkpoint_meta(state, run.arch), force=True)
    _save_sample_grid(run, state)
    return state


def _train_phase(run: Run, state: State, phase: Phase) -> tuple[State, bool]:
    """The steps of one phase, with logging, sample grids, checkpoints and the stop checks.

    Returns the state and whether the run is out of time. Every process of a
    multi-process run stops after the same step (distributed.agreed_stop).
    """
    config, stage, ckpt, progress = run.config, phase.stage, run.checkpointer, run.progress
    key = step_cache.step_key(config, run.loss, stage, phase.start, phase.steps, len(run.dataset), run.mesh,
                              run.arch.class_names)
    step_fn = step_cache.cached(key, lambda: make_train_step(run.arch, stage, phase.start, phase.steps, run.loss,
                                                             run.optimizer, config.train, len(run.dataset), run.mesh))
    stages = len(run.arch.stages)
    progress.compiling(f"stage {stage.index + 1}/{stages} {stage.resolution}px" if stages > 1 else "")
    step = int(state["step"])
    if jax.process_count() > 1:  # Every process compiles, then they meet before the step's first collective.
        step_fn = step_fn.lower(state, run.dataset_on_device).compile()
        distributed.wait_for_all(f"stage {stage.index} compiled at step {step}")
    first, out_of_time = True, False
    while step < phase.end:
        state, metrics = step_fn(state, run.dataset_on_device)
        if first:  # The one extra sync of a stage: the bar says "compiling" until here.
            jax.block_until_ready(metrics)
            progress.compiled()
            first = False
        step += 1
        progress.advance(config.train.batch_size)
        last = step == phase.end
        stop = distributed.agreed_stop(run.stop.received, progress.out_of_time())
        out_of_time, stopping = stop.out_of_time, stop.signum is not None
        log = step % config.log_every_steps == 0 or last or out_of_time
        sample = step % config.sample_every_steps == 0
        save = step % config.checkpoint_every_steps == 0 or (last and stages > 1)
        # The only device syncs (with agreed_stop's in a multi-process run): other steps run ahead asynchronously.
        if log or sample or save or stopping:  # Never log, sample or save a diverged state.
            values = check_finite(step, jax.device_get(metrics), ckpt.latest_step())
        if run.evaluator.due(step):
            run.evaluator.run(state)
        if log:
            progress.log(step, stage, {**values, **run.evaluator.take_results()})
        if sample:
            _save_sample_grid(run, state)
        if save or stopping:
            ckpt.save(step, state, checkpoint_meta(state, run.arch), force=stopping)
        if stopping:
            ckpt.wait()
            raise Interrupted(f"stopped by {stop.source} after step {step}; checkpoint {step} is saved "
                              f"in {ckpt.directory}: run the same command to resume", stop.signum)
        if out_of_time:  # _train saves the checkpoint.
            logging.info("Time budget reached after step %d", step)
            break
    return state, out_of_time


def _save_sample_grid(run: Run, state: State) -> None:
    stage = run.arch.stages[int(state["stage"])]
    fake = sampling.generate(run.arch.generator(stage), generator_variables(state), run.grid_z,
                             state["alpha"], run.grid_labels)  # every process
    if not run.writes:
        return
    grid = images.grid(np.asarray(fake), sampling.grid_columns(run.arch, len(run.grid_z)))
    images.save_png(grid, os.path.join(run.workdir, "samples", f"step_{int(state['step']):08d}.png"))
    run.progress.add_grid(int(state["step"]), grid)


def _write_plots(workdir: str) -> None:
    try:
        plots.write_run_plots(workdir)
    except WriteError:  # The disk is full or failing: the user must act.
        raise
    except Exception as e:  # A plot must not fail a finished run.
        logging.warning("could not write the plots of %s: %s", workdir, e)

"""Training: the jitted GAN step, the stage schedule, and the loop."""

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrigen import (checkpoint, data, distributed, evaluation, images, losses, models, parallel, plots, run_config,
                    sampling, tensorboard)
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
        terms["d_grad_norm"] = optax.tree.norm(d_grads)
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


def train(config, workdir: str, time_budget_s: Optional[float] = None) -> State:
    """Trains `config`'s model in `workdir`, resuming from its latest checkpoint.

    Writes config.json, stats.jsonl, TensorBoard events, sample grids under
    samples/, a grid of real images (reals.png), checkpoints under
    checkpoints/ and, at the end, the plots of mrigen.plots. Returns the
    final state. Everything that can be refused (config, workdir, data, the
    checkpoint to resume) is checked before the first write to the workdir.
    time_budget_s: stop after the first step that ends this many seconds
    after training began, with a checkpoint (the state returned then falls
    short of the schedule). Raises DivergedError on a NaN/Inf, Interrupted
    after SIGINT/SIGTERM.
    """
    run_config.validate(config)
    arch = models.build(config)
    loss = losses.get(config.loss)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    run_config.check_workdir(workdir, config)
    with StopSignals() as stop:
        dataset = data.load_dataset(config.data.path, config.data.resolution,
                                    config.data.include_segmentation, config.data.min_foreground,
                                    config.data.cache_dir)
        if len(dataset) < config.train.batch_size:
            raise UserError(f"train.batch_size: {config.train.batch_size} is larger than the "
                            f"{len(dataset)} images found in {dataset.source}")
        logging.info("Data: %d slices at %dx%d from %s", len(dataset), dataset.resolution,
                     dataset.resolution, dataset.source)
        optimizer = create_optimizer(config.train)
        ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints, writer=True)
        try:
            state = restore_or_init(ckpt, arch, optimizer, config)
            if stop.received is not None:
                raise Interrupted(f"stopped by {stop.name} before the first step; nothing to save",
                                  stop.received)
            if distributed.is_main_process():
                run_config.write_config(workdir, config)
            return _train(state, config, arch, loss, optimizer, dataset, mesh, ckpt, stop, workdir,
                          time_budget_s)
        finally:
            ckpt.close()


def _train(state, config, arch, loss, optimizer, dataset, mesh, ckpt, stop, workdir,
           time_budget_s=None) -> State:
    replicated = parallel.replicated(mesh)
    state = jax.device_put(state, replicated)
    dataset_on_device = jax.device_put(dataset.images, replicated)

    phases = schedule(arch, len(dataset), config.train.batch_size)
    total_images = phases[-1].end * config.train.batch_size
    reals_path = os.path.join(workdir, "reals.png")
    if distributed.is_main_process() and not os.path.exists(reals_path):
        images.save_grid(data.to_float(dataset.images[:config.num_grid_samples]), reals_path)
    grid_z = arch.sample_latent(jax.random.PRNGKey(config.seed + 1), config.num_grid_samples)
    evaluator = TrainingEvaluator(config, dataset, arch)

    progress = ProgressReporter(workdir, total_images, int(state["images_seen"]), int(state["step"]),
                                time_budget_s, writes=distributed.is_main_process())
    try:
        for phase in phases:
            if int(state["step"]) >= phase.end:
                continue
            if int(state["stage"]) < phase.stage.index:
                state = jax.device_put(grow_state(state, arch, phase.stage, optimizer, config), replicated)
            state = _train_phase(state, phase, arch, loss, optimizer, config, len(dataset), mesh,
                                 dataset_on_device, ckpt, progress, grid_z, workdir, stop, evaluator)
            if progress.out_of_time():  # Not into the next stage either.
                break
        final_step = int(state["step"])
        if ckpt.latest_step() != final_step:
            ckpt.save(final_step, state, checkpoint_meta(state, arch), force=True)
        _save_sample_grid(state, arch, grid_z, workdir, progress)
    finally:
        progress.close()
    try:
        if distributed.is_main_process():
            plots.write_run_plots(workdir)
    except Exception as e:  # A plot must not fail a finished run.
        logging.warning("could not write the plots of %s: %s", workdir, e)
    return state


def _train_phase(state, phase: Phase, arch, loss, optimizer, config, num_images, mesh,
                 dataset_on_device, ckpt, progress, grid_z, workdir, stop, evaluator) -> State:
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
        out_of_time = progress.out_of_time()
        log = step % config.log_every_steps == 0 or last or out_of_time
        sample = step % config.sample_every_steps == 0
        save = step % config.checkpoint_every_steps == 0 or (last and len(arch.stages) > 1)
        stopping = stop.received is not None
        # The only device syncs: other steps run ahead asynchronously.
        if log or sample or save or stopping:  # Never log, sample or save a diverged state.
            values = check_finite(step, jax.device_get(metrics), ckpt.latest_step())
        if evaluator.due(step):
            evaluator.run(state)
        if log:
            progress.log(step, stage, {**values, **evaluator.take_results()})
        if sample:
            _save_sample_grid(state, arch, grid_z, workdir, progress)
        if save or stopping:
            ckpt.save(step, state, checkpoint_meta(state, arch), force=stopping)
        if stopping:
            ckpt.wait()
            raise Interrupted(f"stopped by {stop.name} after step {step}; checkpoint {step} is saved in "
                              f"{ckpt.directory}: run the same command to resume", stop.received)
        if out_of_time:  # _train saves the checkpoint.
            logging.info("Time budget reached after step %d", step)
            break
    return state


class TrainingEvaluator:
    """Every `eval_every_steps` steps, the cheap metrics of mrigen.evaluation on fixed latents.

    The PCA basis is that of the whole training set (cached beside the data);
    results join the next stats.jsonl record as eval_* fields. Off when
    eval_every_steps is 0.
    """

    def __init__(self, config, dataset: data.Dataset, arch: Architecture):
        self.every = config.get("eval_every_steps", 0)
        self.arch = arch
        self._results = {}
        if self.every:
            self.basis = evaluation.pca_basis(dataset, config.data.cache_dir)
            count = config.get("eval_num_images", 64)
            self.z = arch.sample_latent(jax.random.PRNGKey(config.seed + 2), count)

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def run(self, state: State) -> None:
        stage = self.arch.stages[int(state["stage"])]
        fake = np.asarray(sampling.generate(self.arch.generator(stage), state["g"], self.z, state["alpha"]))
        if fake.shape[1] != self.basis.image_shape[0]:
            return  # ProGAN below full size: the PCA space exists at full resolution only.
        self._results = evaluation.training_metrics(fake, self.basis)

    def take_results(self) -> dict:
        results, self._results = self._results, {}
        return results


class DivergedError(UserError):
    """A loss, gradient or weight became NaN or Inf; main.py exits with status 3."""

    exit_code = 3


class Interrupted(UserError):
    """SIGINT or SIGTERM stopped the run after saving a checkpoint; exit status 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def check_finite(step: int, metrics: dict, last_checkpoint: Optional[int] = None) -> dict:
    """The metrics as floats; raises DivergedError naming the step and quantity if any is not finite."""
    values = {k: float(v) for k, v in metrics.items()}
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        kept = ("there is no checkpoint yet" if last_checkpoint is None
                else f"the last checkpoint, step {last_checkpoint}, is kept")
        raise DivergedError(f"training diverged at step {step}: {', '.join(bad)} "
                            f"{'is' if len(bad) == 1 else 'are'} not finite; nothing was saved "
                            f"from this state ({kept})")
    return values


class StopSignals:
    """Turns SIGINT and SIGTERM into a request to stop at the next step boundary.

    `received` holds the first signal's number (None until one arrives). A
    second signal ends the process at once, which is safe: a checkpoint being
    written is left as a temporary folder that is never taken for a finished one.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python handles signals only there.
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        # os.write, not logging or print: the handler may interrupt either mid-write.
        os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then "
                    f"stopping (send it again to stop at once)\n".encode())


def _save_sample_grid(state: State, arch: Architecture, grid_z: jax.Array, workdir: str,
                      progress: "ProgressReporter") -> None:
    stage = arch.stages[int(state["stage"])]
    fake = sampling.generate(arch.generator(stage), state["g"], grid_z, state["alpha"])  # every process
    if not progress.writes:
        return
    grid = images.grid(np.asarray(fake))
    images.save_png(grid, os.path.join(workdir, "samples", f"step_{int(state['step']):08d}.png"))
    progress.add_grid(int(state["step"]), grid)


class ProgressReporter:
    """The progress bar, stats.jsonl and TensorBoard: images seen, img/s, losses, ETA; the time budget.

    writes=False (processes other than 0 of a multi-process run) keeps the
    counters and the time budget but shows and writes nothing.
    """

    def __init__(self, workdir: str, total_images: int, images_seen: int, step: int = 0,
                 time_budget_s: Optional[float] = None, writes: bool = True):
        from tqdm import tqdm

        self.writes = writes
        self.stats_path = os.path.join(workdir, "stats.jsonl")
        if writes:
            truncate_stats(self.stats_path, step)
        self.tensorboard = tensorboard.Writer(workdir, resume_step=step) if writes else None
        self._deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        self.bar = tqdm(total=total_images, initial=images_seen, unit="img", unit_scale=True,
                        dynamic_ncols=True, mininterval=1.0, disable=not writes)
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
                  "elapsed_sec": time.time() - self._start, "time": time.time(), **metrics}
        if not self.writes:
            return
        with open(self.stats_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.tensorboard.scalars(step, record)
        postfix = {"D": f"{metrics['d_loss']:.3f}", "G": f"{metrics['g_loss']:.3f}", "img/s": f"{rate:.0f}"}
        if self.stage_label:
            postfix["stage"] = f"{self.stage_label} a={metrics['alpha']:.2f}"
        self.bar.set_postfix(postfix, refresh=False)

    def add_grid(self, step: int, grid_u8: np.ndarray) -> None:
        self.tensorboard.image("samples/fixed_latents", grid_u8, step)

    def out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def truncate_stats(path: str, step: int) -> None:
    """Drops the records after `step` from a stats.jsonl, and a line cut short by a kill.

    A run killed after its last checkpoint logged steps it will redo on resume;
    without this they would appear twice.
    """
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if (recorded := _record_step(line)) is not None and recorded <= step]
    if len(kept) != len(lines):
        temporary = f"{path}.tmp"
        with open(temporary, "w") as f:
            f.writelines(kept)
        os.replace(temporary, path)


def _record_step(line: str) -> Optional[int]:
    try:
        return int(json.loads(line)["step"]) if line.endswith("\n") else None
    except (ValueError, KeyError, TypeError):
        return None

"""The parts of bench/gpu_suite.sh, one per process; each appends JSON lines to --jsonl.

  python bench/gpu_suite.py env
  python bench/gpu_suite.py flops  --models=dcgan:last,srresnet:last,progan:last,progan:fade
  python bench/gpu_suite.py step   --model=dcgan --precisions=bfloat16,float32 --data_check
  python bench/gpu_suite.py convt  --precisions=float32,bfloat16
  python bench/gpu_suite.py progan_compile --cache_dir=/tmp/jax_cache --pass_name=cold
  python bench/gpu_suite.py report --out=DIR

Sizes come from --resolution, --width, --batch, --iters, --warmup (the
shell script passes them). Every measurement is written as soon as it is
taken, so a part stopped by its time guard keeps what it finished.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from timing import median_time, peak_memory_gib  # noqa: E402


def emit(args, record: dict) -> None:
    """Appends one result line and prints it."""
    record = {"part": args.part, **record}
    with open(args.jsonl, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def model_config(model: str, args, precision: str = "float32"):
    from mrigen import run_config

    config = run_config.from_file(os.path.join(ROOT, "configs", f"{model}.py"))
    config.train.batch_size = args.batch
    config.data.resolution = args.resolution
    config.arch.width = args.width
    config.train.compute_dtype = precision
    return config


def set_subpixel(subpixel):
    """Forces DCGAN's transposed-convolution form (None: the backend's default)."""
    from mrigen.models import dcgan, layers

    dcgan.default_subpixel = layers.default_subpixel if subpixel is None else (lambda: subpixel)


def stage_of(arch, name: str):
    import torch_reference  # Only its stage chooser: PyTorch itself is not imported.

    return torch_reference.mrigen_stage(arch, name)


def step_parts(model: str, stage_name: str, args, precision: str, num_images: int):
    """(arch, stage, config, step_fn) of one benchmarked iteration."""
    from mrigen import losses, models, parallel, state as state_lib, train

    config = model_config(model, args, precision)
    arch = models.build(config)
    stage = stage_of(arch, stage_name)
    optimizer = state_lib.create_optimizer(config.train)
    # schedule_start 0 with a huge stage: a fade-in's alpha stays near 0 (its cost does not depend on alpha).
    step_fn = train.make_train_step(arch, stage, 0, 10**9, losses.get(config.loss), optimizer, config.train,
                                    num_images, parallel.data_mesh())
    return arch, stage, config, optimizer, step_fn


def abstract_inputs(arch, stage, optimizer, batch, num_images, resolution):
    import jax
    import jax.numpy as jnp

    from mrigen import state as state_lib

    state = jax.eval_shape(lambda: state_lib.initial_state(arch, stage, optimizer, 0, batch))
    return state, jax.ShapeDtypeStruct((num_images, resolution, resolution, 1), jnp.uint8)


# ---------------------------------------------------------------- parts


def part_env(args):
    import importlib.metadata as md

    import jax
    import jax.numpy as jnp

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "torch", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    device = jax.devices()[0]
    record = {"platform": device.platform, "device": device.device_kind, "device_count": jax.device_count(),
              "versions": versions}
    n = args.matmul_size
    key = jax.random.PRNGKey(0)
    for dtype, name in ((jnp.bfloat16, "bf16"), (jnp.float32, "fp32_default_precision")):
        a = jax.random.normal(key, (n, n), dtype)
        b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype)
        matmul = jax.jit(lambda x, y: x @ y)
        matmul(a, b).block_until_ready()
        t = median_time(lambda: matmul(a, b).block_until_ready(), 10, 3)
        record[f"matmul_{name}_tflops"] = 2 * n ** 3 / t / 1e12
    record["matmul_size"] = n
    emit(args, record)


def part_flops(args):
    """FLOPs per iteration from the jaxpr, traced on abstract shapes (nothing is allocated).

    gflop_per_image is the useful count (DCGAN's transposed convolutions in
    sub-pixel form); for DCGAN, gflop_per_image_conv_transpose counts
    lax.conv_transpose's zero-inserted input too, as the GPU form is counted.
    """
    import jax

    from flops import count_flops

    for item in args.models.split(","):
        model, stage_name = item.split(":")
        counts = {}
        for kind, subpixel in ((("useful", True), ("conv_transpose", False)) if model == "dcgan" else
                               (("useful", None),)):
            set_subpixel(subpixel)
            arch, stage, config, optimizer, step_fn = step_parts(model, stage_name, args, "float32", args.batch)
            state, images = abstract_inputs(arch, stage, optimizer, args.batch, args.batch, args.resolution)
            counts[kind] = count_flops(step_fn, state, images) / args.batch / 1e9
        set_subpixel(None)
        record = {"model": model, "stage": stage_name, "batch": args.batch, "resolution": args.resolution,
                  "width": args.width, "gflop_per_image": counts["useful"], "traced_on": jax.default_backend()}
        if "conv_transpose" in counts:
            record["gflop_per_image_conv_transpose"] = counts["conv_transpose"]
        emit(args, record)


def part_step(args):
    """The iteration of one model in each precision, then its sampler and (optionally) the data check."""
    import jax
    import numpy as np

    from mrigen import parallel, sampling, state as state_lib

    if args.subpixel != "default":
        set_subpixel(args.subpixel == "true")
    rng = np.random.default_rng(0)
    mesh = parallel.data_mesh()
    replicated = parallel.replicated(mesh)
    base = {"framework": "jax", "model": args.model, "stage": args.stage, "batch": args.batch,
            "resolution": args.resolution, "width": args.width,
            "subpixel": args.subpixel if args.model == "dcgan" else "n/a"}
    for precision in args.precisions.split(","):
        row = {**base, "precision": precision}

        def make(num_images):
            arch, stage, config, optimizer, step_fn = step_parts(args.model, args.stage, args, precision, num_images)
            images = rng.integers(0, 256, (num_images, args.resolution, args.resolution, 1), dtype=np.uint8)
            state = jax.device_put(state_lib.initial_state(arch, stage, optimizer, 0, args.batch), replicated)
            return arch, stage, step_fn, state, jax.device_put(images, replicated)

        arch, stage, step_fn, state, images = make(args.batch)
        start = time.perf_counter()
        lowered = step_fn.lower(state, images)
        lower_s = time.perf_counter() - start
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
        holder = {"state": state}

        def timed(fn, data):
            def run():
                holder["state"], metrics = fn(holder["state"], data)
                jax.block_until_ready(metrics)
            return run

        step_s = median_time(timed(compiled, images), args.iters, args.warmup)
        emit(args, {**row, "measure": "step", "lower_s": lower_s, "compile_s": compile_s,
                    "step_ms": step_s * 1e3, "img_per_s": args.batch / step_s, "peak_mem_gib": peak_memory_gib()})

        generator, g_vars, n = arch.generator(stage), holder["state"]["g"], args.sample_batch
        start = time.perf_counter()
        jax.block_until_ready(sampling._sample(generator, arch.sample_latent, n, g_vars, jax.random.PRNGKey(0), 1.0))
        sample_compile_s = time.perf_counter() - start
        sample = lambda: jax.block_until_ready(sampling._sample(generator, arch.sample_latent, n, g_vars,
                                                                jax.random.PRNGKey(0), 1.0))
        sample_s = median_time(sample, max(3, args.iters // 2), 1)
        emit(args, {**row, "measure": "sampler", "sample_batch": n, "sampler_compile_s": sample_compile_s,
                    "sampler_img_per_s": n / sample_s})

        # The data path does not depend on the precision: checked once, in the first (the part may be cut short).
        if args.data_check and args.dataset_size > args.batch and precision == args.precisions.split(",")[0]:
            _, _, step_full, state_full, images_full = make(args.dataset_size)
            del state_full  # The timed state continues; only the dataset differs.
            compiled_full = step_full.lower(holder["state"], images_full).compile()
            run_full, run_small = timed(compiled_full, images_full), timed(compiled, images)
            # Interleaved, so that clock or thermal drift hits both alike.
            full_s, small_s = [], []
            for _ in range(3):
                full_s.append(median_time(run_full, max(2, args.iters // 3), 1))
                small_s.append(median_time(run_small, max(2, args.iters // 3), 1))
            full, small = statistics.median(full_s), statistics.median(small_s)
            emit(args, {**row, "measure": "data", "dataset_size": args.dataset_size,
                        "img_per_s_batch_sized": args.batch / small, "img_per_s_full_dataset": args.batch / full,
                        "full_over_batch": small / full,
                        "dataset_gib": args.dataset_size * args.resolution ** 2 / 2**30})
            del compiled_full, images_full


def dcgan_layer_shapes(args):
    """(H_in, C_in, C_out, stride) of each transposed convolution of DCGAN's generator."""
    from mrigen.models import base, dcgan

    ch = lambda c: base.scaled(c, args.width)
    side, c_in, shapes = args.resolution // dcgan.DOWNSCALE, ch(256), []
    for channels, stride in dcgan.GENERATOR_LAYERS:
        shapes.append((side, c_in, ch(channels), stride))
        side, c_in = side * stride, ch(channels)
    return shapes + [(side, c_in, 1, 1)]  # The output layer.


def part_convt(args):
    """Forward + backward (input and kernel gradients) of each DCGAN ConvTranspose, both forms."""
    import jax
    import jax.numpy as jnp

    from mrigen.models.layers import ConvTranspose

    for precision in args.precisions.split(","):
        dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[precision]
        for index, (side, c_in, c_out, stride) in enumerate(dcgan_layer_shapes(args)):
            key = jax.random.PRNGKey(index)
            x = jax.random.normal(key, (args.batch, side, side, c_in), jnp.float32)
            kernel = 0.02 * jax.random.normal(jax.random.fold_in(key, 1), (5, 5, c_in, c_out), jnp.float32)
            cot = jax.random.normal(jax.random.fold_in(key, 2), (args.batch, side * stride, side * stride, c_out))
            row = {"layer": index, "in": f"{side}x{side}x{c_in}", "out": f"{side * stride}x{side * stride}x{c_out}",
                   "stride": stride, "precision": precision, "batch": args.batch}
            # Useful arithmetic: every input pixel meets every tap once; backward is twice the forward.
            row["gflop"] = 3 * 2 * args.batch * side * side * c_in * c_out * 25 / 1e9
            outputs = {}
            for name, subpixel in (("subpixel", True), ("conv_transpose", False)):
                layer = ConvTranspose(c_out, 5, stride, dtype=dtype, subpixel=subpixel, use_bias=False)
                apply = lambda xx, kk, layer=layer: layer.apply({"params": {"kernel": kk}}, xx)
                fwd_bwd = jax.jit(lambda xx, kk, apply=apply: jax.value_and_grad(
                    lambda a, b: jnp.sum(apply(a, b).astype(jnp.float32) * cot), argnums=(0, 1))(xx, kk))
                start = time.perf_counter()
                jax.block_until_ready(fwd_bwd(x, kernel))
                row[f"{name}_compile_s"] = time.perf_counter() - start
                t = median_time(lambda: jax.block_until_ready(fwd_bwd(x, kernel)), args.iters_micro, 2)
                row[f"{name}_ms"] = t * 1e3
                row[f"{name}_tflops"] = row["gflop"] / t / 1e3
                outputs[name] = jax.jit(apply)(x, kernel).astype(jnp.float32)
            diff = jnp.linalg.norm(outputs["subpixel"] - outputs["conv_transpose"])
            row["rel_diff"] = float(diff / jnp.linalg.norm(outputs["conv_transpose"]))
            row["conv_transpose_over_subpixel"] = row["conv_transpose_ms"] / row["subpixel_ms"]
            emit(args, row)


def part_progan_compile(args):
    """Lowering and compile time of every ProGAN stage's step; run twice on one cache folder (cold, warm)."""
    import jax

    from mrigen import losses, models, parallel, state as state_lib, train

    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    config = model_config("progan", args, args.precisions.split(",")[0])
    arch = models.build(config)
    optimizer = state_lib.create_optimizer(config.train)
    mesh = parallel.data_mesh()
    sharding = parallel.replicated(mesh)
    with_sharding = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                                              tree)
    for phase in train.schedule(arch, args.dataset_size, args.batch):
        stage = phase.stage
        step_fn = train.make_train_step(arch, stage, phase.start, phase.steps, losses.get(config.loss), optimizer,
                                        config.train, args.batch, mesh)
        state, images = abstract_inputs(arch, stage, optimizer, args.batch, args.batch, args.resolution)
        start = time.perf_counter()
        lowered = step_fn.lower(with_sharding(state), with_sharding(images))
        lower_s = time.perf_counter() - start
        start = time.perf_counter()
        lowered.compile()
        emit(args, {"pass": args.pass_name, "stage": stage.index, "stage_resolution": stage.resolution,
                    "fade_in": stage.fade_in, "precision": config.train.compute_dtype, "lower_s": lower_s,
                    "compile_s": time.perf_counter() - start})


# ---------------------------------------------------------------- report


def _fmt(value, digits=1):
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if value and abs(value) < 10 ** -digits * 10:  # Tiny (CPU smoke) sizes: keep 2 significant digits.
            return f"{value:.2g}"
        return f"{value:,.{digits}f}"
    return str(value)


def part_report(args):
    rows = []
    if os.path.exists(args.jsonl):
        with open(args.jsonl) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    by = lambda part: [r for r in rows if r["part"] == part]
    env = (by("env") or [{}])[0]
    peak = args.peak_tflops or env.get("matmul_bf16_tflops") or float("nan")
    flops = {(r["model"], r["stage"]): r for r in by("flops")}
    lines = ["# mrigen GPU suite", ""]
    if env:
        lines += [f"Device: {env.get('device')} ({env.get('platform')}, {env.get('device_count')} device); "
                  f"versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v),
                  f"Matmul {env.get('matmul_size')}^3: bf16 {_fmt(env.get('matmul_bf16_tflops'))} TFLOP/s, "
                  f"fp32 (default precision) {_fmt(env.get('matmul_fp32_default_precision_tflops'))} TFLOP/s; "
                  f"% of peak below is of {_fmt(peak)} TFLOP/s.", ""]
    sizes = next((r for r in rows if "resolution" in r and "batch" in r), None)
    if sizes:
        lines += [f"Sizes: {sizes['resolution']} px, batch {sizes['batch']}, width {sizes.get('width', '')}.", ""]

    lines += ["## Training iteration (1 D step with penalty + r G steps)", "",
              "| framework | model | stage | precision | img/s | step ms | GFLOP/img | TFLOP/s | % peak "
              "| peak GiB | compile s (JAX) / 1st iter s (torch) | sampler img/s | full-dataset / batch-sized |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    extra = {}
    for r in rows:
        if r.get("measure") in ("sampler", "data"):
            extra.setdefault((r["part"], r["precision"]), {}).update(r)
    order = {"dcgan": 0, "srresnet": 1, "progan": 2}
    iterations = sorted((r for r in rows if r.get("measure") == "step" or r.get("framework") == "torch"),
                        key=lambda r: (order.get(r["model"], 9), r["stage"] != "last", r["framework"] != "jax"))
    for r in iterations:
        f = flops.get((r["model"], r["stage"]), {})
        gflop = f.get("gflop_per_image")
        tflops = gflop * r["img_per_s"] / 1e3 if gflop else None
        more = extra.get((r["part"], r["precision"]), {})
        data = (f"{more['img_per_s_full_dataset']:.1f} / {more['img_per_s_batch_sized']:.1f}"
                if "img_per_s_full_dataset" in more else "")
        precision = r["precision"] + (" subpixel" if r.get("subpixel") == "true" else "")
        lines.append(f"| {r['framework']} | {r['model']} | {r['stage']} | {precision} | {_fmt(r['img_per_s'])} | "
                     f"{_fmt(r['step_ms'])} | {_fmt(gflop)} | {_fmt(tflops, 2)} | "
                     f"{_fmt(100 * tflops / peak if tflops else None)} | {_fmt(r.get('peak_mem_gib'), 2)} | "
                     f"{_fmt(r.get('compile_s', r.get('first_iter_s')))} | "
                     f"{_fmt(more.get('sampler_img_per_s'))} | {data} |")
    lines += ["", "GFLOP/img: useful arithmetic (transposed convolutions in sub-pixel form), the same count for "
              "both frameworks" + "".join(
                  f"; DCGAN counted with lax.conv_transpose's zero-inserted input (mrigen's GPU form): "
                  f"{r['gflop_per_image_conv_transpose']:.1f}" for (m, _), r in flops.items() if m == "dcgan") + ".",
              ""]

    convt = by("convt")
    if convt:
        lines += ["## DCGAN ConvTranspose, forward + backward (input and kernel gradients)", "",
                  "| layer | in -> out | stride | precision | GFLOP | sub-pixel ms | conv_transpose ms "
                  "| ratio (ct / sp) | sub-pixel TFLOP/s | conv_transpose TFLOP/s | rel. diff |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in convt:
            lines.append(f"| {r['layer']} | {r['in']} -> {r['out']} | {r['stride']} | {r['precision']} | "
                         f"{_fmt(r['gflop'], 2)} | {_fmt(r['subpixel_ms'], 2)} | {_fmt(r['conv_transpose_ms'], 2)} | "
                         f"{_fmt(r['conv_transpose_over_subpixel'], 2)} | {_fmt(r['subpixel_tflops'], 2)} | "
                         f"{_fmt(r['conv_transpose_tflops'], 2)} | {r['rel_diff']:.1e} |")
        lines.append("")

    compiles = by("progan_compile_cold") + by("progan_compile_warm")
    if compiles:
        table = {}
        for r in compiles:
            table.setdefault(r["stage"], {"r": r})[r["pass"]] = r
        lines += ["## ProGAN compile time per stage (persistent compilation cache: empty, then filled)", "",
                  "| stage | px | fade-in | precision | lower s | compile s, cold cache | compile s, warm cache |",
                  "|---|---|---|---|---|---|---|"]
        total = {"cold": 0.0, "warm": 0.0}
        for index in sorted(table):
            t = table[index]
            for name in total:
                total[name] += t.get(name, {}).get("compile_s", 0.0)
            lines.append(f"| {index} | {t['r']['stage_resolution']} | {'yes' if t['r']['fade_in'] else ''} | "
                         f"{t['r']['precision']} | {_fmt(t.get('cold', t['r'])['lower_s'], 2)} | "
                         f"{_fmt(t.get('cold', {}).get('compile_s'), 2)} | {_fmt(t.get('warm', {}).get('compile_s'), 2)} |")
        lines += [f"| all | | | | | {total['cold']:.1f} | {total['warm']:.1f} |", ""]

    status = by("suite")
    if status:
        lines += ["## Parts", "", "| part | status | seconds | limit s |", "|---|---|---|---|"]
        for r in status:
            lines.append(f"| {r['name']} | {r['status']} | {_fmt(r.get('seconds'))} | {_fmt(r.get('limit_s'))} |")
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(text)


PARTS = {"env": part_env, "flops": part_flops, "step": part_step, "convt": part_convt,
         "progan_compile": part_progan_compile, "report": part_report}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(PARTS))
    parser.add_argument("--part", default="", help="the name results are filed under (default: the command)")
    parser.add_argument("--jsonl", required=True)
    parser.add_argument("--out", default=".")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--iters_micro", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dataset_size", type=int, default=11328, help="the paper's OASIS slice count")
    parser.add_argument("--sample_batch", type=int, default=1024)
    parser.add_argument("--matmul_size", type=int, default=8192)
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--stage", default="last")
    parser.add_argument("--models", default="dcgan:last,srresnet:last,progan:last,progan:fade")
    parser.add_argument("--precisions", default="bfloat16,float32")
    parser.add_argument("--subpixel", default="default", choices=("default", "true", "false"))
    parser.add_argument("--data_check", action="store_true")
    parser.add_argument("--cache_dir", default="/tmp/mrigen_jax_cache")
    parser.add_argument("--pass_name", default="cold")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="0: the bf16 matmul rate the env part measured")
    args = parser.parse_args()
    args.part = args.part or args.command
    PARTS[args.command](args)


if __name__ == "__main__":
    main()

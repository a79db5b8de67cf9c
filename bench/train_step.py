"""Training-step and sampler throughput, with a PyTorch eager reference.

  python bench/train_step.py --model=dcgan --precision=float32,bfloat16 --torch
  python bench/train_step.py --model=dcgan,srresnet,progan --batch=64 --resolution=256

Per model and precision it prints: compile time, median step time over
--iters iterations after --warmup, images/s, analytic FLOPs per iteration
(bench/flops.py), achieved TFLOP/s and share of --peak_tflops, peak device
memory, the same step with the batch drawn from a full-size device-resident
dataset (--dataset_size images) against a batch-sized one, and the jitted
sampler's images/s. With --torch, a PyTorch eager reference of the same
iteration (bench/torch_reference.py, each model's last stage) is timed in the
same run, fp32 (TF32 on), bf16 autocast, and bf16 + channels_last.
bench/gpu_suite.sh runs all of these, each part in its own process.
PyTorch is a benchmark dependency only, never of the package.
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flops import count_flops  # noqa: E402
from timing import median_time, peak_memory_gib  # noqa: E402
from mrigen import losses, models, parallel, run_config, sampling, state as state_lib, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_model(model: str, precision: str, args) -> dict:
    config = run_config.from_file(os.path.join(ROOT, "configs", f"{model}.py"))
    config.train.batch_size = args.batch
    config.data.resolution = args.resolution
    config.arch.width = args.width
    config.train.compute_dtype = precision
    arch = models.build(config)
    stage = arch.stages[-1]
    optimizer = state_lib.create_optimizer(config.train)
    mesh = parallel.data_mesh()
    replicated = parallel.replicated(mesh)
    rng = np.random.default_rng(0)

    def make(num_images):
        images = rng.integers(0, 256, (num_images, args.resolution, args.resolution, 1), dtype=np.uint8)
        step_fn = train.make_train_step(arch, stage, 0, 10**9, losses.get(config.loss), optimizer,
                                        config.train, num_images, mesh)
        state = jax.device_put(state_lib.initial_state(arch, stage, optimizer, 0, args.batch), replicated)
        return step_fn, state, jax.device_put(images, replicated)

    step_fn, state, images = make(args.batch)
    flops = count_flops(step_fn, state, images)
    start = time.perf_counter()
    compiled = step_fn.lower(state, images).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], images)
        jax.block_until_ready(metrics)

    step_s = median_time(run, args.iters, args.warmup)
    result = {
        "model": model, "precision": precision, "batch": args.batch, "resolution": args.resolution,
        "compile_s": compile_s, "step_ms": step_s * 1e3, "img_per_s": args.batch / step_s,
        "gflop_per_image": flops / args.batch / 1e9, "tflops": flops / step_s / 1e12,
        "peak_share": flops / step_s / 1e12 / args.peak_tflops, "peak_mem_gib": peak_memory_gib(),
    }
    if args.dataset_size > args.batch:
        step_full, state_full, images_full = make(args.dataset_size)
        holder["state"] = state_full
        compiled_full = step_full.lower(state_full, images_full).compile()

        def run_full():
            holder["state"], metrics = compiled_full(holder["state"], images_full)
            jax.block_until_ready(metrics)

        result["img_per_s_full_dataset"] = args.batch / median_time(run_full, args.iters, args.warmup)
    generator = arch.generator(stage)
    g_vars = holder["state"]["g"]
    n = args.sample_batch
    sample = lambda: jax.block_until_ready(sampling._sample(generator, arch.sample_latent, n, g_vars,
                                                            jax.random.PRNGKey(0), 1.0))
    result["sampler_img_per_s"] = n / median_time(sample, max(5, args.iters // 4), 2)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dcgan", help="comma-separated: dcgan,srresnet,progan")
    parser.add_argument("--precision", default="float32,bfloat16", help="comma-separated compute dtypes")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (1 = the paper's)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dataset_size", type=int, default=11328, help="device-resident set for the data check")
    parser.add_argument("--sample_batch", type=int, default=1024)
    parser.add_argument("--peak_tflops", type=float, default=786.0, help="H100 bf16 matmul ceiling measured here")
    parser.add_argument("--torch", action="store_true", help="also time the PyTorch eager reference")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args()
    print(f"devices: {jax.devices()}", flush=True)
    results = []
    for model in args.model.split(","):
        for precision in args.precision.split(","):
            r = bench_model(model, precision, args)
            results.append(r)
            print(f"jax   {model:8s} {precision:8s} compile {r['compile_s']:6.1f} s  step {r['step_ms']:8.1f} ms  "
                  f"{r['img_per_s']:8.1f} img/s  {r['gflop_per_image']:7.1f} GFLOP/img  {r['tflops']:7.2f} TFLOP/s "
                  f"({100 * r['peak_share']:.1f}% of peak)  peak mem {r['peak_mem_gib']:.2f} GiB  "
                  f"full-dataset {r.get('img_per_s_full_dataset', float('nan')):8.1f} img/s  "
                  f"sampler {r['sampler_img_per_s']:9.1f} img/s", flush=True)
        if args.torch:
            import torch_reference

            for variant in torch_reference.VARIANTS:
                t = torch_reference.bench(model, args.batch, args.resolution, args.width, variant,
                                          args.iters, args.warmup)
                results.append(t)
                print(f"torch {model:8s} {variant:18s} step {t['step_ms']:8.1f} ms  {t['img_per_s']:8.1f} img/s",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""PyTorch eager references of mrigen's three training iterations, for benchmarks only.

  python bench/torch_reference.py --model=srresnet --resolution=256 --batch=64
  python bench/torch_reference.py --model=progan --stage=fade --variants=bf16_channels_last

Each is the same layers, the same parameter counts (asserted against
mrigen's own models before timing) and the same iteration as
mrigen/train.py's make_train_step, with the hyperparameters read from
configs/<model>.py:

- DCGAN + DRAGAN: mrigen/models/dcgan.py, 1 D step with the DRAGAN penalty,
  then 3 G steps on the same z.
- SRResNet + DRAGAN: mrigen/models/srresnet.py, 1 D step, 2 G steps.
- ProGAN + WGAN-GP: mrigen/models/progan.py at the last stabilize stage
  (--stage=last) or the fade-in stage before it (--stage=fade, alpha 0.5),
  equalized learning rate, pixel norm, drift term; 1 D step, 1 G step.

As mrigen's step does, G's forward for D's loss runs without gradients and
D's weights get no gradient in G's updates. Variants: fp32 (TF32 allowed,
as PyTorch users run it), bf16 (autocast), bf16_channels_last. PyTorch is
a benchmark dependency only, never of the package.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("fp32", "bf16", "bf16_channels_last")


# ---------------------------------------------------------------- mrigen's side


def mrigen_config(model: str, batch: int, resolution: int, width: float):
    """configs/<model>.py at the benchmark's sizes."""
    sys.path.insert(0, ROOT)
    from mrigen import run_config

    config = run_config.from_file(os.path.join(ROOT, "configs", f"{model}.py"))
    config.train.batch_size = batch
    config.data.resolution = resolution
    config.arch.width = width
    return config


def mrigen_stage(arch, stage_name: str):
    """The stage benchmarked: the last one, or (ProGAN) the fade-in stage before it."""
    if stage_name == "last":
        return arch.stages[-1]
    fades = [s for s in arch.stages if s.fade_in]
    if stage_name != "fade" or not fades:
        raise ValueError(f"--stage={stage_name}: {arch.name} has stages 'last'" + (", 'fade'" if fades else ""))
    return fades[-1]


def mrigen_parameter_counts(config, stage_name: str) -> dict:
    """Trainable parameters of mrigen's G and D at that stage (abstract shapes only, on the CPU)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # Shapes only: never take the GPU from PyTorch.
    import jax
    import numpy as np

    from mrigen import models, state

    arch = models.build(config)
    stage = mrigen_stage(arch, stage_name)
    shapes = jax.eval_shape(lambda: state.initial_state(arch, stage, state.create_optimizer(config.train),
                                                        0, config.train.batch_size))
    count = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
    return {"generator": count(shapes["g"]["params"]), "discriminator": count(shapes["d"]["params"])}


# ---------------------------------------------------------------- the networks


def _scaled(width: float):
    return lambda c: max(1, int(round(c * width)))  # mrigen.models.base.scaled


def _bn(c):
    # flax momentum 0.9 (weight of the old running value) is PyTorch's 0.1.
    import torch.nn as nn
    return nn.BatchNorm2d(c, momentum=0.1, eps=1e-5)


def _minibatch_stddev(x, group_size: int = 4):
    """mrigen.models.layers.minibatch_stddev in NCHW."""
    import torch

    n, c, h, w = x.shape
    group = min(group_size, n)
    y = x.float().view(group, n // group, c, h, w)
    std = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))
    feature = std.repeat(group).view(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
    return torch.cat([x, feature], dim=1)


def build_dcgan(config, stage):
    import torch
    from torch import nn

    from mrigen.models import dcgan

    ch, resolution = _scaled(config.arch.width), stage.resolution
    start, latent = resolution // dcgan.DOWNSCALE, config.arch.latent_dim

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(latent, start * start * ch(256), bias=False)
            self.bn = nn.BatchNorm1d(start * start * ch(256), momentum=0.1, eps=1e-5)
            layers, c_in = [], ch(256)
            for c, s in dcgan.GENERATOR_LAYERS:
                layers += [nn.ConvTranspose2d(c_in, ch(c), 5, s, padding=2, output_padding=s - 1, bias=False),
                           _bn(ch(c)), nn.ReLU()]
                c_in = ch(c)
            layers += [nn.ConvTranspose2d(c_in, 1, 5, 1, padding=2), nn.Tanh()]
            self.convs = nn.Sequential(*layers)

        def forward(self, z, alpha=1.0):
            x = torch.relu(self.bn(self.dense(z)))
            return self.convs(x.view(z.shape[0], ch(256), start, start))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 1
            for i, c in enumerate(dcgan.DISCRIMINATOR_CHANNELS):
                layers.append(nn.Conv2d(c_in, ch(c), 5, 2, padding=2, bias=i == 0))
                if i:
                    layers.append(_bn(ch(c)))
                layers.append(nn.LeakyReLU(0.2))
                c_in = ch(c)
            self.convs = nn.Sequential(*layers)
            self.dense1 = nn.Linear(start * start * (ch(1024) + 1), ch(1024) + 1)
            self.dense2 = nn.Linear(ch(1024) + 1, 1)

        def forward(self, x, alpha=1.0):
            x = _minibatch_stddev(self.convs(x)).flatten(1)
            return self.dense2(nn.functional.leaky_relu(self.dense1(x), 0.2))[:, 0]

    return Generator(), Discriminator()


def build_srresnet(config, stage):
    import torch
    from torch import nn
    import torch.nn.functional as F

    from mrigen.models import srresnet

    ch, resolution = _scaled(config.arch.width), stage.resolution
    features, start = ch(srresnet.FEATURES), resolution // srresnet.MIN_RESOLUTION

    class GeneratorBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv0, self.bn0 = nn.Conv2d(c, c, 3, padding=1, bias=False), _bn(c)
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), _bn(c)

        def forward(self, x):
            return x + self.bn1(self.conv1(torch.relu(self.bn0(self.conv0(x)))))

    class DiscriminatorBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv0, self.conv1 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return F.leaky_relu(x + self.conv1(F.leaky_relu(self.conv0(x), 0.2)), 0.2)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(config.arch.latent_dim, start * start * features, bias=False)
            self.bn_in = _bn(features)
            self.res = nn.Sequential(*[GeneratorBlock(features) for _ in range(srresnet.RESIDUAL_BLOCKS)])
            self.bn_res = _bn(features)
            # PixelShuffle orders sub-pixels unlike TensorFlow's depth_to_space: same cost.
            self.up = nn.Sequential(*[nn.Sequential(nn.Conv2d(features, 4 * features, 3, padding=1),
                                                    nn.PixelShuffle(2), _bn(features), nn.ReLU())
                                      for _ in range(srresnet.UPSAMPLING_BLOCKS)])
            self.conv_out = nn.Conv2d(features, 1, 9, padding=4)

        def forward(self, z, alpha=1.0):
            h = torch.relu(self.bn_in(self.dense(z).view(z.shape[0], features, start, start)))
            x = torch.relu(self.bn_res(self.res(h))) + h
            return torch.tanh(self.conv_out(self.up(x)))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 1
            for c in map(ch, srresnet.discriminator_channels(resolution)):
                # 4x4 stride 2 'SAME' on an even side pads 1 on each side.
                layers += [nn.Conv2d(c_in, c, 4, 2, padding=1), nn.LeakyReLU(0.2),
                           DiscriminatorBlock(c), DiscriminatorBlock(c)]
                c_in = c
            final = ch(srresnet.DISCRIMINATOR_FINAL_CHANNELS)
            layers += [nn.Conv2d(c_in, final, 3, 2, padding=1), nn.LeakyReLU(0.2)]
            self.convs = nn.Sequential(*layers)
            self.dense = nn.Linear(2 * 2 * final, 1)

        def forward(self, x, alpha=1.0):
            return self.dense(self.convs(x).flatten(1))[:, 0]

    return Generator(), Discriminator()


def build_progan(config, stage):
    import torch
    from torch import nn
    import torch.nn.functional as F

    from mrigen.models import progan

    width, resolution, fade_in = config.arch.width, stage.resolution, stage.fade_in
    resolutions = progan.resolutions_up_to(resolution)
    ch = lambda r: progan.channels_at(r, width)
    lrelu = lambda x: F.leaky_relu(x, 0.2)

    class EqualizedConv(nn.Module):
        """Weights N(0, 1), scaled by sqrt(2 / fan_in) at run time (progan.EqualizedConv)."""

        def __init__(self, c_in, c_out, k, padding):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
            self.bias = nn.Parameter(torch.zeros(c_out))
            self.scale, self.padding = math.sqrt(2.0 / (k * k * c_in)), padding

        def forward(self, x):
            return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    class EqualizedDense(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(c_out, c_in))
            self.bias = nn.Parameter(torch.zeros(c_out))
            self.scale = math.sqrt(2.0 / c_in)

        def forward(self, x):
            return F.linear(x, self.weight * self.scale, self.bias)

    def pixel_norm(x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.square().mean(dim=1, keepdim=True) + 1e-8)).to(x.dtype)

    norm = pixel_norm if config.arch.pixel_norm else (lambda x: x)
    up = lambda x: F.interpolate(x, scale_factor=2, mode="nearest")

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            blocks, c_in = {}, config.arch.latent_dim
            for r in resolutions:
                c = ch(r)
                blocks[f"b{r}"] = nn.ModuleList(
                    [EqualizedConv(c_in, c, 4, 3), EqualizedConv(c, c, 3, 1)] if r == 4 else
                    [EqualizedConv(c_in, c, progan.KERNEL, progan.KERNEL // 2),
                     EqualizedConv(c, c, progan.KERNEL, progan.KERNEL // 2)])
                c_in = c
            self.blocks = nn.ModuleDict(blocks)
            # Every toRGB up to R, used or not, as mrigen's parameter tree holds them.
            self.to_rgb = nn.ModuleDict({str(r): EqualizedConv(ch(r), 1, 1, 0) for r in resolutions})

        def forward(self, z, alpha=1.0):
            x, features = z.view(z.shape[0], -1, 1, 1), {}
            for r in resolutions:
                if r > 4:
                    x = up(x)
                for conv in self.blocks[f"b{r}"]:
                    x = norm(lrelu(conv(x)))
                features[r] = x
            out = self.to_rgb[str(resolution)](x).float()
            if fade_in:
                old = up(self.to_rgb[str(resolution // 2)](features[resolution // 2]).float())
                out = alpha * out + (1.0 - alpha) * old
            return torch.tanh(out)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.from_rgb = nn.ModuleDict({str(r): EqualizedConv(1, ch(r), 1, 0) for r in resolutions})
            self.blocks = nn.ModuleDict({
                f"b{r}": nn.ModuleList([EqualizedConv(ch(r), ch(r), progan.KERNEL, progan.KERNEL // 2),
                                        EqualizedConv(ch(r), ch(r // 2), progan.KERNEL, progan.KERNEL // 2)])
                for r in resolutions[1:]})
            self.head = nn.ModuleList([EqualizedConv(ch(4) + 1, ch(4), 3, 1), EqualizedConv(ch(4), ch(4), 4, 0)])
            self.dense = EqualizedDense(ch(4), 1)

        def forward(self, x, alpha=1.0):
            h = lrelu(self.from_rgb[str(resolution)](x))
            for r in reversed(resolutions[1:]):
                conv0, conv1 = self.blocks[f"b{r}"]
                h = lrelu(F.avg_pool2d(conv1(lrelu(conv0(h))), 2))
                if r == resolution and fade_in:
                    old = lrelu(self.from_rgb[str(r // 2)](F.avg_pool2d(x, 2)))
                    h = alpha * h + (1.0 - alpha) * old
            h = _minibatch_stddev(h)
            h = lrelu(self.head[1](lrelu(self.head[0](h))))
            return self.dense(h.flatten(1))[:, 0]

    return Generator(), Discriminator()


BUILDERS = {"dcgan": build_dcgan, "srresnet": build_srresnet, "progan": build_progan}


def parameter_counts(generator, discriminator) -> dict:
    count = lambda m: sum(p.numel() for p in m.parameters())
    return {"generator": count(generator), "discriminator": count(discriminator)}


# ---------------------------------------------------------------- the iteration


def _iteration(config, stage, generator, discriminator, batch, variant, device):
    """One iteration as a closure: 1 D step with its penalty (and drift), r G steps on the same z."""
    import torch
    import torch.nn.functional as F

    tc, loss = config.train, config.loss
    memory_format = torch.channels_last if variant == "bf16_channels_last" else torch.contiguous_format
    adam = lambda m: torch.optim.Adam(m.parameters(), tc.learning_rate, betas=(tc.b1, tc.b2), eps=1e-8)
    opt_g, opt_d = adam(generator), adam(discriminator)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=variant != "fp32")
    resolution = stage.resolution
    real = (torch.rand(batch, 1, resolution, resolution, device=device) * 2 - 1).to(memory_format=memory_format)
    alpha = 0.5 if stage.fade_in else 1.0
    if stage.fade_in:  # mrigen.models.base.real_images_for_stage
        real = alpha * real + (1 - alpha) * F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
    target = tc.real_target
    bce = lambda logits, t: F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, t))

    def latent():
        if config.model == "dcgan":
            return torch.rand(batch, config.arch.latent_dim, device=device) * 2 - 1
        z = torch.randn(batch, config.arch.latent_dim, device=device)
        return z / torch.sqrt(z.square().sum(dim=1, keepdim=True) + 1e-8)

    def d_loss_of(real_logits, fake_logits):
        if loss == "wgan_gp":
            return (fake_logits - real_logits).mean()
        return bce(real_logits, target) + bce(fake_logits, 0.0)

    def g_loss_of(fake_logits):
        return -fake_logits.mean() if loss == "wgan_gp" else bce(fake_logits, target)

    def penalty_points(fake):
        if loss == "wgan_gp":
            a = torch.rand(batch, 1, 1, 1, device=device)
            return a * real + (1 - a) * fake.float()
        a = torch.rand_like(real)
        return a * real + (1 - a) * 0.5 * real.std() * torch.rand_like(real)

    def iteration():
        z = latent()
        with torch.no_grad(), autocast:
            fake = generator(z, alpha).to(memory_format=memory_format)
        with autocast:
            real_logits, fake_logits = discriminator(real, alpha).float(), discriminator(fake, alpha).float()
        d_loss = d_loss_of(real_logits, fake_logits)
        points = penalty_points(fake).to(memory_format=memory_format).requires_grad_(True)
        with autocast:
            grads, = torch.autograd.grad(discriminator(points, alpha).float().sum(), points, create_graph=True)
        norms = torch.sqrt(grads.float().square().sum(dim=(1, 2, 3)) + 1e-10)
        d_loss = d_loss + tc.penalty_weight * ((norms - 1) ** 2).mean()
        if tc.drift:
            d_loss = d_loss + tc.drift * real_logits.square().mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        discriminator.requires_grad_(False)  # G's updates need D's input gradient only.
        for _ in range(tc.update_ratio):
            with autocast:
                g_loss = g_loss_of(discriminator(generator(z, alpha), alpha).float())
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        discriminator.requires_grad_(True)
        if device == "cuda":
            torch.cuda.synchronize()

    return iteration


def bench(model: str, batch: int, resolution: int, width: float, variant: str, iters: int, warmup: int,
          stage_name: str = "last", check_counts: bool = True) -> dict:
    """Median time of one iteration of `model` in PyTorch eager; variant: fp32, bf16 or bf16_channels_last."""
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}; choose one of {VARIANTS}")
    config = mrigen_config(model, batch, resolution, width)
    from mrigen import models

    stage = mrigen_stage(models.build(config), stage_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    generator, discriminator = BUILDERS[model](config, stage)
    counts = parameter_counts(generator, discriminator)
    if check_counts:
        expected = mrigen_parameter_counts(config, stage_name)
        assert counts == expected, f"{model}: PyTorch reference has {counts} parameters, mrigen {expected}"
    memory_format = torch.channels_last if variant == "bf16_channels_last" else torch.contiguous_format
    generator = generator.to(device, memory_format=memory_format).train()
    discriminator = discriminator.to(device, memory_format=memory_format).train()
    iteration = _iteration(config, stage, generator, discriminator, batch, variant, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    iteration()  # cudnn.benchmark picks its algorithms here.
    first_s = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        iteration()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"framework": "torch", "model": model, "stage": stage_name, "precision": variant, "batch": batch,
            "resolution": resolution, "width": width, "step_ms": step * 1e3, "img_per_s": batch / step,
            "first_iter_s": first_s, "peak_mem_gib": peak, "g_params": counts["generator"],
            "d_params": counts["discriminator"], "params_match_mrigen": check_counts, "device": device,
            "torch": torch.__version__}


def bench_dcgan_dragan(batch: int, resolution: int, width: float, variant: str, iters: int, warmup: int) -> dict:
    """The DCGAN + DRAGAN iteration (kept for bench/train_step.py's callers)."""
    return bench("dcgan", batch, resolution, width, variant, iters, warmup)


def main():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # mrigen is only asked for shapes here.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dcgan", choices=sorted(BUILDERS))
    parser.add_argument("--stage", default="last", help="last, or fade (ProGAN's last fade-in stage)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--jsonl", default="", help="append one JSON line per result to this file")
    args = parser.parse_args()
    for variant in args.variants.split(","):
        r = bench(args.model, args.batch, args.resolution, args.width, variant, args.iters, args.warmup, args.stage)
        print(f"torch {args.model:8s} {args.stage:4s} {variant:18s} step {r['step_ms']:8.1f} ms  "
              f"{r['img_per_s']:8.1f} img/s  first {r['first_iter_s']:5.1f} s  peak {r['peak_mem_gib']:.2f} GiB  "
              f"G {r['g_params']:,} D {r['d_params']:,} params (= mrigen)", flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps({"part": f"torch_{args.model}_{args.stage}", **r}) + "\n")


if __name__ == "__main__":
    main()

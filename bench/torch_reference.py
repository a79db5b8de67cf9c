"""A PyTorch eager reference of the paper's DCGAN + DRAGAN iteration, for benchmarks only.

Same layers as mrigen/models/dcgan.py (docs/models.md), same iteration as
mrigen/train.py: one D step with the DRAGAN penalty (lambda 0.25, label
smoothing 0.9), then 3 G steps on the same z, Adam(2e-4, 0.5, 0.999).
"""

import statistics
import time


def _build(width: float, resolution: int):
    import torch
    from torch import nn

    ch = lambda c: max(1, int(round(c * width)))
    start = resolution // 32

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(256, start * start * ch(256), bias=False)
            self.bn = nn.BatchNorm1d(start * start * ch(256), momentum=0.1, eps=1e-5)
            layers, c_in = [], ch(256)
            for c, s in ((256, 2), (256, 1), (256, 2), (256, 1), (256, 2), (256, 1), (128, 2), (64, 2)):
                layers += [nn.ConvTranspose2d(c_in, ch(c), 5, s, padding=2, output_padding=s - 1, bias=False),
                           nn.BatchNorm2d(ch(c), momentum=0.1, eps=1e-5), nn.ReLU()]
                c_in = ch(c)
            layers += [nn.ConvTranspose2d(c_in, 1, 5, 1, padding=2), nn.Tanh()]
            self.convs = nn.Sequential(*layers)

        def forward(self, z):
            x = torch.relu(self.bn(self.dense(z)))
            return self.convs(x.view(z.shape[0], ch(256), start, start))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 1
            for i, c in enumerate((64, 128, 256, 512, 1024)):
                layers.append(nn.Conv2d(c_in, ch(c), 5, 2, padding=2, bias=i == 0))
                if i:
                    layers.append(nn.BatchNorm2d(ch(c), momentum=0.1, eps=1e-5))
                layers.append(nn.LeakyReLU(0.2))
                c_in = ch(c)
            self.convs = nn.Sequential(*layers)
            self.dense1 = nn.Linear(start * start * (ch(1024) + 1), ch(1024) + 1)
            self.dense2 = nn.Linear(ch(1024) + 1, 1)

        def forward(self, x):
            x = self.convs(x)
            n, c, h, w = x.shape
            group = min(4, n)
            y = x.float().view(group, n // group, c, h, w)
            std = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))
            feature = std.repeat(group).view(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
            x = torch.cat([x, feature], dim=1).flatten(1)
            return self.dense2(nn.functional.leaky_relu(self.dense1(x), 0.2))[:, 0]

    return Generator(), Discriminator()


def bench_dcgan_dragan(batch: int, resolution: int, width: float, variant: str, iters: int, warmup: int) -> dict:
    """Median time of one iteration; variant: fp32, bf16 (autocast) or bf16_channels_last."""
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    generator, discriminator = (m.to(device) for m in _build(width, resolution))
    memory_format = torch.channels_last if variant == "bf16_channels_last" else torch.contiguous_format
    generator, discriminator = generator.to(memory_format=memory_format), discriminator.to(memory_format=memory_format)
    opt_g = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999), eps=1e-8)
    opt_d = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999), eps=1e-8)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=variant != "fp32")
    real = (torch.rand(batch, 1, resolution, resolution, device=device) * 2 - 1).to(memory_format=memory_format)

    def iteration():
        z = torch.rand(batch, 256, device=device) * 2 - 1
        with autocast:
            fake = generator(z).detach()
            real_logits, fake_logits = discriminator(real), discriminator(fake)
            d_loss = (F.binary_cross_entropy_with_logits(real_logits.float(), torch.full_like(real_logits.float(), 0.9))
                      + F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits.float())))
        a = torch.rand_like(real)
        points = (a * real + (1 - a) * 0.5 * real.std() * torch.rand_like(real)).requires_grad_(True)
        with autocast:
            grads, = torch.autograd.grad(discriminator(points).sum(), points, create_graph=True)
        norms = torch.sqrt(grads.float().pow(2).sum(dim=(1, 2, 3)) + 1e-10)
        d_loss = d_loss + 0.25 * ((norms - 1) ** 2).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        for _ in range(3):
            with autocast:
                logits = discriminator(generator(z))
                g_loss = F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), 0.9))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        iteration()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {"precision": variant, "batch": batch, "resolution": resolution, "step_ms": step * 1e3,
            "img_per_s": batch / step, "device": device}

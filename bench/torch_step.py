#!/usr/bin/env python3
"""One training step of amri's denoiser re-implemented in PyTorch (CPU), for the speed comparison
with `cargo run --release -p amri-diffusion --example step_bench`.

Same architecture as crates/amri-diffusion/src/unet.rs (EDM-style U-Net: noise embedding MLP,
residual blocks GroupNorm→SiLU→conv3×3, embedding bias, GroupNorm→SiLU→conv3×3, 1×1 skip,
attention at the listed levels and in the middle block, 2×2 average-pool down, nearest ×2 up +
conv3×3), the same EDM preconditioning, the supervised loss with an all-ones mask channel and
AdamW. Usage: torch_step.py [preset] [size] [batch] [steps] [device]; device cpu (default) or
cuda (timed after torch.cuda.synchronize); threads from OMP_NUM_THREADS or torch.set_num_threads
(default: the number of cores).

`preset` is a preset name, optionally followed by `:` and comma-separated overrides, spelled as
in step_bench.rs: f (space-to-depth factor), base, mult and attn (dash-separated), blocks,
groups, head; e.g. `tiny:f=4,base=48`. With f > 1 the network is wrapped in FFDNet's stem and
head, as amri's `space_to_depth`: F.pixel_unshuffle(x, f) → U-Net on 3·f² channels at H/f × W/f
→ F.pixel_shuffle(·, f) (amri's channel order is PyTorch's).
"""
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "tiny": dict(base=32, mult=[1, 1, 2], blocks=1, attn=[2], head=32, groups=8, f=1),
    "small": dict(base=32, mult=[1, 1, 2, 2, 2], blocks=1, attn=[4], head=32, groups=8, f=1),
    "clinical": dict(base=32, mult=[1, 1, 2, 2], blocks=1, attn=[3], head=32, groups=8, f=4),
    "base": dict(base=64, mult=[1, 2, 2, 4, 4], blocks=2, attn=[4], head=64, groups=32, f=1),
}


def parse_spec(spec):
    """`name[:key=value,...]` → config dict (see the module docstring)."""
    name, _, over = spec.partition(":")
    cfg = dict(PRESETS[name])
    for kv in filter(None, over.split(",")):
        k, v = kv.split("=")
        if k in ("mult", "attn"):
            cfg[k] = [int(x) for x in v.split("-")]
        elif k in ("f", "base", "blocks", "groups", "head"):
            cfg[k] = int(v)
        else:
            raise SystemExit(f"unknown override {k!r}")
    return cfg


def pos_emb(c, ch):
    half = ch // 2
    f = torch.exp(-torch.arange(half, dtype=torch.float32, device=c.device) / half * math.log(10000.0))
    a = c[:, None] * f[None]
    return torch.cat([a.cos(), a.sin()], 1)


class Attn(nn.Module):
    def __init__(self, c, cfg):
        super().__init__()
        self.heads = max(c // cfg["head"], 1)
        self.norm = nn.GroupNorm(cfg["groups"], c, eps=1e-5)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, d, h * w)
        q = qkv[:, 0].transpose(2, 3)
        k = qkv[:, 1]
        v = qkv[:, 2].transpose(2, 3)
        att = torch.softmax(q @ k / math.sqrt(d), -1)
        out = (att @ v).transpose(2, 3).reshape(n, c, h, w)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, cin, cout, attn, cfg):
        super().__init__()
        g = cfg["groups"]
        self.norm0 = nn.GroupNorm(g, cin, eps=1e-5)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(4 * cfg["base"], cout)
        self.norm1 = nn.GroupNorm(g, cout, eps=1e-5)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.attn = Attn(cout, cfg) if attn else None

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        h = h + self.affine(emb)[:, :, None, None]
        h = self.conv1(F.silu(self.norm1(h)))
        s = self.skip(x) if self.skip is not None else x
        out = (h + s) * (1 / math.sqrt(2))
        if self.attn is not None:
            out = (out + self.attn(out)) * (1 / math.sqrt(2))
        return out


class UNet(nn.Module):
    def __init__(self, cfg, cin=3, cout=2):
        super().__init__()
        self.cfg = cfg
        ch = lambda l: cfg["base"] * cfg["mult"][l]
        L = len(cfg["mult"])
        emb = 4 * cfg["base"]
        self.map0 = nn.Linear(cfg["base"], emb)
        self.map1 = nn.Linear(emb, emb)
        f = cfg.get("f", 1)
        self.f = f
        self.conv_in = nn.Conv2d(cin * f * f, ch(0), 3, padding=1)
        skips = [ch(0)]
        cur = ch(0)
        self.enc = nn.ModuleList()
        for l in range(L):
            bl = nn.ModuleList()
            for _ in range(cfg["blocks"]):
                bl.append(Block(cur, ch(l), l in cfg["attn"], cfg))
                cur = ch(l)
                skips.append(cur)
            self.enc.append(bl)
            if l + 1 < L:
                skips.append(cur)
        self.mid = nn.ModuleList([Block(cur, ch(L - 1), True, cfg), Block(ch(L - 1), ch(L - 1), False, cfg)])
        cur = ch(L - 1)
        self.up = nn.ModuleList([nn.Conv2d(ch(l + 1), ch(l + 1), 3, padding=1) for l in range(L - 1)])
        self.dec = nn.ModuleList([nn.ModuleList() for _ in range(L)])
        for l in reversed(range(L)):
            for _ in range(cfg["blocks"] + 1):
                self.dec[l].append(Block(cur + skips.pop(), ch(l), l in cfg["attn"], cfg))
                cur = ch(l)
        self.out_norm = nn.GroupNorm(cfg["groups"], ch(0), eps=1e-5)
        self.out_conv = nn.Conv2d(ch(0), cout * f * f, 3, padding=1)

    def forward(self, x, c_noise):
        emb = F.silu(self.map1(F.silu(self.map0(pos_emb(c_noise, self.cfg["base"])))))
        if self.f > 1:
            x = F.pixel_unshuffle(x, self.f)
        h = self.conv_in(x)
        skips = [h]
        for l, bl in enumerate(self.enc):
            for b in bl:
                h = b(h, emb)
                skips.append(h)
            if l + 1 < len(self.enc):
                h = F.avg_pool2d(h, 2)
                skips.append(h)
        for b in self.mid:
            h = b(h, emb)
        for l in reversed(range(len(self.dec))):
            for b in self.dec[l]:
                h = b(torch.cat([h, skips.pop()], 1), emb)
            if l > 0:
                h = self.up[l - 1](F.interpolate(h, scale_factor=2, mode="nearest"))
        out = self.out_conv(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(out, self.f) if self.f > 1 else out


def main():
    preset = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    dev = torch.device(sys.argv[5] if len(sys.argv) > 5 else "cpu")
    torch.manual_seed(0)
    net = UNet(parse_spec(preset)).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    sd = 0.5
    x0 = torch.randn(batch, 2, size, size, device=dev) * 0.5
    noise = torch.randn(batch, 2, size, size, device=dev)
    sigma = torch.full((batch,), 0.5, device=dev)
    ones = torch.ones(batch, 1, size, size, device=dev)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        s = sigma[:, None, None, None]
        x = x0 + noise * s
        total = s * s + sd * sd
        c_skip, c_out, c_in = sd * sd / total, s * sd / total.sqrt(), 1 / total.sqrt()
        inp = torch.cat([x * c_in, ones], 1)
        d = c_skip * x + c_out * net(inp, sigma.log() / 4)
        w = (sigma ** 2 + sd * sd) / (sigma * sd) ** 2
        loss = (((d - x0) ** 2).flatten(1).sum(1) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(f"torch preset={preset} size={size} batch={batch} device={dev.type} "
          f"threads={torch.get_num_threads()} "
          f"params={sum(p.numel() for p in net.parameters())} "
          f"ms_per_step={times[len(times) // 2]:.1f}")


if __name__ == "__main__":
    main()

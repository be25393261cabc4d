"""Small helpers every zoo training loop shares: image scaling, LR schedule, EMA, timing."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `(N, H, W, 3)` images as float `(N, 3, H, W)` in [-1, 1] (the VAE's pixel range)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """Float `(N, 3, H, W)` in [-1, 1] back to uint8 `(N, H, W, 3)`, rounded like diffusers' postprocess."""
    x = (x.detach().float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.1):
    """Linear warmup, then cosine decay to `floor`·lr at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of weights with the usual warm start: decay is at most (1 + step) / (10 + step)."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)


class Stopwatch:
    """Wall-clock seconds and steps/s of a loop."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds since creation."""
        return time.perf_counter() - self.start

    def rate(self, steps: int) -> float:
        """Steps per second so far."""
        return steps / max(self.seconds, 1e-9)

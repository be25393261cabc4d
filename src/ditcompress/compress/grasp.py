"""GRASP importance of singular values (4.4.4): gradients of the task loss w.r.t. σ_i.

Every selected layer is rewritten exactly as W = U diag(σ) Vᵀ with σ the only trainable tensor;
for each calibration image the gradients over all timesteps are summed, the signed per-image sums
are averaged over images (thesis: 200 images, timesteps 1..1000), and the singular values are
ranked by the magnitude of that mean, as the public GRASP implementation does (it sums the signed
∂L/∂σ over calibration batches and takes |·| once). Averaging per-image magnitudes instead
(`accumulate="abs_per_image"`) keeps a singular value whose pull changes sign from image to image.
The model is restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ditcompress.compress.errors import CompressionError
from ditcompress.compress.lowrank import layer_svd
from ditcompress.compress.svd import plan
from ditcompress.models.base import Conditioning, Objective, unwrap
from ditcompress.models.registry import adapter_for

ACCUMULATE = ("signed_mean", "abs_per_image")


class SingularValueLinear(nn.Module):
    """x -> U diag(σ) Vᵀ x + b with frozen U, V, b and trainable σ (same output as the layer it replaces)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        u, s, vh = layer_svd(layer)
        dtype = next(layer.parameters()).dtype
        self.register_buffer("u", u.to(dtype), persistent=False)
        self.register_buffer("vh", vh.to(dtype), persistent=False)
        self.sigma = nn.Parameter(s.to(dtype))
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x):
        return F.linear(F.linear(x, self.vh) * self.sigma, self.u, self.bias)


def grasp_scores(transformer: nn.Module, objective: Objective, calibration: Iterable[tuple[torch.Tensor, Conditioning]],
                 block_ids: list[str], ratio, *, timesteps: torch.Tensor, num_samples: int = 200,
                 timestep_batch: int = 8, generator: torch.Generator | None = None,
                 guidance: float | None = None, accumulate: str = "signed_mean") -> dict[str, torch.Tensor]:
    """Per layer key (as in `svd_compress`), the importance of each singular value σ_i.

    With g_j = Σ_t ∂L_task/∂σ_i on image j, the score is |mean_j g_j| for `accumulate="signed_mean"`
    (4.4.4, the default) and mean_j |g_j| for `"abs_per_image"` (an ablation).
    `calibration` yields `(latents (B, C, h, w), cond)` batches; the first `num_samples` images
    are used one by one, each with every time in `timesteps` (the family's native scale:
    DDPM steps for PixArt, σ for Flux) evaluated `timestep_batch` at a time.
    """
    if accumulate not in ACCUMULATE:
        raise CompressionError(f"GRASP accumulate must be one of {ACCUMULATE} (got {accumulate!r})")
    per_image_abs = accumulate == "abs_per_image"
    adapter = adapter_for(transformer)
    model = unwrap(transformer)
    targets = plan(model, block_ids, ratio)
    probes = {t.key: SingularValueLinear(t.layer) for t in targets}
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    scores = {k: torch.zeros_like(p.sigma, dtype=torch.float64) for k, p in probes.items()}
    seen = 0
    try:
        for p, _ in trainable:
            p.requires_grad_(False)
        for t in targets:
            setattr(t.parent, t.attr, probes[t.key])
        for latents, cond in calibration:
            for i in range(latents.shape[0]):
                if seen == num_samples:
                    break
                _image_gradients(adapter, model, objective, latents[i:i + 1], cond.select(slice(i, i + 1)),
                                 timesteps, timestep_batch, generator, guidance)
                for k, probe in probes.items():
                    g = probe.sigma.grad.double()  # Σ_t ∂L/∂σ of this image
                    scores[k] += g.abs() if per_image_abs else g  # signed: opposite pulls cancel
                    probe.sigma.grad = None
                seen += 1
            if seen == num_samples:
                break
    finally:
        for t in targets:
            setattr(t.parent, t.attr, t.layer)
        for p, flag in trainable:
            p.requires_grad_(flag)
    if seen == 0:
        raise CompressionError("grasp_scores: the calibration set is empty")
    return {k: (v / seen).abs().float() for k, v in scores.items()}  # rank by magnitude (4.4.4)


def _image_gradients(adapter, model, objective, latents, cond, timesteps, chunk, generator, guidance) -> None:
    """Accumulate ∂(Σ_t L_task)/∂σ into the probes' `.grad` for one image."""
    for start in range(0, len(timesteps), chunk):
        t = timesteps[start:start + chunk].to(latents.device)
        n = len(t)
        x0 = latents.expand(n, *latents.shape[1:])
        c = cond.select(torch.zeros(n, dtype=torch.long))
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else None)
        loss = adapter.task_loss(model, objective, x0, c, t=t, noise=noise.to(x0), guidance=guidance)
        loss.sum().backward()

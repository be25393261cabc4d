"""Tiny versions of the real transformer configs: same code path, sizes small enough for a CPU test."""

from __future__ import annotations

from ditcompress.models.registry import SHIPPED_CONFIGS, load_config

# only sizes change; every architectural switch (norm type, learned sigma, guidance) stays real
TINY_SIZES = {
    "pixart": dict(num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, caption_channels=12,
                   num_layers=4, sample_size=8),
    "flux": dict(num_attention_heads=2, attention_head_dim=16, axes_dims_rope=[4, 6, 6], joint_attention_dim=12,
                 pooled_projection_dim=10, in_channels=16, num_layers=2, num_single_layers=2),
}


def tiny_config(preset: str, **overrides) -> dict:
    """The shipped config of `preset` ("pixart-sigma" | "flux-dev") shrunk to test size, then `overrides`."""
    family = SHIPPED_CONFIGS[preset][0]
    return {**load_config(preset), **TINY_SIZES[family], **overrides}


def tiny_transformer(preset: str, seed: int = 0, **overrides):
    """A seeded fp32 tiny transformer of `preset` in eval mode (CPU)."""
    import torch

    from ditcompress.models.registry import build_transformer

    torch.manual_seed(seed)
    return build_transformer(tiny_config(preset, **overrides), device="cpu").eval()


def tiny_inputs(family: str, batch: int = 2, seed: int = 1):
    """Seeded `(latents, t, cond)` for a tiny model, in the family's native layout and time scale."""
    import torch

    from ditcompress.models.base import Conditioning

    g = torch.Generator().manual_seed(seed)
    t_pixart, sigma_flux = torch.linspace(10, 900, batch).long(), torch.linspace(0.1, 0.9, batch)
    if family == "pixart":
        mask = torch.ones(batch, 5, dtype=torch.long)
        mask[0, 3:] = 0  # a padded prompt
        cond = Conditioning(torch.randn(batch, 5, 12, generator=g), attention_mask=mask)
        return torch.randn(batch, 4, 8, 8, generator=g), t_pixart, cond
    cond = Conditioning(torch.randn(batch, 5, 12, generator=g), pooled=torch.randn(batch, 10, generator=g))
    return torch.randn(batch, 4, 8, 6, generator=g), sigma_flux, cond

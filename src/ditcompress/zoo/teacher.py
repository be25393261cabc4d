"""Tiny PixArt and Flux teachers and the one training loop both families share.

The loop goes through the family adapter (`objective.sample_t / add_noise / target` and
`adapter.predict`), so pretraining, distillation and block scoring run the same code path. VAE
latents and text embeddings are computed once beforehand (the text encoders are frozen), so a
step only runs the transformer. The saved teacher is the EMA of the weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel, PixArtTransformer2DModel
from torch import nn

from ditcompress.models.base import Conditioning, FamilyAdapter, Objective
from ditcompress.utils.logging import get_logger
from ditcompress.zoo.common import Stopwatch, ema_update, warmup_cosine
from ditcompress.zoo.config import FluxTeacherConfig, PixArtTeacherConfig, TeacherTrainConfig

log = get_logger(__name__)


def build_pixart_transformer(cfg: PixArtTeacherConfig, latent_channels: int, latent_size: int,
                             caption_channels: int, seed: int) -> PixArtTransformer2DModel:
    """PixArt-Σ's architecture (adaLN-single, cross-attention, no micro-conditions) at tiny width."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PixArtTransformer2DModel(
            num_attention_heads=cfg.heads,
            attention_head_dim=cfg.head_dim,
            in_channels=latent_channels,
            out_channels=latent_channels,  # no learned variance: the tiny teacher predicts the mean only
            num_layers=cfg.layers,
            cross_attention_dim=cfg.heads * cfg.head_dim,
            sample_size=latent_size,
            patch_size=cfg.patch_size,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
            caption_channels=caption_channels,
            use_additional_conditions=False,
            interpolation_scale=1,
        )
        _init_pixart(model)
    return model


def build_flux_transformer(cfg: FluxTeacherConfig, latent_channels: int, joint_attention_dim: int,
                           pooled_projection_dim: int, seed: int) -> FluxTransformer2DModel:
    """FLUX.1-dev's architecture (double + single MMDiT blocks, RoPE, guidance embedding) at tiny width."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * latent_channels,  # the pipeline packs 2x2 latent patches into one token
            num_layers=cfg.double_layers,
            num_single_layers=cfg.single_layers,
            attention_head_dim=cfg.head_dim,
            num_attention_heads=cfg.heads,
            joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim,
            guidance_embeds=True,
            axes_dims_rope=tuple(cfg.axes_dims_rope),
        )
        _init_flux(model)
    return model


def _xavier_linears(model: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear layer (DiT's `_basic_init`)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _zero(*modules: nn.Module) -> None:
    """Zero every parameter of the modules."""
    for m in modules:
        for p in m.parameters():
            nn.init.zeros_(p)


def _init_pixart(model: PixArtTransformer2DModel) -> None:
    """PixArt's own initialisation (diffusers' default init trains several times slower from scratch).

    Zeroed cross-attention outputs and output layer make every block start as self-attention +
    MLP and the model start by predicting zero, as in PixArt-α's `initialize_weights`.
    """
    _xavier_linears(model)
    w = model.pos_embed.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    emb = model.adaln_single.emb.timestep_embedder
    for m in (emb.linear_1, emb.linear_2, model.adaln_single.linear,
              model.caption_projection.linear_1, model.caption_projection.linear_2):
        nn.init.normal_(m.weight, std=0.02)
    _zero(model.proj_out, *(block.attn2.to_out[0] for block in model.transformer_blocks))


def _init_flux(model: FluxTransformer2DModel) -> None:
    """DiT's adaLN-Zero initialisation for the MMDiT: every block starts as the identity.

    Zeroed modulation layers close each block's gates; the zeroed output layer makes the model
    start by predicting zero velocity.
    """
    _xavier_linears(model)
    for block in model.transformer_blocks:
        _zero(block.norm1.linear, block.norm1_context.linear)
    for block in model.single_transformer_blocks:
        _zero(block.norm.linear)
    _zero(model.norm_out.linear, model.proj_out)


def cat_conditioning(*conds: Conditioning) -> Conditioning:
    """Rows of several conditionings stacked (fields must be present in all or none)."""
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    return Conditioning(cat([c.prompt_embeds for c in conds]), cat([c.attention_mask for c in conds]),
                        cat([c.pooled for c in conds]))


@dataclass
class TeacherData:
    """Everything a teacher step needs, precomputed: latents and the text conditioning bank."""

    latents: torch.Tensor  # (N, C, h, w), normalised by the VAE's scaling/shift
    captions: Conditioning  # one row per distinct caption
    caption_index: torch.Tensor  # (N,) row of `captions` for each latent
    empty: Conditioning  # the "" prompt (1 row): the pipelines' unconditional input for CFG

    def __post_init__(self):
        self._bank = cat_conditioning(self.captions, self.empty)  # the last row is the empty prompt

    def to(self, device) -> "TeacherData":
        """The same data on `device` (latents, conditioning bank and row index)."""
        return TeacherData(self.latents.to(device), self.captions.to(device), self.caption_index.to(device),
                           self.empty.to(device))

    def batch(self, idx: torch.Tensor, drop: torch.Tensor) -> tuple[torch.Tensor, Conditioning]:
        """Latents and conditioning of rows `idx`, with the empty prompt where `drop`."""
        rows = torch.where(drop, len(self.captions.prompt_embeds), self.caption_index[idx])
        return self.latents[idx], self._bank.select(rows)


def diffusion_loss(adapter: FamilyAdapter, objective: Objective, transformer, x0: torch.Tensor,
                   cond: Conditioning, generator: torch.Generator, guidance: float | None = None) -> torch.Tensor:
    """MSE between the model output and the objective's target at random times and noise.

    Times and noise come from the CPU `generator` whatever the device, so a run on a GPU draws the
    same random stream as one on the CPU.
    """
    t = objective.sample_t(len(x0), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    pred = adapter.predict(transformer, objective.add_noise(x0, noise, t), t, cond, guidance=guidance)
    return F.mse_loss(pred.float(), objective.target(x0, noise, t).float())


def train_teacher(adapter: FamilyAdapter, objective: Objective, transformer: torch.nn.Module,
                  data: TeacherData, cfg: TeacherTrainConfig, seed: int, *, guidance: float | None = None,
                  tracker=None, name: str = "teacher", device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Train `transformer` in place; returns its EMA copy (eval mode, on the CPU) and timing/loss figures.

    On another `device` (a GPU) the model and `data` move there for the run; the batches, times
    and noise are still drawn from one seeded CPU generator, and the loss is read back only when
    it is logged, so the GPU is not made to wait every step.
    """
    g = torch.Generator().manual_seed(seed)
    transformer.to(device)
    data = data.to(device)
    ema = copy.deepcopy(transformer).requires_grad_(False).eval()
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    transformer.train()
    clock, running = Stopwatch(), None
    n = len(data.latents)
    for step in range(cfg.steps):
        idx = torch.randint(n, (cfg.batch_size,), generator=g)
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.cfg_dropout  # important! enables CFG
        x0, cond = data.batch(idx.to(device), drop.to(device))
        loss = diffusion_loss(adapter, objective, transformer, x0, cond, g, guidance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        ema_update(ema, transformer, cfg.ema_decay, step)
        # a float64 tensor: the same arithmetic as Python floats, without a device sync per step
        value = loss.detach().double()
        running = value if running is None else 0.98 * running + 0.02 * value
        if tracker is not None and (step % 50 == 0 or step == cfg.steps - 1):
            tracker.log_metrics({f"{name}/loss": running.item()}, step=step)
        if step % 250 == 0 or step == cfg.steps - 1:
            log.info("%s: step %d/%d loss %.4f (%.2f steps/s)", name, step + 1, cfg.steps, running.item(),
                     clock.rate(step + 1))
    transformer.eval()
    return ema.cpu(), {"loss": running.item(), "seconds": clock.seconds, "steps_per_s": clock.rate(cfg.steps)}

"""The interface every model-family adapter implements (one module per family, same methods).

Stages and library code never branch on the family: they ask the adapter. A latent batch is
always in the VAE's layout `(B, C, h, w)`; families that work on packed tokens (Flux) pack and
unpack inside `predict`. Time `t` is the family's native training time: integer DDPM steps in
`[0, num_train_timesteps)` for PixArt, sigma in `[0, 1]` for rectified-flow Flux.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Conditioning:
    """Encoded text for a batch; fields a family does not use stay None."""

    prompt_embeds: torch.Tensor  # (B, L, D_text)
    attention_mask: torch.Tensor | None = None  # (B, L), 1 = real token
    pooled: torch.Tensor | None = None  # (B, D_pool), Flux's CLIP pooled vector

    def to(self, device=None, dtype=None) -> "Conditioning":
        """Move embeddings (not the mask's integer dtype) to a device/dtype."""
        mv = lambda x, d=dtype: None if x is None else x.to(device=device, dtype=d)  # noqa: E731
        return Conditioning(mv(self.prompt_embeds), mv(self.attention_mask, None), mv(self.pooled))

    def select(self, index) -> "Conditioning":
        """Rows `index` of every field (for batching and CFG dropout)."""
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return Conditioning(pick(self.prompt_embeds), pick(self.attention_mask), pick(self.pooled))


@dataclass(frozen=True)
class BlockRef:
    """A transformer block with a stable id (`"7"`, `"double.3"`, `"single.12"`)."""

    id: str
    kind: str  # "pixart" | "double" | "single"
    index: int  # position inside its own ModuleList
    module: nn.Module


@dataclass
class BlockOutput:
    """What `capture_features` records for one block: the image stream and, for Flux, the text stream."""

    image: torch.Tensor  # (B, N_img, D)
    text: torch.Tensor | None = None  # (B, N_txt, D), Flux blocks only

    def flat(self) -> torch.Tensor:
        """All streams of each sample flattened into one feature vector, `(B, D_l)` (eq 4.11)."""
        parts = [self.image] if self.text is None else [self.image, self.text]
        return torch.cat([p.flatten(1) for p in parts], dim=1)


class Objective(ABC):
    """The training objective of a family: how to noise data and what the model must predict."""

    @abstractmethod
    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training times for a batch, `(B,)`."""

    @abstractmethod
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Noisy latents x_t."""

    @abstractmethod
    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What `FamilyAdapter.predict` should output for x_t (eps, v or flow velocity)."""


class FamilyAdapter(ABC):
    """Loads, inspects, hooks and runs one model family."""

    name: str  # registry key: "pixart" | "flux"

    # ---- loading -------------------------------------------------------------------------
    @abstractmethod
    def load_transformer(self, path_or_id: str | Path, *, subfolder: str | None = "transformer",
                         torch_dtype: torch.dtype | None = None) -> nn.Module:
        """The denoising transformer from a hub id or local pipeline/transformer directory."""

    @abstractmethod
    def load_pipeline(self, path_or_id: str | Path, *, transformer: nn.Module | None = None,
                      torch_dtype: torch.dtype | None = None):
        """The family's diffusers pipeline, optionally around a (compressed) transformer."""

    # ---- structure -----------------------------------------------------------------------
    @abstractmethod
    def blocks(self, transformer: nn.Module) -> list[BlockRef]:
        """All transformer blocks in execution order, with stable ids."""

    @abstractmethod
    def block_parts(self, block: BlockRef) -> dict[str, list[str]]:
        """Part name -> parameter-owning submodule names inside the block (tab. 4.1/4.2)."""

    # ---- running -------------------------------------------------------------------------
    @abstractmethod
    def objective(self, scheduler_config: dict, *, weighting: str = "uniform", logit_mean: float = 0.0,
                  logit_std: float = 1.0) -> Objective:
        """The training objective matching the pipeline's scheduler config.

        `weighting` is how training draws noise levels: "uniform" or "logit_normal" (SD3).
        """

    @abstractmethod
    def encode_prompts(self, pipeline, prompts: list[str], max_sequence_length: int) -> Conditioning:
        """Text conditioning for prompts with the pipeline's own text encoder(s)."""

    @abstractmethod
    def predict(self, transformer: nn.Module, latents: torch.Tensor, t: torch.Tensor,
                cond: Conditioning, guidance: float | None = None) -> torch.Tensor:
        """Model output for noisy latents `(B, C, h, w)`, same layout as `Objective.target`."""

    @abstractmethod
    def uses_negative(self, true_cfg_scale: float) -> bool:
        """Whether sampling runs a negative-prompt branch (CFG) at these settings."""

    @abstractmethod
    def pipeline_inputs(self, cond: Conditioning, negative: Conditioning | None, true_cfg_scale: float) -> dict:
        """The pipeline's keyword arguments for precomputed embeddings of a batch (`negative`: one row)."""

    # ---- concrete helpers shared by every family ------------------------------------------
    part_groups: dict[str, str] = {}  # part -> "attn" | "mlp" | "modulation" (per-part SVD ratios, 5.1.7)
    # block kind -> (ModuleList attribute, config key holding its length)
    block_lists: dict[str, tuple[str, str]] = {}
    # sampler settings that never change this family's images
    inert_sampler_settings: frozenset[str] = frozenset()

    def unused_sampler_settings(self, true_cfg_scale: float) -> set[str]:
        """Sampler settings that do not change the images at these settings (left out of image records)."""
        unused = set(self.inert_sampler_settings)
        if not self.uses_negative(true_cfg_scale):
            unused.add("negative_prompt")
        return unused

    def set_blocks(self, transformer: nn.Module, kind: str, modules: list[nn.Module]) -> None:
        """Replace the model's blocks of `kind` and keep the config's count in sync."""
        attr, key = self.block_lists[kind]
        model = unwrap(transformer)
        setattr(model, attr, nn.ModuleList(modules))
        # without this, from_pretrained would rebuild (and randomly initialise) the removed blocks
        model.register_to_config(**{key: len(modules)})

    def linear_group(self, block: BlockRef, part: str, name: str) -> str:
        """Group ("attn", "mlp", "modulation") of linear `name` of `part`, for per-group SVD ratios."""
        return self.part_groups[part]

    # whether blocks carry a text stream through (Flux's MMDiT) besides the image tokens
    text_stream: bool = False

    def wrap_output(self, raw) -> BlockOutput:
        """A block's raw return value as streams (PixArt: the hidden states)."""
        return BlockOutput(image=raw)

    def unwrap_output(self, out: BlockOutput):
        """Inverse of `wrap_output`: what the block must return."""
        return out.image

    def block_inputs(self, module: nn.Module, args: tuple, kwargs: dict) -> BlockOutput:
        """The streams a block was called with, bound by name from its forward signature."""
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
        return BlockOutput(image=bound["hidden_states"],
                           text=bound.get("encoder_hidden_states") if self.text_stream else None)

    @contextmanager
    def hook_blocks(self, transformer: nn.Module, block_ids: list[str], fn) -> Iterator[None]:
        """Call `fn(block id, inputs, output)` after each forward of the listed blocks (hooks removed on exit).

        Both are `BlockOutput`s; when `fn` returns one, the block returns it instead (gates,
        ablations). Blocks are found by identity on the unwrapped model, so wrappers do not matter.
        """
        refs = [self.block_by_id(transformer, b) for b in block_ids]
        handles = []

        def hook_for(block_id):
            def hook(module, args, kwargs, output):
                new = fn(block_id, self.block_inputs(module, args, kwargs), self.wrap_output(output))
                return None if new is None else self.unwrap_output(new)
            return hook

        try:
            for ref in refs:
                handles.append(ref.module.register_forward_hook(hook_for(ref.id), with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def capture_features(self, transformer: nn.Module, block_ids: list[str]) -> Iterator[dict[str, BlockOutput]]:
        """Record each listed block's output per forward (hooks removed on exit).

        It yields `{block id: BlockOutput}` holding the latest forward's outputs (image stream,
        plus the text stream for Flux); a new forward overwrites them, so a KD step reads the
        features of the pass it just ran; tensors keep their autograd graph.
        """
        features: dict[str, BlockOutput] = {}

        def keep(block_id, inputs, output):
            features[block_id] = output

        with self.hook_blocks(transformer, block_ids, keep):
            yield features

    def block_by_id(self, transformer: nn.Module, block_id: str) -> BlockRef:
        """The block with stable id `block_id`; a one-line `KeyError` naming it when absent."""
        for ref in self.blocks(transformer):
            if ref.id == block_id:
                return ref
        raise KeyError(f"unknown block id {block_id!r} for {self.name}")

    def task_loss(self, transformer: nn.Module, objective: Objective, latents: torch.Tensor,
                  cond: Conditioning, *, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, guidance: float | None = None) -> torch.Tensor:
        """Per-sample denoising MSE `(B,)` between `predict` and `objective.target` (L_Task of eq 4.10)."""
        if t is None:
            t = objective.sample_t(latents.shape[0], generator=generator, device=latents.device)
        if noise is None:
            where = generator.device if generator is not None else latents.device
            noise = torch.randn(latents.shape, generator=generator, device=where).to(latents)
        pred = self.predict(transformer, objective.add_noise(latents, noise, t), t, cond, guidance=guidance)
        target = objective.target(latents, noise, t)
        return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under accelerate/DDP/FSDP and torch.compile wrappers."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model, keep_torch_compile=False)
    return getattr(model, "_orig_mod", model)


def stable_indices(transformer: nn.Module, kind: str, present: int) -> list[int]:
    """Teacher indices of the `present` blocks of `kind` still in the model (ids survive removal).

    A compressed student carries its `CompressionRecord` as `transformer.compression_record`
    (set by `ditcompress.compress`); its `removed` ids say which teacher positions are gone.
    """
    record = getattr(transformer, "compression_record", None)
    prefix = "" if kind == "pixart" else f"{kind}."
    removed = {int(r[len(prefix):]) for r in (record.removed if record else []) if _has_kind(r, kind)}
    kept = [i for i in range(present + len(removed)) if i not in removed]
    if len(kept) != present:
        raise RuntimeError(f"compression record says {kind} blocks {sorted(removed)} were removed, "
                           f"but {present} remain")
    return kept


def _has_kind(block_id: str, kind: str) -> bool:
    """Whether a stable id belongs to blocks of `kind` (`"7"` -> pixart, `"double.3"` -> double)."""
    return "." not in block_id if kind == "pixart" else block_id.startswith(f"{kind}.")

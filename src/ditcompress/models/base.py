"""The interface every model-family adapter implements (one module per family, same methods).

Stages and library code never branch on the family: they ask the adapter. A latent batch is
always in the VAE's layout `(B, C, h, w)`; families that work on packed tokens (Flux) pack and
unpack inside `predict`. Time `t` is the family's native training time: integer DDPM steps in
`[0, num_train_timesteps)` for PixArt, sigma in `[0, 1]` for rectified-flow Flux.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
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
    def objective(self, scheduler_config: dict) -> Objective:
        """The training objective matching the pipeline's scheduler config."""

    @abstractmethod
    def encode_prompts(self, pipeline, prompts: list[str], max_sequence_length: int) -> Conditioning:
        """Text conditioning for prompts with the pipeline's own text encoder(s)."""

    @abstractmethod
    def predict(self, transformer: nn.Module, latents: torch.Tensor, t: torch.Tensor,
                cond: Conditioning, guidance: float | None = None) -> torch.Tensor:
        """Model output for noisy latents `(B, C, h, w)`, same layout as `Objective.target`."""

    @abstractmethod
    def capture_features(self, transformer: nn.Module, block_ids: list[str]) -> AbstractContextManager[dict]:
        """Context manager recording each listed block's output per forward (hooks removed on exit)."""

"""Rendering images from a model: the one sampling path of every stage, bench and figure.

    renderer = Renderer.load("models/shapes/pixart", "pixart", preset_settings("shapes-pixart"))
    images = renderer.render(prompts, image_seeds(0, "geneval", len(prompts)))   # uint8 (N, H, W, 3)
    with renderer.using(student):        # same VAE, text encoders and cached prompt embeddings
        images = renderer.render(prompts, seeds)

Image i starts from the noise of its own CPU generator seeded with `seeds[i]`, so which batch,
device or process renders it does not decide its starting noise, and any image can be redone
alone. The stages seed image `index` of a prompt group with `seed_for(base, "<group>/<index>")`
(`image_seeds`). Each distinct prompt is encoded once and kept (`keep_prompts`), the negative
prompt once per renderer; the pipeline then only gets embeddings (`remember` supplies precomputed ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ditcompress.data.config import GenerateConfig, for_preset
from ditcompress.models.base import Conditioning
from ditcompress.models.presets import get_preset
from ditcompress.models.registry import get_adapter
from ditcompress.utils.seeds import seed_for


def preset_settings(preset: str, **overrides) -> GenerateConfig:
    """A preset's own sampler settings (resolution, steps, guidance, text length, dtype), with overrides."""
    return for_preset(GenerateConfig(**overrides), get_preset(preset))


def image_seeds(base: int, group: str, count: int, start: int = 0) -> list[int]:
    """Per-image seeds of images `start..start+count-1` of a prompt group."""
    return [seed_for(base, f"{group}/{i}") for i in range(start, start + count)]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pipeline output in [0, 1] to uint8, rounding as diffusers' `numpy_to_pil` does."""
    return np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)


def _store(table: dict[str, Conditioning], prompts: list[str], cond: Conditioning) -> None:
    """Keep row i of `cond` as the embedding of `prompts[i]`."""
    table.update((p, cond.select(slice(i, i + 1))) for i, p in enumerate(prompts))


class Renderer:
    """A loaded pipeline that renders one image per (prompt, seed), with its prompt embeddings cached."""

    def __init__(self, pipeline, family: str, settings: GenerateConfig, *, keep_prompts: bool = True):
        self.adapter = get_adapter(family)
        self.family, self.pipeline, self.settings = family, pipeline, settings
        # off for one-pass datasets: a real T5-XXL embedding is ~2.5 MB per prompt
        self.keep_prompts = keep_prompts
        self._prompts: dict[str, Conditioning] = {}
        self._negative: Conditioning | None = None
        pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, path_or_id: str | Path, family: str, settings: GenerateConfig, device="cpu", *,
             transformer: nn.Module | None = None, keep_prompts: bool = True) -> "Renderer":
        """The family's pipeline from a hub id or directory (a student's transformer swapped in when given)."""
        pipeline = get_adapter(family).load_pipeline(str(path_or_id), transformer=transformer,
                                                     torch_dtype=getattr(torch, settings.torch_dtype))
        return cls(pipeline.to(device), family, settings, keep_prompts=keep_prompts)

    @torch.no_grad()  # not inference_mode: the pipeline may reuse these tensors in place
    def _encode_batch(self, prompts: list[str]) -> Conditioning:
        return self.adapter.encode_prompts(self.pipeline, prompts, self.settings.max_sequence_length)

    def remember(self, prompts: list[str], cond: Conditioning) -> None:
        """Use precomputed embeddings (one row per prompt) instead of the pipeline's text encoders."""
        _store(self._prompts, prompts, cond)

    def negative(self) -> Conditioning | None:
        """The negative prompt's embedding when the family samples with one at these settings, else None."""
        if self._negative is None and self.adapter.uses_negative(self.settings.true_cfg_scale):
            self._negative = self.encode([self.settings.negative_prompt])
        return self._negative

    def encode(self, prompts: list[str]) -> Conditioning:
        """Conditioning of `prompts`, each distinct prompt encoded once (in batches of `batch_size`)."""
        # without keep_prompts, new encodings live in a layer over the cache for this call only
        known = self._prompts if self.keep_prompts else dict(self._prompts)
        new = [p for p in dict.fromkeys(prompts) if p not in known]
        step = self.settings.batch_size
        for s in range(0, len(new), step):
            batch = new[s : s + step]
            _store(known, batch, self._encode_batch(batch))
        rows = [known[p] for p in prompts]
        cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
        return Conditioning(cat([r.prompt_embeds for r in rows]), cat([r.attention_mask for r in rows]),
                            cat([r.pooled for r in rows]))

    @torch.no_grad()
    def render(self, prompts: list[str], seeds: list[int], bar=None) -> np.ndarray:
        """uint8 images `(N, H, W, 3)`, image i from a CPU generator seeded with `seeds[i]`."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        cfg, out = self.settings, []
        for s in range(0, len(prompts), cfg.batch_size):
            batch = prompts[s : s + cfg.batch_size]
            # CPU generators: the starting noise is the same on every device
            generators = [torch.Generator("cpu").manual_seed(int(x)) for x in seeds[s : s + cfg.batch_size]]
            inputs = self.adapter.pipeline_inputs(self.encode(batch), self.negative(), cfg.true_cfg_scale)
            images = self.pipeline(**inputs, height=cfg.height, width=cfg.width,
                                   num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                                   max_sequence_length=cfg.max_sequence_length, generator=generators,
                                   output_type="np").images  # (B, H, W, 3) in [0, 1]
            out.append(to_uint8(images))
            if bar is not None:
                bar.update(len(batch))
        return np.concatenate(out) if out else np.zeros((0, cfg.height, cfg.width, 3), np.uint8)

    @contextmanager
    def using(self, transformer: nn.Module) -> Iterator["Renderer"]:
        """Render with another transformer (a student, a candidate) inside the block; restored on exit."""
        original = self.pipeline.transformer
        self.pipeline.transformer = transformer.to(device=original.device, dtype=original.dtype)
        try:
            yield self
        finally:
            self.pipeline.transformer = original

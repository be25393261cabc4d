"""Full diffusers pipelines around the tiny models, saved in the hub layout, and sampling from them.

`PixArtSigmaPipeline.from_pretrained(dir)` / `FluxPipeline.from_pretrained(dir)` load the saved
directories unchanged and offline. Schedulers follow the real configs: PixArt-Σ's
DPM-Solver++ over DDPM's linear betas (here with v prediction), FLUX.1-dev's flow-matching Euler
with resolution-dependent shift.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline, PixArtSigmaPipeline


def pixart_scheduler(prediction_type: str, beta_schedule: str = "linear") -> DPMSolverMultistepScheduler:
    """PixArt-Σ's sampler config (DDPM betas, DPM-Solver++ order 2)."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=beta_schedule,
        prediction_type=prediction_type, algorithm_type="dpmsolver++", solver_order=2,
        lower_order_final=True, timestep_spacing="linspace")


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-dev's sampler config (shift grows with the number of image tokens)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)


def pixart_pipeline(transformer, vae, text_encoder, tokenizer, prediction_type: str,
                    beta_schedule: str = "linear") -> PixArtSigmaPipeline:
    """A PixArt-Σ pipeline from in-memory parts."""
    return PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=pixart_scheduler(prediction_type, beta_schedule))


def flux_pipeline(transformer, vae, clip_text_encoder, clip_tokenizer, t5_encoder, t5_tokenizer) -> FluxPipeline:
    """A FLUX.1 pipeline from in-memory parts (CLIP pooled vector + T5 tokens, as FLUX.1-dev)."""
    return FluxPipeline(scheduler=flux_scheduler(), vae=vae, text_encoder=clip_text_encoder, tokenizer=clip_tokenizer,
                        text_encoder_2=t5_encoder, tokenizer_2=t5_tokenizer, transformer=transformer)


def save_pipeline(pipeline, out_dir: str | Path) -> Path:
    """Write the pipeline in the hub layout (model_index.json + one folder per component)."""
    out_dir = Path(out_dir)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@torch.no_grad()
def generate(pipeline, prompts: list[str], *, resolution: int, steps: int, guidance: float,
             max_sequence_length: int, seed: int, batch_size: int = 64, true_cfg_scale: float = 1.0) -> np.ndarray:
    """uint8 `(N, H, W, 3)` images, one per prompt, from either family's pipeline (seeded per batch).

    `true_cfg_scale` > 1 gives a Flux pipeline a negative branch with the empty prompt (true CFG).
    """
    kwargs = dict(height=resolution, width=resolution, num_inference_steps=steps, guidance_scale=guidance,
                  max_sequence_length=max_sequence_length, output_type="np")
    true_cfg = {}
    if isinstance(pipeline, PixArtSigmaPipeline):
        # resolution binning only knows the real sizes (256..2048 px); the prompts are already clean
        kwargs.update(use_resolution_binning=False, clean_caption=False)
    elif true_cfg_scale > 1:
        true_cfg = {"true_cfg_scale": true_cfg_scale}
    pipeline.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, len(prompts), batch_size):
        g = torch.Generator().manual_seed(seed + i)
        batch = prompts[i : i + batch_size]
        negative = {"negative_prompt": [""] * len(batch)} if true_cfg else {}
        images = pipeline(prompt=batch, generator=g, **true_cfg, **negative, **kwargs).images  # (B, H, W, 3), [0, 1]
        out.append(np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8))
    return np.concatenate(out)


def generate_as_preset(pipeline, prompts: list[str], preset, *, seed: int, resolution: int | None = None) -> np.ndarray:
    """`generate` with a preset's sampler settings (steps, guidance, true CFG, text length)."""
    return generate(pipeline, prompts, resolution=resolution or preset.resolution, steps=preset.num_inference_steps,
                    guidance=preset.guidance_scale, max_sequence_length=preset.max_sequence_length,
                    true_cfg_scale=preset.true_cfg_scale, seed=seed)

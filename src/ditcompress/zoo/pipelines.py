"""Full diffusers pipelines around the tiny models, saved in the hub layout.

`PixArtSigmaPipeline.from_pretrained(dir)` / `FluxPipeline.from_pretrained(dir)` load the saved
directories unchanged and offline. Schedulers follow the real configs: PixArt-Σ's
DPM-Solver++ over DDPM's linear betas (here with v prediction), FLUX.1-dev's flow-matching Euler
with resolution-dependent shift. Sampling from them goes through `ditcompress.sampling.Renderer`.
"""

from __future__ import annotations

from pathlib import Path

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

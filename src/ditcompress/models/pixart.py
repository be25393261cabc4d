"""PixArt-Σ adapter: 28 DiT blocks with self-attention, cross-attention, MLP and adaLN-single (4.1.1).

Trained as a DDPM (integer timesteps, epsilon or v prediction from the scheduler config); the
real model also learns the variance (out_channels = 2·in_channels), which `predict` drops.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, PixArtTransformer2DModel

from ditcompress.models.base import (
    BlockRef,
    Conditioning,
    FamilyAdapter,
    Objective,
    stable_indices,
    unwrap,
)
from ditcompress.models.loading import load_pipeline, load_transformer


class DDPMObjective(Objective):
    """Discrete DDPM training: x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε (eq 2.28), target ε (eq 2.51) or v."""

    def __init__(self, scheduler_config: dict, timestep_sampling: str = "uniform", logit_mean: float = 0.0,
                 logit_std: float = 1.0):
        if timestep_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"unknown timestep sampling {timestep_sampling!r} (uniform or logit_normal)")
        self.timestep_sampling, self.logit_mean, self.logit_std = timestep_sampling, logit_mean, logit_std
        # DDPMScheduler reads the training-relevant keys (betas, T, prediction type) from any
        # diffusers scheduler config, e.g. PixArt's DPMSolverMultistepScheduler one.
        self.scheduler = DDPMScheduler.from_config(dict(scheduler_config))
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r} (epsilon or v_prediction)")

    def sample_t(self, batch, generator=None, device=None):
        """Integer timesteps in [0, T): uniform, or t = ⌊T · sigmoid(N(mean, std))⌋ (SD3's logit-normal)."""
        where = generator.device if generator is not None else device
        if self.timestep_sampling == "uniform":
            return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator, device=where).to(device)
        z = torch.randn(batch, generator=generator, device=where)
        u = torch.sigmoid(self.logit_mean + self.logit_std * z)
        return (u * self.num_train_timesteps).long().clamp(0, self.num_train_timesteps - 1).to(device)

    def add_noise(self, latents, noise, t):
        """Forward diffusion q(x_t | x0) with the scheduler's ᾱ."""
        return self.scheduler.add_noise(latents, noise, t.long())

    def target(self, latents, noise, t):
        """ε for epsilon prediction, v = √ᾱ ε − √(1−ᾱ) x0 for v prediction."""
        if self.prediction_type == "epsilon":
            return noise
        return self.scheduler.get_velocity(latents, noise, t.long())


class PixArtAdapter(FamilyAdapter):
    """PixArt-α/Σ (`PixArtTransformer2DModel`, `PixArtSigmaPipeline`)."""

    name = "pixart"
    transformer_cls = PixArtTransformer2DModel

    @property
    def pipeline_cls(self):
        """`PixArtSigmaPipeline`, imported on use (it pulls in transformers' T5)."""
        from diffusers import PixArtSigmaPipeline

        return PixArtSigmaPipeline
    # tab. 4.1; the modulation table E_i is a parameter, not a submodule
    parts = {"self_attn": ["attn1"], "cross_attn": ["attn2"], "mlp": ["ff"], "modulation": ["scale_shift_table"]}
    part_groups = {"self_attn": "attn", "cross_attn": "attn", "mlp": "mlp", "modulation": "modulation"}
    block_lists = {"pixart": ("transformer_blocks", "num_layers")}
    inert_sampler_settings = frozenset({"true_cfg_scale"})  # a Flux-only setting

    def load_transformer(self, path_or_id, *, subfolder="transformer", torch_dtype=None):
        """Teacher or saved student (strict: missing or unexpected weights are an error)."""
        return load_transformer(self, path_or_id, subfolder=subfolder, torch_dtype=torch_dtype)

    def load_pipeline(self, path_or_id, *, transformer=None, torch_dtype=None):
        """`PixArtSigmaPipeline`, with `transformer` (e.g. a student) swapped in when given."""
        return load_pipeline(self, path_or_id, transformer=transformer, torch_dtype=torch_dtype)

    def blocks(self, transformer):
        """`transformer_blocks` with ids `"0".."27"` (teacher numbering, kept after removal)."""
        model = unwrap(transformer)
        mods = model.transformer_blocks
        ids = stable_indices(model, "pixart", len(mods))
        return [BlockRef(str(tid), "pixart", i, m) for i, (tid, m) in enumerate(zip(ids, mods))]

    def block_parts(self, block):
        """Self-attention, cross-attention, MLP and the per-block modulation table E_i."""
        return {k: list(v) for k, v in self.parts.items()}

    def objective(self, scheduler_config, *, weighting="uniform", logit_mean=0.0, logit_std=1.0):
        """DDPM objective with the pipeline scheduler's betas and prediction type.

        `weighting` is how timesteps are drawn: "uniform" (DDPM, PixArt) or "logit_normal".
        """
        return DDPMObjective(scheduler_config, weighting, logit_mean, logit_std)

    def encode_prompts(self, pipeline, prompts, max_sequence_length):
        """T5 embeddings and attention mask via the pipeline's own `encode_prompt` (no CFG pair)."""
        embeds, mask, _, _ = pipeline.encode_prompt(
            list(prompts), do_classifier_free_guidance=False, device=pipeline._execution_device,
            clean_caption=False, max_sequence_length=max_sequence_length)
        return Conditioning(prompt_embeds=embeds, attention_mask=mask)

    def predict(self, transformer, latents, t, cond, guidance=None):
        """ε/v prediction `(B, C, h, w)`; the learned-variance channels are dropped."""
        b, c = latents.shape[:2]
        t = t.expand(b) if t.ndim == 0 else t
        out = transformer(
            latents,
            encoder_hidden_states=cond.prompt_embeds,
            encoder_attention_mask=cond.attention_mask,
            timestep=t,
            # PixArt-Σ has no micro-conditions; the 1024-α checkpoints would need real values
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]
        return out[:, :c] if out.shape[1] == 2 * c else out  # learned sigma: keep the mean

    def uses_negative(self, true_cfg_scale):
        """Always: PixArt samples with classifier-free guidance."""
        return True

    def pipeline_inputs(self, cond, negative, true_cfg_scale):
        """T5 embeddings and masks of the batch and its negative prompt, at exactly the asked size."""
        n = cond.prompt_embeds.shape[0]
        return dict(prompt_embeds=cond.prompt_embeds, prompt_attention_mask=cond.attention_mask, negative_prompt=None,
                    negative_prompt_embeds=negative.prompt_embeds.expand(n, -1, -1),
                    negative_prompt_attention_mask=negative.attention_mask.expand(n, -1),
                    # generate exactly height x width instead of snapping to PixArt's aspect-ratio bins
                    use_resolution_binning=False)

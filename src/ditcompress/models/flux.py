"""FLUX.1-dev adapter: 19 double-stream + 38 single-stream MMDiT blocks (4.1.2), rectified flow.

Latents stay in the VAE layout `(B, C, h, w)` outside; `predict` packs 2×2 patches into tokens,
builds the RoPE position ids and unpacks the velocity, exactly as `FluxPipeline` does.
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel

from ditcompress.models.base import (
    BlockOutput,
    BlockRef,
    Conditioning,
    FamilyAdapter,
    Objective,
    stable_indices,
    unwrap,
)
from ditcompress.models.loading import load_pipeline, load_transformer

# FluxPipeline's default guidance scale, also the thesis's generation setting (tab. 4.4)
DEFAULT_GUIDANCE = 3.5


class RectifiedFlowObjective(Objective):
    """x_t = (1−σ)·x0 + σ·ε with target ε − x0 (eq 2.74 with σ running from data to noise,
    as in diffusers' train_dreambooth_flux).

    σ is drawn uniformly or logit-normally (σ = sigmoid(N(mean, std)), SD3's default weighting).
    """

    def __init__(self, weighting: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0):
        if weighting not in ("uniform", "logit_normal"):
            raise ValueError(f"unknown sigma weighting {weighting!r} (uniform or logit_normal)")
        self.weighting, self.logit_mean, self.logit_std = weighting, logit_mean, logit_std

    def sample_t(self, batch, generator=None, device=None):
        """σ ∈ (0, 1) per sample."""
        where = generator.device if generator is not None else device
        if self.weighting == "uniform":
            sigma = torch.rand(batch, generator=generator, device=where)
        else:
            z = torch.randn(batch, generator=generator, device=where)
            sigma = torch.sigmoid(self.logit_mean + self.logit_std * z)
        return sigma.to(device)

    def add_noise(self, latents, noise, t):
        """Straight path between data (σ=0) and noise (σ=1)."""
        sigma = t.to(latents.dtype).view(-1, *[1] * (latents.ndim - 1))
        return (1 - sigma) * latents + sigma * noise

    def target(self, latents, noise, t):
        """Flow velocity dx_t/dσ = ε − x0."""
        return noise - latents


class FluxAdapter(FamilyAdapter):
    """FLUX.1 (`FluxTransformer2DModel`, `FluxPipeline`)."""

    name = "flux"
    transformer_cls = FluxTransformer2DModel

    @property
    def pipeline_cls(self):
        """`FluxPipeline`, imported on use (it pulls in transformers' CLIP and T5)."""
        from diffusers import FluxPipeline

        return FluxPipeline
    default_guidance = DEFAULT_GUIDANCE
    # tab. 4.2; the q/k RMSNorm weights (128 each) are counted with their attention linears
    double_parts = {
        "image_attn": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.norm_q", "attn.norm_k"],
        "image_mlp": ["ff"],
        "image_modulation": ["norm1"],
        "image_projection": ["attn.to_out"],
        "text_attn": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.norm_added_q", "attn.norm_added_k"],
        "text_mlp": ["ff_context"],
        "text_modulation": ["norm1_context"],
        "text_projection": ["attn.to_add_out"],
    }
    single_parts = {
        "linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "attn.norm_q", "attn.norm_k"],
        "projection": ["proj_out"],
        "modulation": ["norm"],
    }
    part_groups = {
        "image_attn": "attn", "text_attn": "attn", "image_projection": "attn", "text_projection": "attn",
        "image_mlp": "mlp", "text_mlp": "mlp",
        "image_modulation": "modulation", "text_modulation": "modulation", "modulation": "modulation",
        # single blocks fuse attention and MLP: linear1 = q,k,v (attn) + proj_mlp (mlp), and
        # projection maps cat(attn, mlp) back, 4/5 of its inputs coming from the MLP branch
        "linear1": "attn", "projection": "mlp",
    }
    text_stream = True
    block_lists = {"double": ("transformer_blocks", "num_layers"),
                   "single": ("single_transformer_blocks", "num_single_layers")}

    def load_transformer(self, path_or_id, *, subfolder="transformer", torch_dtype=None):
        """Teacher or saved student (strict: missing or unexpected weights are an error)."""
        return load_transformer(self, path_or_id, subfolder=subfolder, torch_dtype=torch_dtype)

    def load_pipeline(self, path_or_id, *, transformer=None, torch_dtype=None):
        """`FluxPipeline`, with `transformer` (e.g. a student) swapped in when given."""
        return load_pipeline(self, path_or_id, transformer=transformer, torch_dtype=torch_dtype)

    def blocks(self, transformer):
        """Double blocks `double.0..18` then single blocks `single.0..37`, in execution order."""
        model = unwrap(transformer)
        refs = []
        for kind, mods in (("double", model.transformer_blocks), ("single", model.single_transformer_blocks)):
            ids = stable_indices(model, kind, len(mods))
            refs += [BlockRef(f"{kind}.{tid}", kind, i, m) for i, (tid, m) in enumerate(zip(ids, mods))]
        return refs

    def block_parts(self, block):
        """Tab. 4.2 parts of a double or single block."""
        parts = self.double_parts if block.kind == "double" else self.single_parts
        return {k: list(v) for k, v in parts.items()}

    def linear_group(self, block, part, name):
        """Single-block linear1 is split: `proj_mlp` is MLP, q/k/v attention."""
        if part == "linear1" and name == "proj_mlp":
            return "mlp"
        return super().linear_group(block, part, name)

    def objective(self, scheduler_config, *, weighting="uniform", logit_mean=0.0, logit_std=1.0):
        """Rectified flow; the scheduler config only fixes the family (σ sampling is a parameter)."""
        return RectifiedFlowObjective(weighting, logit_mean, logit_std)

    def encode_prompts(self, pipeline, prompts, max_sequence_length):
        """T5 token embeddings plus the CLIP pooled vector via the pipeline's `encode_prompt`."""
        embeds, pooled, _ = pipeline.encode_prompt(
            list(prompts), prompt_2=None, device=pipeline._execution_device,
            max_sequence_length=max_sequence_length)
        return Conditioning(prompt_embeds=embeds, pooled=pooled)

    def predict(self, transformer, latents, t, cond, guidance=None):
        """Velocity `(B, C, h, w)` for σ = `t`; guidance defaults to 3.5 on guidance-distilled models."""
        FluxPipeline = self.pipeline_cls  # noqa: N806 (its static packing helpers)
        b, c, h, w = latents.shape
        packed = FluxPipeline._pack_latents(latents, b, c, h, w)  # (B, h/2·w/2, 4C)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latents.device, latents.dtype)
        txt_ids = torch.zeros(cond.prompt_embeds.shape[1], 3, device=latents.device, dtype=latents.dtype)
        t = (t.expand(b) if t.ndim == 0 else t).to(latents.dtype)
        g = None
        if unwrap(transformer).config.guidance_embeds:
            # the model scales t and guidance by 1000 itself; FluxPipeline passes σ and the raw scale
            scale = self.default_guidance if guidance is None else guidance
            g = torch.full((b,), float(scale), device=latents.device, dtype=latents.dtype)
        out = transformer(
            hidden_states=packed,
            encoder_hidden_states=cond.prompt_embeds,
            pooled_projections=cond.pooled,
            timestep=t,
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=g,
            return_dict=False,
        )[0]
        # _unpack_latents takes pixel sizes; any scale factor works if we pass h·s, w·s
        return FluxPipeline._unpack_latents(out, h * 8, w * 8, 8)

    def uses_negative(self, true_cfg_scale):
        """Only with true CFG: FLUX.1-dev is guidance-distilled and needs no negative branch."""
        return true_cfg_scale > 1

    def pipeline_inputs(self, cond, negative, true_cfg_scale):
        """T5 tokens and the pooled CLIP vector; a negative branch only when `negative` is given."""
        inputs = dict(prompt_embeds=cond.prompt_embeds, pooled_prompt_embeds=cond.pooled)
        if negative is not None:
            n = cond.prompt_embeds.shape[0]
            inputs.update(negative_prompt_embeds=negative.prompt_embeds.expand(n, -1, -1),
                          negative_pooled_prompt_embeds=negative.pooled.expand(n, -1), true_cfg_scale=true_cfg_scale)
        return inputs

    def wrap_output(self, raw):
        """Both block kinds return `(text, image)`."""
        return BlockOutput(image=raw[1], text=raw[0])

    def unwrap_output(self, out):
        """`(text, image)`, as the blocks return them."""
        return out.text, out.image

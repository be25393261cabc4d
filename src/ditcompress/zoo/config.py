"""Params of the pretrain stage (`pretrain:` in params.yaml): sizes and step budgets of the tiny zoo.

The step counts are the time budget: on a 2-core CPU the defaults train the whole zoo (two
VAEs, CLIP, the PixArt and the Flux teacher, two at a time) in about 61 minutes
(docs/shapes_world.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ditcompress.utils.config import Strict


class TextEncoderConfig(Strict):
    """The frozen T5 encoder both teachers share (PixArt-Σ and FLUX.1 both use T5-XXL)."""

    width: int = Field(64, ge=8, le=4096)
    heads: int = Field(4, ge=1, le=64)
    layers: int = Field(2, ge=1, le=24)
    max_length: int = Field(16, ge=4, le=512)  # tokens per prompt including </s>
    # relative-position bias that makes each head read one neighbouring word (see text.py)
    neighbour_bias: float = Field(4.0, ge=0.0, le=20.0)

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.width % self.heads:
            raise ValueError(f"width: {self.width} is not divisible by heads={self.heads}")
        return self


class VaeConfig(Strict):
    """A small `AutoencoderKL`; each entry of `channels` after the first halves the resolution.

    Three entries: 4x down-sampling, so 32 px images become 8x8 latents and a teacher sees 16
    tokens; the round trip of the ground truth scores GenEval 1.000, so the VAE does not limit the
    teachers. A 2x VAE made teacher steps ~4x dearer for no gain (docs/shapes_world_experiments.md).
    """

    channels: tuple[int, ...] = Field((16, 32, 64), min_length=2, max_length=4)
    layers_per_block: int = Field(1, ge=1, le=4)
    norm_groups: int = Field(8, ge=1, le=64)
    mid_attention: bool = False  # the real VAEs' mid-block attention; ~2x slower here, no gain on shapes
    # 2400 steps (~11 min): at 1200 some VAEs lost colours in their round trip (experiment log)
    steps: int = Field(2400, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    # LDM's weight; larger ones reconstruct as well but gave no better Flux teacher (experiment log)
    kl_weight: float = Field(1e-6, ge=0.0, le=1.0)
    # weight of the 2x scale-equivariance loss (vae.vae_loss); 0 = off. It smooths the latent but
    # moved the Flux teacher within noise (experiment log, "Diffusability")
    scale_equivariance: float = Field(0.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _groups_divide_channels(self):
        for c in self.channels:
            if c % self.norm_groups:
                raise ValueError(f"channels: {c} is not divisible by norm_groups={self.norm_groups}")
        return self


class ClipConfig(Strict):
    """A tiny `CLIPModel` trained contrastively on the image-caption pairs (for CLIP score, CMMD)."""

    width: int = Field(64, ge=8, le=2048)
    layers: int = Field(2, ge=1, le=48)
    heads: int = Field(4, ge=1, le=64)
    patch_size: int = Field(4, ge=1, le=64)
    projection_dim: int = Field(64, ge=4, le=2048)
    max_length: int = Field(16, ge=4, le=77)  # text positions including start/end tokens
    steps: int = Field(800, ge=1, le=1_000_000)
    batch_size: int = Field(128, ge=2, le=65536)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(50, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.width % self.heads:
            raise ValueError(f"width: {self.width} is not divisible by heads={self.heads}")
        return self


class TeacherTrainConfig(Strict):
    """Optimisation of a teacher (shared by both families)."""

    steps: int = Field(4000, ge=1, le=10_000_000)
    # 32 beats 64 per second of CPU here: ~1.6x the steps for 0.8x the samples
    batch_size: int = Field(32, ge=1, le=65536)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(200, ge=0, le=1_000_000)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, gt=0.0, le=1e6)
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0)
    cfg_dropout: float = Field(0.1, ge=0.0, le=1.0)  # empty-prompt rate, enables CFG at sampling
    # power p of the whitening z' = Λ^-p·Uᵀ(z − μ) folded into the family's VAE (zoo/vae.py):
    # 0 leaves the latent as trained, 0.5 whitens it, 0.25 half-whitens
    latent_whitening: float = Field(0.0, ge=0.0, le=0.5)


class PixArtTeacherConfig(TeacherTrainConfig):
    """A `PixArtTransformer2DModel` teacher (DDPM objective)."""

    # 16000 steps (~49 min of one core, the stage's longest job): 8000 left two objects and
    # position far below the 0.80 target (docs/shapes_world.md)
    steps: int = Field(16000, ge=1, le=10_000_000)
    layers: int = Field(8, ge=1, le=64)
    heads: int = Field(4, ge=1, le=64)
    head_dim: int = Field(32, ge=4, le=256)
    patch_size: int = Field(2, ge=1, le=8)
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    # PixArt-Σ trains on DDPM's linear betas; on latents this small those leave almost no signal
    # for the last ~40% of the steps, so the cosine schedule (improved DDPM) is the default here
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    # how training draws timesteps: DDPM's uniform, or SD3's logit-normal (more of the middle
    # noise levels, where objects take shape and the tiny teacher is weakest; experiment log)
    timestep_sampling: Literal["uniform", "logit_normal"] = "logit_normal"


class FluxTeacherConfig(TeacherTrainConfig):
    """A `FluxTransformer2DModel` teacher (rectified flow, guidance embedding)."""

    # 12000 steps (~44 min of one core): what fits on the second core beside the PixArt teacher
    # without lengthening the stage; 16000 gained 0.01 (docs/shapes_world.md)
    steps: int = Field(12000, ge=1, le=10_000_000)
    double_layers: int = Field(2, ge=1, le=64)
    single_layers: int = Field(4, ge=0, le=128)
    heads: int = Field(4, ge=1, le=64)
    head_dim: int = Field(32, ge=4, le=256)
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)  # (index, row, column), sums to head_dim
    sigma_weighting: Literal["uniform", "logit_normal"] = "logit_normal"

    @model_validator(mode="after")
    def _rope_fills_head(self):
        if sum(self.axes_dims_rope) != self.head_dim:
            raise ValueError(f"axes_dims_rope: {list(self.axes_dims_rope)} must sum to head_dim={self.head_dim}")
        if any(d % 2 for d in self.axes_dims_rope):
            raise ValueError(f"axes_dims_rope: {list(self.axes_dims_rope)} must be even (RoPE rotates pairs)")
        return self


class PretrainConfig(Strict):
    """The whole `pretrain:` section."""

    threads: int = Field(2, ge=1, le=256)  # CPU threads for the stage, shared among the workers
    # components trained at a time, each in its own process with threads // workers intra-op
    # threads (results depend on that number, not on the schedule); two workers with one thread
    # each train ~1.7x faster than one with two on a 2-core CPU (zoo/jobs.py)
    workers: int = Field(2, ge=1, le=64)
    # where the components train and the sample grids render: "auto" = a GPU when there is one.
    # A GPU gives other weights than a CPU (other arithmetic), as another CPU does
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    text: TextEncoderConfig = TextEncoderConfig()
    vae: VaeConfig = VaeConfig()
    clip: ClipConfig = ClipConfig()
    pixart: PixArtTeacherConfig = PixArtTeacherConfig()
    flux: FluxTeacherConfig = FluxTeacherConfig()
    grid_prompts_per_task: int = Field(4, ge=1, le=1000)  # sample grids: prompts of each GenEval tag

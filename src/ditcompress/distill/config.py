"""The `distill:` section of params.yaml: the loss (eq 4.10, 5.1.4), the protocol (5.1.5) and the recipe.

The recipe (optimiser, learning rate, batch, steps per phase, ...) depends on the teacher:
`recipe_for` fills every recipe key that params.yaml leaves unset from `RECIPES[preset]`, as
`generate` does with the preset's inference settings. The real presets use thesis tab. 5.1 (CAME,
lr 2e-5, batch 16, 38k + 38k + 12.5k steps); the shapes presets use what recovers a tiny student
on two CPU cores within the stage's ten-minute budget (docs/distill.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ditcompress.utils.config import Strict, known

# name -> (λ_task, λ_out, λ_feat, normalised): the five objectives of 5.1.4
LOSSES: dict[str, tuple[float, float, float, bool]] = {
    "out": (0.0, 1.0, 0.0, False),                # L_OutKD
    "standard": (0.0, 1.0, 1.0, False),           # L_OutKD + L_FeatKD
    "hybrid": (1.0, 1.0, 1.0, False),             # L_OutKD + L_FeatKD + L_Task
    "normalized": (0.0, 1.0, 1.0, True),          # L_OutKD,norm + L_FeatKD,norm
    "normalized_hybrid": (1.0, 1.0, 1.0, True),   # L_OutKD,norm + L_FeatKD,norm + L_Task
}
TERMS = ("task", "out", "feat")

# protocol -> phases in order, each (phase, dataset, what trains) (5.1.5)
PROTOCOLS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "three_stage": (("local", "laion", "local"), ("global", "laion", "all"), ("domain", "domain", "all")),
    "two_stage": (("global", "laion", "all"), ("domain", "domain", "all")),
    "laion_only": (("local", "laion", "local"), ("global", "laion", "all")),
}
PHASES = ("local", "global", "domain")


def _named_counts(values: dict, names, what: str, noun: str) -> dict:
    """`values` when every key is one of `names` and every value >= 0; else the one-line error."""
    for name, value in values.items():
        known(name, names, what)
        if value < 0:
            raise ValueError(f"{name}: {noun} must be >= 0 (got {value})")
    return values


class Recipe(Strict):
    """Optimisation settings; each one params.yaml leaves unset comes from the teacher's preset."""

    optimizer: Literal["came", "adamw"] = "came"
    lr: float = Field(2e-5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.03, ge=0.0, le=1.0)
    betas: tuple[float, ...] = (0.9, 0.999, 0.9999)  # CAME: 3, AdamW: 2
    eps: tuple[float, ...] = (1e-30, 1e-16)  # CAME: 2, AdamW: 1
    warmup_steps: int = Field(1000, ge=0, le=10_000_000)  # per phase (each phase has its own optimiser)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after warm-up; cosine decays to 10 %
    batch_size: int = Field(16, ge=1, le=65536)  # global: split over the processes of `accelerate launch`
    grad_clip: float = Field(0.001, gt=0.0, le=1e6)
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0)  # empty prompt, keeps CFG working
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)  # 0: the saved student is the trained weights
    # how training draws noise levels: uniform (DDPM, PixArt) or SD3's logit-normal
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    steps: dict[str, int] = {"local": 38_000, "global": 38_000, "domain": 12_500}

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: dict[str, int]) -> dict[str, int]:
        return _named_counts(steps, PHASES, "phase", "phase steps")

    @model_validator(mode="after")
    def _optimizer_shapes(self) -> "Recipe":
        want = {"came": (3, 2), "adamw": (2, 1)}[self.optimizer]
        if (len(self.betas), len(self.eps)) != want:
            raise ValueError(f"{self.optimizer} takes {want[0]} betas and {want[1]} eps "
                             f"(got betas {list(self.betas)}, eps {list(self.eps)})")
        return self


# thesis tab. 5.1; 38k + 38k + 12.5k steps as in 5.1.1
_THESIS = Recipe()
# shapes world: the teacher's own recipe (AdamW at its lr 2e-3, warm-up, cosine, EMA) recovers a
# 5-of-8-block student in ~8 min on 2 cores; at 1e-3 it reached 0.763 GenEval, at 2e-3 0.784
# (docs/distill.md); CAME at 2e-5 barely moves a tiny student in that budget
_SHAPES = Recipe(optimizer="adamw", lr=2e-3, weight_decay=0.0, betas=(0.9, 0.99), eps=(1e-8,), warmup_steps=100,
                 lr_schedule="cosine", batch_size=32, grad_clip=1.0, mixed_precision="no", ema_decay=0.995,
                 timestep_sampling="logit_normal",  # as the shapes teachers were trained
                 steps={"local": 300, "global": 4500, "domain": 600})
RECIPES: dict[str, Recipe] = {"shapes-pixart": _SHAPES, "shapes-flux": _SHAPES, "pixart-sigma": _THESIS,
                              "flux-dev": _THESIS}


class DistillConfig(Recipe):
    """What is distilled, with which loss and protocol; the recipe keys come from the preset unless set."""

    student: str = Field("models/students/compressed", min_length=1)  # the compress stage's output
    loss: str = "normalized_hybrid"
    weights: dict[str, float] = {}  # e.g. {task: 0.5}: replaces the named loss's λ for these terms
    mapping: Literal["last", "all"] = "last"  # feature pairs for removed blocks (compress.feature_mapping)
    protocol: str = "three_stage"
    laion: str = Field("data/captions", min_length=1)  # captions of `caption.source` (the "LAION" set)
    domain: str = Field("data/teacher", min_length=1)  # the generate stage's teacher-generated set
    checkpoint_every: int = Field(500, ge=1, le=10_000_000)
    # one folder per run (settings and inputs) under it, not a DVC output (distill.stage.checkpoint_dir)
    checkpoint_dir: str = Field("checkpoints/distill", min_length=1)
    log_every: int = Field(25, ge=1, le=100_000)  # MLflow: means over this many steps
    gradient_checkpointing: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    sample_prompts: int = Field(8, ge=0, le=256)  # teacher | student grid at the end
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("loss")
    @classmethod
    def _loss(cls, name: str) -> str:
        return known(name, LOSSES, "loss")

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, name: str) -> str:
        return known(name, PROTOCOLS, "protocol")

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        return _named_counts(weights, TERMS, "loss term", "loss weights")

    @model_validator(mode="after")
    def _optimizer_shapes(self) -> "DistillConfig":
        return self  # checked by `recipe_for` once the preset has filled the unset keys

    @model_validator(mode="after")
    def _something_to_learn(self) -> "DistillConfig":
        if not any(self.lambdas().values()):
            raise ValueError(f"loss {self.loss!r} with weights {self.weights}: every λ is zero, nothing to learn")
        return self

    def lambdas(self) -> dict[str, float]:
        """λ_task, λ_out, λ_feat of eq 4.10: the named loss's, with `weights` in place where given."""
        named = dict(zip(TERMS, LOSSES[self.loss][:3]))
        return {t: float(self.weights.get(t, named[t])) for t in TERMS}

    @property
    def normalized(self) -> bool:
        """Whether the output and feature terms are normalised (eq 4.11–4.14)."""
        return LOSSES[self.loss][3]

    def phases(self) -> list[tuple[str, str, str, int]]:
        """(phase, dataset, what trains, steps) of the protocol, phases with 0 steps left out."""
        return [(p, data, train, self.steps.get(p, 0)) for p, data, train in PROTOCOLS[self.protocol]
                if self.steps.get(p, 0) > 0]


def recipe_for(cfg: DistillConfig, preset_name: str) -> DistillConfig:
    """`cfg` with every recipe key that params.yaml leaves unset taken from the preset's recipe.

    `steps` merges per phase: `-S '+distill.steps.global=1000'` keeps the preset's other phases.
    """
    base = RECIPES[preset_name]
    unset = {f: getattr(base, f) for f in Recipe.model_fields if f not in cfg.model_fields_set}
    values = {**cfg.model_dump(), **unset}
    if "steps" in cfg.model_fields_set:
        values["steps"] = {**base.steps, **cfg.steps}
    try:
        Recipe.model_validate({f: values[f] for f in Recipe.model_fields})
    except ValueError as exc:  # pydantic's ValidationError: keep its message, one line
        from ditcompress.errors import UserError

        raise UserError(f"distill: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return DistillConfig.model_validate(values)

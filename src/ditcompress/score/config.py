"""The `score:` section of params.yaml: which criteria run on which model, and how blocks are selected."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ditcompress.utils.config import Strict, known

# criterion -> what it measures per block (thesis 4.2.1; `damage` is the shapes world's ground truth)
CRITERIA = {
    "magnitude": "Frobenius norm of the block's weight matrices (eq 4.2)",
    "cka": "1 - mean linear CKA of the block's input and output features (eq 4.3)",
    "metric": "CMMD and CLIP score with the block modified alone, and their rank sum (eq 4.4)",
    "cmmd_per_param": "CMMD of the modified block per removed parameter (eq 4.15)",
    "rms": "RMS of the features after the block (fig 5.12)",
    "damage": "GenEval drop with the block modified alone (measured, beyond the thesis)",
}
# what `selection.criterion` may rank by: criteria values (not `rms`, which is no importance)
RANKINGS = ("magnitude", "cka", "cmmd", "clip_score", "rank_sum", "cmmd_per_param", "damage")
# rankings greedy can recompute on the modified model at every iteration (they need renders)
GREEDY_RANKINGS = ("cmmd", "clip_score", "rank_sum", "cmmd_per_param")
ALGORITHMS = ("ranking", "greedy", "optuna", "tinyfusion", "exhaustive", "manual")


class TinyFusionConfig(Strict):
    """Learnable block masks (TinyFusion, eq 4.5): K groups of M blocks keeping N per group.

    The blocks are split into consecutive groups of `group_size` (null: one group of all blocks);
    each group drops its share of `selection.k`, so k·M must be a multiple of the block count.
    """

    group_size: int | None = Field(None, ge=2)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)  # LoRA (or full) weights
    mask_lr: float = Field(5e-2, gt=0)  # mask logits
    lora_rank: int = Field(8, ge=0)  # 0: the full weights train instead of LoRA adapters
    tau: tuple[float, float] = (4.0, 0.1)  # Gumbel-softmax temperature, annealed first -> last
    loss: Literal["task", "distill"] = "task"  # denoising MSE, or MSE to the teacher's output
    data: str = "data/teacher"  # the generate stage's output: images and prompts to train on


class SelectionConfig(Strict):
    """How blocks are chosen from the criteria (thesis 4.2.2)."""

    algorithm: str = "greedy"
    criterion: str = "rank_sum"  # what `ranking` sorts by and what greedy re-ranks by every iteration
    k: int | None = Field(3, ge=1)  # blocks to modify (greedy: at most)
    target: float | None = Field(None, gt=0, lt=1)  # greedy: stop once the kept fraction of parameters <= this
    cmmd_threshold: float | None = Field(None, gt=0)  # greedy: stop once CMMD passes it (thesis 0.1)
    blocks: list[str] = []  # manual
    n_trials: int = Field(100, ge=1)  # optuna (thesis: 300)
    max_subsets: int = Field(200, ge=1)  # exhaustive refuses more candidate subsets than this
    tinyfusion: TinyFusionConfig = TinyFusionConfig()

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, name: str) -> str:
        return known(name, ALGORITHMS, "algorithm")

    @field_validator("criterion")
    @classmethod
    def _known_ranking(cls, name: str) -> str:
        return known(name, RANKINGS, "criterion")

    @model_validator(mode="after")
    def _consistent(self) -> "SelectionConfig":
        if self.algorithm == "greedy" and self.criterion not in GREEDY_RANKINGS:
            raise ValueError(f"criterion: greedy re-ranks by rendering, so it must be one of "
                             f"{', '.join(GREEDY_RANKINGS)} (got {self.criterion!r})")
        if self.algorithm == "greedy" and self.k is None and self.target is None and self.cmmd_threshold is None:
            raise ValueError("k: greedy needs a stop: k, target or cmmd_threshold")
        if self.algorithm in ("ranking", "optuna", "tinyfusion", "exhaustive") and self.k is None:
            raise ValueError(f"k: {self.algorithm} needs the number of blocks to modify")
        if self.algorithm == "manual" and not self.blocks:
            raise ValueError("blocks: manual selection needs the block ids to modify")
        return self


class ScoreConfig(Strict):
    """Block importance of the teacher (or of a saved student) and the selection of blocks to modify."""

    student: str | None = Field(None, min_length=1)  # a saved student directory to score instead of the teacher
    criteria: list[str] = list(CRITERIA)
    modification: Literal["remove", "svd"] = "remove"  # what "modify a block" means for the metric criteria
    c_fixed: float = Field(0.6, gt=0, lt=1)  # svd: the fraction of each linear's parameters removed (fig 5.6)
    prompts: int = Field(100, ge=2)  # reference prompts rendered per candidate (thesis: 100 LAION images)
    cka_prompts: int = Field(8, ge=1)  # prompts whose every sampling step feeds CKA and RMS
    damage_images_per_prompt: int = Field(2, ge=1)  # GenEval images per prompt for the measured damage
    batch_size: int = Field(100, ge=1)  # images rendered per pipeline call
    device: str = "auto"
    seed: int = Field(0, ge=0)  # per-image seeds of the renders, optuna's sampler, TinyFusion's draws
    selection: SelectionConfig = SelectionConfig()

    @field_validator("criteria")
    @classmethod
    def _known_criteria(cls, names: list[str]) -> list[str]:
        for name in names:
            known(name, CRITERIA, "criterion")
        if not names:
            raise ValueError("at least one criterion")
        return names

    @model_validator(mode="after")
    def _needs(self) -> "ScoreConfig":
        if "cmmd_per_param" in self.criteria and "metric" not in self.criteria:
            raise ValueError("criteria: cmmd_per_param needs metric (it divides the metric's CMMD)")
        sel = self.selection
        need = {"magnitude": "magnitude", "cka": "cka", "damage": "damage", "cmmd_per_param": "cmmd_per_param"}
        if sel.algorithm == "ranking":
            crit = need.get(sel.criterion, "metric")
            if crit not in self.criteria:
                raise ValueError(f"selection.criterion: ranking by {sel.criterion} needs criterion {crit!r} "
                                 f"in score.criteria")
        return self

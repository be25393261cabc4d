"""The `compress:` section of params.yaml: which blocks, and what is done to them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ditcompress.utils.config import Strict, known

# 5.1.7's splits of the SVD budget: fractions of each group's linear parameters removed (eq 4.9)
RATIO_PRESETS: dict[str, dict[str, float]] = {
    "equal": {"attn": 0.6, "mlp": 0.6},
    "attention_dominant": {"attn": 0.8, "mlp": 0.4},
    "mlp_dominant": {"attn": 0.4, "mlp": 0.8},
}


class CompressConfig(Strict):
    """Build a student from the teacher (or from `student`, a later round) by one operator.

    `blocks` empty: the `score` stage's selection (`data/score/selection.json`); otherwise these
    block ids. Methods: `remove` (eq 4.6); `svd` (4.4.2; a layer a previous round factorised is
    re-factorised, W_t = A_t B_t); `iterated_svd` (4.4.3: the same, but `student` must be a saved
    student with factorised layers in the blocks); `grasp` (4.4.4: SVD keeping the singular values
    with the largest task-loss gradients on `grasp_images` generated images × `grasp_timesteps`).
    `ratio`: the fraction of each attention and MLP linear's parameters removed (5.1.6), a mapping
    of parts or groups to fractions, e.g. `{attn: 0.8, mlp: 0.4}`, or a preset of 5.1.7
    (`RATIO_PRESETS`). `ranks`: explicit ranks per part or group (5.1.6), replacing `ratio` there.
    """

    method: Literal["remove", "svd", "iterated_svd", "grasp"] = "remove"
    blocks: list[str] = []
    ratio: float | dict[str, float] | str = 0.6
    ranks: dict[str, int] | None = None
    student: str | None = Field(None, min_length=1)  # a saved student to compress further
    selection: str = Field("data/score/selection.json", min_length=1)
    grasp_data: str = Field("data/teacher", min_length=1)  # the generate stage's images and prompts
    grasp_images: int = Field(32, ge=1)  # calibration images (thesis: 200)
    grasp_timesteps: int = Field(8, ge=1)  # evenly spaced times per image (thesis: all 1000 DDPM steps)
    grasp_timestep_batch: int = Field(8, ge=1)  # times per forward/backward pass (memory, not results)
    grasp_accumulate: Literal["signed_mean", "abs_per_image"] = "signed_mean"  # grasp_scores' ablation
    seed: int = Field(0, ge=0, le=2**31 - 1)  # GRASP: calibration image order and noise draws

    @field_validator("ratio")
    @classmethod
    def _preset(cls, ratio):
        return known(ratio, list(RATIO_PRESETS), "ratio preset") if isinstance(ratio, str) else ratio

    @field_validator("ranks")
    @classmethod
    def _ranks(cls, ranks):
        for key, k in (ranks or {}).items():
            if k < 1:
                raise ValueError(f"SVD ranks are positive integers (got {k} for {key!r})")
        return ranks

    @model_validator(mode="after")
    def _ratios(self) -> "CompressConfig":
        values = [self.ratio] if isinstance(self.ratio, (int, float)) else list(self.svd_ratio().values())
        for v in values:
            if not 0 < v < 1:
                raise ValueError(f"ratio: SVD ratios are fractions in (0, 1) (got {v})")
        return self

    def svd_ratio(self) -> float | dict[str, float]:
        """`ratio` with a preset name replaced by its mapping."""
        return dict(RATIO_PRESETS[self.ratio]) if isinstance(self.ratio, str) else self.ratio

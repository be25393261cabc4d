"""The `schedule:` section of params.yaml: how a student is compressed round by round (thesis 4.6).

Every key is checked here in isolation; what needs the teacher's block sizes (a target no
schedule can reach, N larger than the model) is checked by `ditcompress.schedule.run` before any
work starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ditcompress.distill.config import PHASES, _named_counts
from ditcompress.utils.config import Strict, known

KINDS = ("one_shot", "progressive", "linear_progressive")
CRITERIA = ("rank_sum", "cmmd", "clip_score", "cmmd_per_param")  # greedy's re-ranking (4.2.2)

# steps of each round's distillation when params.yaml leaves `steps` unset: the shapes presets
# train ~3 min a round so five rounds fit the 30-minute budget; the real presets one thesis
# recipe per round (38k + 38k + 12.5k = 88.5k, the increment of tab. 5.2)
ROUND_STEPS: dict[str, dict[str, int] | None] = {
    "shapes-pixart": {"local": 100, "global": 1600, "domain": 300},
    "shapes-flux": {"local": 100, "global": 1600, "domain": 300},
    "pixart-sigma": None,  # the distill recipe's (tab. 5.1)
    "flux-dev": None,
}


class LinearConfig(Strict):
    """Linear progressive compression (4.6.3): S, N and k of eq 4.16–4.21, per round."""

    base_ratio: float = Field(0.5, gt=0.0, lt=1.0)  # S: the ratio of the least important block
    remove: float = Field(0.125, gt=0.0, lt=1.0)  # N per round, as a fraction of the teacher's parameters
    blocks: int | None = Field(4, ge=1, le=10_000)  # k: blocks compressed per round (null: all)


class ScheduleConfig(Strict):
    """Which schedule, to what size, and how much retraining per round."""

    kind: str = "progressive"
    target: float = Field(0.5, gt=0.0, lt=1.0)  # fraction of the teacher's parameters kept at the end
    method: Literal["remove", "svd"] = "remove"  # one_shot / progressive (linear_progressive: SVD)
    c_fixed: float = Field(0.6, gt=0.0, lt=1.0)  # svd: each block's ratio; linear: the probe ratio of eq 4.15
    criterion: str = "rank_sum"  # greedy's re-ranking of the remaining blocks
    blocks_per_round: int | None = Field(1, ge=1, le=10_000)  # progressive: blocks modified per round
    cmmd_threshold: float | None = Field(None, gt=0.0)  # progressive: or until CMMD reaches it (thesis 0.1)
    linear: LinearConfig = LinearConfig()
    max_rounds: int = Field(50, ge=1, le=10_000)
    steps: dict[str, int] | None = None  # each round's phase steps (null: ROUND_STEPS of the preset)
    one_shot_rounds: int | None = Field(None, ge=1, le=10_000)  # one_shot trains this many rounds' steps
    evaluate: bool = True  # score every round's student with the evaluate stage's metrics
    checkpoint_dir: str = Field("checkpoints/schedule", min_length=1)

    @field_validator("kind")
    @classmethod
    def _kind(cls, name: str) -> str:
        return known(name, KINDS, "schedule kind")

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, name: str) -> str:
        return known(name, CRITERIA, "greedy criterion")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: dict[str, int] | None) -> dict[str, int] | None:
        return steps if steps is None else _named_counts(steps, PHASES, "phase", "phase steps")

    @model_validator(mode="after")
    def _progressive_stop(self) -> "ScheduleConfig":
        if self.kind == "progressive" and self.blocks_per_round is None and self.cmmd_threshold is None:
            raise ValueError("progressive: a round needs a stop: blocks_per_round or cmmd_threshold")
        return self

    def round_steps(self, preset: str, recipe_steps: dict[str, int]) -> dict[str, int]:
        """Phase steps of one round: `steps` over the preset's default (or the distill recipe's)."""
        base = ROUND_STEPS.get(preset) or recipe_steps
        return {**base, **(self.steps or {})}

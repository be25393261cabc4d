"""The `compress:` section of params.yaml: which blocks, and what is done to them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ditcompress.utils.config import Strict


class CompressConfig(Strict):
    """Build a student from the teacher (or from `student`, a later round) by one operator.

    `blocks` empty: the `score` stage's selection (`data/score/selection.json`); otherwise these
    block ids. `ratio` (svd): one fraction of each attention and MLP linear's parameters removed
    (5.1.6), or a mapping of parts or groups to fractions, e.g. `{attn: 0.8, mlp: 0.4}` (5.1.7).
    SVD of a layer a previous round factorised is iterated SVD (4.4.3): W_t = A_t B_t re-factorised.
    """

    method: Literal["remove", "svd"] = "remove"
    blocks: list[str] = []
    ratio: float | dict[str, float] = 0.6
    student: str | None = Field(None, min_length=1)  # a saved student to compress further
    selection: str = Field("data/score/selection.json", min_length=1)

    @model_validator(mode="after")
    def _ratios(self) -> "CompressConfig":
        values = [self.ratio] if isinstance(self.ratio, (int, float)) else list(self.ratio.values())
        for v in values:
            if not 0 < v < 1:
                raise ValueError(f"ratio: SVD ratios are fractions in (0, 1) (got {v})")
        return self

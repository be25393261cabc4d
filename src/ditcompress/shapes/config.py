"""Params of the shapes-world dataset (`data:` in params.yaml); the top-level `seed` seeds it."""

from pydantic import Field, model_validator

from ditcompress.shapes.vocab import check_vocabulary
from ditcompress.utils.config import Strict


class ShapesDataConfig(Strict):
    """Size and vocabulary of the procedural dataset."""

    # >= 24 so that four objects of >= 6 px (the smallest a triangle still reads as one) fit
    image_size: int = Field(32, ge=24, le=256)
    n_train: int = Field(20000, ge=16, le=10_000_000)
    n_reference: int = Field(100, ge=4, le=100_000)
    # GenEval prompts per task tag (GenEval itself: 80-100); repeated when the vocabulary has fewer
    prompts_per_task: int = Field(16, ge=1, le=10_000)
    # DPG-Bench-style dense prompts (DPG-Bench itself: 1065)
    dpg_prompts: int = Field(32, ge=1, le=10_000)
    # circle / triangle / bar differ at the scale a 4x-latent teacher can draw (README, "The shapes
    # world"); square and circle differ only in their corners (template IoU 0.84)
    shapes: tuple[str, ...] = ("circle", "triangle", "bar")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")

    @model_validator(mode="after")
    def _vocabulary_expresses_every_task(self):
        check_vocabulary(self.shapes, self.colors)
        return self

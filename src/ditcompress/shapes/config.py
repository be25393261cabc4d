"""Params of the shapes-world dataset (`data:` in params.yaml)."""

from pydantic import Field, model_validator

from ditcompress.utils.config import Strict


class ShapesDataConfig(Strict):
    """Size and vocabulary of the procedural dataset."""

    image_size: int = Field(32, ge=16, le=256)
    n_train: int = Field(20000, ge=16, le=10_000_000)
    n_reference: int = Field(100, ge=4, le=100_000)
    prompts_per_task: int = Field(16, ge=1, le=10_000)
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")

    @model_validator(mode="after")
    def _vocabulary_expresses_every_task(self):
        # colour binding and two-object prompts need two distinct colours / classes
        if len(set(self.shapes)) < 2:
            raise ValueError("shapes: need at least 2 distinct shapes for two-object prompts")
        if len(set(self.colors)) < 2:
            raise ValueError("colors: need at least 2 distinct colours for colour binding")
        return self

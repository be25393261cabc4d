"""Base class for every params section (strict: unknown keys are errors)."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Frozen pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""Base class for every params section (strict: unknown keys are errors) and its name check."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Frozen pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def known(name: str, names, what: str) -> str:
    """`name` if it is one of `names`; else the one-line error a field validator raises."""
    if name not in names:
        raise ValueError(f"unknown {what} {name!r} (known: {', '.join(names)})")
    return name

"""Typed, validated view of `params.yaml`: parsed once, every error one line naming the key.

Each concern defines the config of its own section next to its code (`shapes/config.py`, ...);
this module composes them and is the only place that reads the YAML file. Unknown keys, wrong
types and out-of-range values raise `ParamsError` with a single line such as

    params.yaml: data.image_size: must be >= 24 (got 4)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from ditcompress.compress.config import CompressConfig
from ditcompress.distill.config import DistillConfig
from ditcompress.data.config import CaptionConfig, GenerateConfig
from ditcompress.errors import UserError
from ditcompress.metrics.config import EvaluateConfig
from ditcompress.models.presets import PRESETS
from ditcompress.schedule.config import ScheduleConfig
from ditcompress.score.config import ScoreConfig
from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.utils.config import Strict, known
from ditcompress.zoo.config import PretrainConfig


class ParamsError(UserError):
    """A `params.yaml` problem; `str()` is one line that names the key."""


class ModelConfig(Strict):
    """Which teacher the pipeline compresses (see `ditcompress.models.presets`)."""

    preset: str = "shapes-pixart"
    # the teacher's weights in place of the preset's: a hub id or a local pipeline directory (the
    # preset still fixes the family and the sampler settings)
    pretrained: str | None = Field(None, min_length=1)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        """A name of `PRESETS`."""
        return known(name, PRESETS, "preset")


class TrackingConfig(Strict):
    """MLflow settings; the tracking URI comes from `MLFLOW_TRACKING_URI` or `<repo>/mlflow.db`."""

    experiment: str = Field("ditcompress", min_length=1)


class Params(Strict):
    """The whole of `params.yaml`."""

    seed: int = Field(0, ge=0, le=2**31 - 1)
    model: ModelConfig = ModelConfig()
    tracking: TrackingConfig = TrackingConfig()
    data: ShapesDataConfig = ShapesDataConfig()
    pretrain: PretrainConfig = PretrainConfig()
    caption: CaptionConfig = CaptionConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    score: ScoreConfig = ScoreConfig()
    compress: CompressConfig = CompressConfig()
    distill: DistillConfig = DistillConfig()
    schedule: ScheduleConfig = ScheduleConfig()


def _format_error(err: dict[str, Any], source: str) -> str:
    """One line for one pydantic error: `<source>: <dotted.key>: <message> (got <value>)`."""
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    kind, ctx = err["type"], err.get("ctx") or {}
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind in bounds:
        bound = next(iter(ctx.values()))
        msg = f"must be {bounds[kind]} {bound} (got {err['input']!r})"
    elif kind == "value_error":
        return f"{source}: {key}: {err['msg'].removeprefix('Value error, ')}"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected')} (got {err['input']!r})"
    else:
        msg = f"{err['msg'].rstrip('.')} (got {err['input']!r})"
    return f"{source}: {key}: {msg}"


def parse_params(raw: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise `ParamsError` naming the first bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ParamsError(_format_error(exc.errors()[0], source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml` (or another file)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping (got {type(raw).__name__})")
    return parse_params(raw, str(path))


def flatten(params: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of params for MLflow (`data.image_size: 32`)."""
    items = params.model_dump() if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

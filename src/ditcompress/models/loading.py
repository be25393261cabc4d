"""Loading transformers and pipelines through diffusers' `from_pretrained`, strictly.

diffusers only warns when checkpoint weights and the model built from the config disagree (and
re-initialises what is missing); a mismatched student would then silently be a different model,
so here any missing, unexpected or mis-shaped weight is an error. Directories holding a
compression manifest (SVD students) are rebuilt by `ditcompress.compress.load_student`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn


class WeightsMismatchError(RuntimeError):
    """Checkpoint weights do not fit the architecture built from its config."""


def transformer_dir(path_or_id, subfolder: str | None) -> Path | None:
    """The local directory holding the transformer's config.json, or None for a hub id."""
    path = Path(path_or_id)
    if not path.is_dir():
        return None
    if subfolder and (path / subfolder / "config.json").is_file():
        return path / subfolder
    return path if (path / "config.json").is_file() else None


def check_loading_info(info: dict, where) -> None:
    """Raise `WeightsMismatchError` (one line) unless every weight was loaded exactly."""
    bad = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if any(bad.values()):
        summary = ", ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in bad.items() if v)
        raise WeightsMismatchError(f"{where}: weights do not match the architecture of its config: {summary}")


def load_transformer(adapter, path_or_id, *, subfolder="transformer", torch_dtype=None) -> nn.Module:
    """A family's transformer from a hub id, a pipeline dir or a transformer dir (students included)."""
    local = transformer_dir(path_or_id, subfolder)
    if local is not None:
        from ditcompress.compress.student import MANIFEST, load_student

        if (local / MANIFEST).is_file():
            return load_student(local, torch_dtype=torch_dtype)
        model, info = adapter.transformer_cls.from_pretrained(
            local, torch_dtype=torch_dtype, output_loading_info=True)
    else:
        model, info = adapter.transformer_cls.from_pretrained(
            path_or_id, subfolder=subfolder, torch_dtype=torch_dtype, output_loading_info=True)
    check_loading_info(info, local or path_or_id)
    return model


def load_pipeline(adapter, path_or_id, *, transformer=None, torch_dtype=None):
    """The family's pipeline; a compressed transformer found in the directory is loaded strictly too."""
    if transformer is None and (Path(path_or_id) / "transformer" / "config.json").is_file():
        transformer = load_transformer(adapter, path_or_id, subfolder="transformer", torch_dtype=torch_dtype)
    kwargs = {} if transformer is None else {"transformer": transformer}
    return adapter.pipeline_cls.from_pretrained(path_or_id, torch_dtype=torch_dtype, **kwargs)

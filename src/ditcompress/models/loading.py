"""Loading and saving transformers strictly: teachers through diffusers, students with their manifest.

diffusers only warns when checkpoint weights and the model built from the config disagree (and
re-initialises what is missing); a mismatched student would then silently be a different model,
so here any missing, unexpected or mis-shaped weight is an error.

A student is a diffusers directory (safetensors) plus `compression.json`, the `CompressionRecord`
of what was done to its teacher. Removal students reload with stock `from_pretrained` too (the
config's block counts are kept in sync); SVD students are rebuilt from the config, their
factorised layers swapped for `LowRankLinear` of the recorded ranks, and the weights loaded
strictly. A directory holding the manifest is always loaded as a student, so its block ids stay
the teacher's. `ditcompress.compress` re-exports the student functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from torch import nn

from ditcompress.compress.record import CompressionRecord, attach, record_of
from ditcompress.compress.svd import apply_record_structure
from ditcompress.models.base import unwrap
from ditcompress.models.registry import family_of_config, get_adapter

MANIFEST = "compression.json"


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


def save_student(transformer: nn.Module, directory: str | Path, record: CompressionRecord | None = None) -> Path:
    """Write weights (safetensors), config and manifest of a (compressed) transformer to `directory`."""
    model = unwrap(transformer)
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    (record or record_of(model)).save(directory / MANIFEST)
    return directory


def build_student(directory: str | Path, device="meta") -> nn.Module:
    """The student's architecture (config + manifest) with uninitialised weights; on "meta" it is free."""
    return _build(Path(directory), lambda: torch.device(device))


def load_student(directory: str | Path, torch_dtype: torch.dtype | None = None, device="cpu") -> nn.Module:
    """A saved student exactly as it was saved; mismatched weights raise `WeightsMismatchError`."""
    directory = Path(directory)
    files = sorted(directory.glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no diffusion_pytorch_model*.safetensors (students are safetensors only)")
    # parameters on meta (no random init of billions of weights), buffers such as PixArt's
    # sin-cos position table computed for real since they are not in the checkpoint
    model = _build(directory, init_empty_weights)
    state = {}
    for f in files:
        # fresh allocations: kernels on mmap'd, unaligned tensors can round differently, and a
        # reloaded student must reproduce the saved one bit for bit
        state.update({k: v.clone() for k, v in load_file(f, device=str(device)).items()})
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    reshaped = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}"
                      for k in expected.keys() & state.keys() if state[k].shape != expected[k])
    if missing or unexpected or reshaped:
        found = (("missing", missing), ("unexpected", unexpected), ("mis-shaped", reshaped))
        parts = [f"{len(v)} {k} (e.g. {v[0]})" for k, v in found if v]
        raise WeightsMismatchError(f"{directory}: weights do not match the student's structure: {', '.join(parts)}")
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device)  # the buffers built on CPU
    return (model if torch_dtype is None else model.to(torch_dtype)).eval()


def _build(directory: Path, context) -> nn.Module:
    """Model from the directory's config under `context`, with the manifest's structure applied."""
    record = _manifest(directory)
    config = _config(directory)
    cls = get_adapter(family_of_config(config)).transformer_cls
    with context():
        model = cls.from_config(config)
        attach(model, record)
        apply_record_structure(model, record)
    return model


def _config(directory: Path) -> dict:
    """The transformer config.json of a saved model."""
    return json.loads((directory / "config.json").read_text())


def _manifest(directory: Path) -> CompressionRecord:
    """The directory's manifest, or an empty record for a plain diffusers directory."""
    if (directory / MANIFEST).is_file():
        return CompressionRecord.load(directory / MANIFEST)
    return CompressionRecord(family=family_of_config(_config(directory)), teacher=str(directory))

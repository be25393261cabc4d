"""Saving and loading students: a diffusers directory (safetensors) plus `compression.json`.

Removal students reload with stock `from_pretrained` too (the config's block counts are kept in
sync). SVD students are rebuilt from the config, their factorised layers swapped for
`LowRankLinear` of the recorded ranks, and the weights loaded strictly: a missing or unexpected
tensor is an error rather than diffusers' warning and silent re-initialisation.
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
from ditcompress.models.loading import WeightsMismatchError
from ditcompress.models.registry import family_of_config, get_adapter

MANIFEST = "compression.json"


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

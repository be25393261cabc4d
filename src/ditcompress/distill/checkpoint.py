"""Training checkpoints in safetensors + JSON (nothing is unpickled): weights, EMA, optimiser, schedule, RNG.

A checkpoint is a directory written whole under a temporary name and then renamed, so a
`kill -9` at any moment leaves the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE = "state.json"


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        rest["state"][str(idx)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().clone()
            else:
                rest["state"][str(idx)][name] = value
    return tensors, rest


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state = {int(idx): dict(entry) for idx, entry in rest["state"].items()}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: tuple(v) if k in ("betas", "eps") and isinstance(v, list) else v for k, v in g.items()}
              for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(directory: str | Path, *, student: dict, ema: dict | None, optimizer: dict, scheduler: dict,
                    generator: torch.Tensor, state: dict) -> None:
    """Write one checkpoint atomically (`directory` is replaced as a whole)."""
    directory = Path(directory)
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in student.items()}, tmp / "student.safetensors")
    if ema is not None:
        save_file({k: v.detach().contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
    opt_tensors, opt_rest = _split_optimizer(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    save_file({"generator": generator}, tmp / "rng.safetensors")
    (tmp / STATE).write_text(json.dumps({**state, "optimizer": opt_rest, "scheduler": scheduler}, indent=1))
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _load(path: Path) -> dict[str, torch.Tensor]:
    # fresh allocations: kernels on mmap'd, unaligned tensors can round differently from a run
    # that never stopped (the optimiser keeps the loaded state tensors as they are)
    return {k: v.clone() for k, v in load_file(path).items()}


def load_checkpoint(directory: str | Path) -> dict | None:
    """The checkpoint in `directory` (or the one a kill left at `<directory>.old`), None when there is none."""
    directory = Path(directory)
    for where in (directory, directory.with_name(directory.name + ".old")):
        if (where / STATE).is_file():
            state = json.loads((where / STATE).read_text())
            ema = where / "ema.safetensors"
            return {"state": state, "student": _load(where / "student.safetensors"),
                    "ema": _load(ema) if ema.is_file() else None,
                    "optimizer": _join_optimizer(_load(where / "optimizer.safetensors"), state["optimizer"]),
                    "scheduler": state["scheduler"], "generator": _load(where / "rng.safetensors")["generator"]}
    return None

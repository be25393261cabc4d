"""What was done to a teacher: removed blocks and factorised layers, in stable teacher block ids.

The record travels with the student (`transformer.compression_record`, and `compression.json`
next to its weights) so that block ids, feature mapping and reloading all refer to the teacher's
numbering however many compression rounds ran.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ditcompress.models.base import unwrap
from ditcompress.models.registry import adapter_for


@dataclass
class LowRankSpec:
    """Shape of one factorised layer: W (out × in) ≈ A (out × rank) · B (rank × in)."""

    rank: int
    out: int
    inp: int
    bias: bool = True

    def to_json(self) -> dict:
        """`{"rank", "out", "in", "bias"}`."""
        return {"rank": self.rank, "out": self.out, "in": self.inp, "bias": self.bias}

    @classmethod
    def from_json(cls, d: dict) -> "LowRankSpec":
        """Inverse of `to_json`."""
        return cls(rank=int(d["rank"]), out=int(d["out"]), inp=int(d["in"]), bias=bool(d.get("bias", True)))


@dataclass
class CompressionRecord:
    """Removed block ids and factorised layers (`"<block id>.<path in block>"` -> spec), plus the steps taken."""

    family: str
    teacher: str = ""
    removed: list[str] = field(default_factory=list)
    svd: dict[str, LowRankSpec] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """JSON-serialisable form (the manifest)."""
        d = asdict(self)
        d["svd"] = {k: v.to_json() for k, v in self.svd.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CompressionRecord":
        """Inverse of `to_json`; unknown keys are an error."""
        known = {"family", "teacher", "removed", "svd", "steps"}
        if set(d) - known:
            raise ValueError(f"unknown compression manifest keys {sorted(set(d) - known)}")
        svd = {k: LowRankSpec.from_json(v) for k, v in d.get("svd", {}).items()}
        return cls(d["family"], d.get("teacher", ""), list(d.get("removed", [])), svd, list(d.get("steps", [])))

    def save(self, path: str | Path) -> None:
        """Write the manifest JSON."""
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "CompressionRecord":
        """Read a manifest JSON."""
        return cls.from_json(json.loads(Path(path).read_text()))


def record_of(transformer: nn.Module) -> CompressionRecord:
    """The record attached to a (student) transformer, or an empty one for an untouched teacher."""
    model = unwrap(transformer)
    record = getattr(model, "compression_record", None)
    if record is not None:
        return record
    teacher = str(getattr(model.config, "_name_or_path", "") or "")
    return CompressionRecord(family=adapter_for(model).name, teacher=teacher)


def attach(transformer: nn.Module, record: CompressionRecord) -> None:
    """Store `record` on the unwrapped model (read by the adapters' `blocks` for stable ids)."""
    unwrap(transformer).compression_record = record

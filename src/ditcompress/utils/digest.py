"""Content digests that tell whether a model on disk is still the one a stage used."""

from __future__ import annotations

import hashlib
from pathlib import Path

# local model directories up to this size are identified by a hash of their bytes; larger ones
# (real checkpoints) by file names, sizes and modification times
HASH_LIMIT_BYTES = 2 << 30


def model_digest(path: str | Path) -> str:
    """What identifies a model's weights: a content hash for a local directory, else the hub id."""
    path = Path(path)
    if not path.is_dir():
        return str(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors", ".txt"))
    h = hashlib.sha1()
    by_content = sum(p.stat().st_size for p in files) <= HASH_LIMIT_BYTES
    for p in files:
        h.update(p.relative_to(path).as_posix().encode())
        if by_content:
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(f"{p.stat().st_size}:{p.stat().st_mtime_ns}".encode())
    return h.hexdigest()

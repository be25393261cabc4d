"""Per-image-set cache of embeddings and detections, so a reference set is embedded once.

Scoring 28 block-removal variants against the teacher's reference set embeds the reference
once: results are keyed by (embedder id, image-set id). Arrays can also persist on disk as
`.npy` (loaded with `allow_pickle=False`); other results (detections, VQA answers) and sets
whose id starts with "tmp:" stay in memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class EmbeddingCache:
    """In-memory (and optionally on-disk) store keyed by (embedder id, image-set id)."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[tuple[str, str], object] = {}
        self.misses = 0  # how many results were computed (tests and logs read it)

    def _file(self, embedder_id: str, set_id: str) -> Path:
        """File name: readable slug plus a hash of the exact key."""
        digest = hashlib.sha1(f"{embedder_id}\0{set_id}".encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{embedder_id}__{set_id}")[-80:]
        return self.directory / f"{slug}__{digest}.npy"

    def get_or_compute(self, embedder_id: str, set_id: str | None, compute: Callable[[], T]) -> T:
        """Cached result for the key, computing (and storing) it on a miss; `set_id=None` never caches."""
        if set_id is None:
            self.misses += 1
            return compute()
        key = (embedder_id, set_id)
        if key in self._memory:
            return self._memory[key]  # type: ignore[return-value]
        # "tmp:" sets (unnamed generated images) live in memory only
        persist = self.directory is not None and not set_id.startswith("tmp:")
        path = self._file(embedder_id, set_id) if persist else None
        if path is not None and path.is_file():
            value = np.load(path, allow_pickle=False)
        else:
            self.misses += 1
            value = compute()
            if path is not None and isinstance(value, np.ndarray):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, value, allow_pickle=False)
                tmp.replace(path)  # atomic: a crashed run never leaves a half-written file
        self._memory[key] = value
        return value  # type: ignore[return-value]

    def forget(self, set_id: str) -> None:
        """Drop the in-memory entries of one image set (files on disk stay)."""
        for key in [k for k in self._memory if k[1] == set_id]:
            del self._memory[key]

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._memory.clear()


_DEFAULT = EmbeddingCache()


def default_cache() -> EmbeddingCache:
    """The process-wide in-memory cache evaluators share unless given their own."""
    return _DEFAULT

"""Per-item seeds that depend only on (base seed, key): stable across batches, shards, processes."""

from __future__ import annotations

import hashlib


def seed_for(seed: int, key: str) -> int:
    """A 63-bit seed that depends only on (seed, key): stable across batches, shards and processes."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1

"""The SVD rank rule: parameter-removal ratio c -> rank k (eq 4.9), optionally tensor-core aligned."""

from __future__ import annotations

import math

from ditcompress.compress.errors import CompressionError


def check_ratio(ratio: float, what: str = "ratio") -> float:
    """`ratio` itself if it lies in [0, 1), else a one-line `CompressionError` naming it."""
    if not 0.0 <= float(ratio) < 1.0:
        raise CompressionError(f"{what} must be in [0, 1) (got {ratio!r})")
    return float(ratio)


def target_rank(out_features: int, in_features: int, ratio: float, multiple: int = 1, *,
                rank: int | None = None) -> int:
    """Rank k keeping a fraction (1 − ratio) of a layer's parameters: k = max(1, ⌊P(1−c)/(n+m)⌋) (eq 4.9).

    P = n·m for a dense layer; for a layer already factorised at `rank` r, P = r·(n+m), so the
    next iterated-SVD step (4.4.3) removes `ratio` of what is left. With `multiple` > 1 a rank of
    at least `multiple` is rounded down to a multiple of it: unaligned ranks run slowly on tensor
    cores (a PixArt-Σ student at 50% ran at 0.87x the teacher's speed, 1.18x with ranks rounded to
    64). A rank below `multiple` stays as eq 4.9 gives it, so the rank never exceeds eq 4.9's.
    """
    check_ratio(ratio)
    if multiple < 1:
        raise CompressionError(f"rank multiple must be >= 1 (got {multiple!r})")
    n, m = int(out_features), int(in_features)
    params = n * m if rank is None else int(rank) * (n + m)
    k = max(1, math.floor(params * (1.0 - ratio) / (n + m)))  # eq 4.9
    # rounding up would keep more than (1 − c) of the parameters (and can exceed a factorised
    # layer's rank): only round down, and only where a multiple fits below k
    return k if k < multiple else (k // multiple) * multiple

"""Block importance criteria that need no candidate renders (thesis 4.2.1): weight magnitude (eq 4.2),
linear CKA between a block's input and output (eq 4.3), feature RMS (fig 5.12); and the rank
arithmetic of the metric-based criterion (eq 4.4) and of the criteria-vs-damage comparison.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr
from torch import nn

from ditcompress.compress.lowrank import LowRankLinear
from ditcompress.models.base import FamilyAdapter, unwrap
from ditcompress.models.registry import adapter_for


def _frobenius_sq(layer: nn.Module) -> float:
    """‖W‖_F² of a dense or factorised linear (W = A B, via tr((AᵀA)(B Bᵀ)) without forming W)."""
    if isinstance(layer, LowRankLinear):
        a, b = layer.A.detach().double(), layer.B.detach().double()
        return float(((a.T @ a) * (b @ b.T)).sum())
    return float(layer.weight.detach().double().pow(2).sum())


def block_magnitude(transformer: nn.Module) -> dict[str, float]:
    """M_i = sqrt(Σ_W ‖W‖_F²) per block id (eq 4.2), over the weight matrices of its linear layers.

    Counted: the weight of every `nn.Linear` in the block (attention q/k/v/out, MLP, and Flux's
    modulation linears) and the product A·B of every factorised `LowRankLinear`, so a compressed
    block is measured by the map it computes. Not counted: biases, normalisation scales (q/k
    RMSNorm) and PixArt's `scale_shift_table`: they are vectors or an additive table, not matrices
    mapping features (eq 4.2 sums "weight matrices"), and their O(D) entries near 1 would add a
    near-constant to every block.
    """
    adapter = adapter_for(transformer)
    out = {}
    for ref in adapter.blocks(unwrap(transformer)):
        total = sum(_frobenius_sq(m) for m in ref.module.modules() if isinstance(m, (nn.Linear, LowRankLinear)))
        out[ref.id] = math.sqrt(total)
    return out


def batched_linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA per sample for `x`, `y` of shape `(B, n, d)` (n rows compared within each sample); `(B,)`.

    With centred X, Y: CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F), equal to eq 4.3's
    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for K = XXᵀ, L = YYᵀ (the 1/(n−1)² factors cancel).
    Computed through the smaller of the n×n Gram and d×d covariance; float64. A sample whose
    features are constant has no defined CKA (nan).
    """
    x = x.double() - x.double().mean(1, keepdim=True)
    y = y.double() - y.double().mean(1, keepdim=True)
    if x.shape[1] <= x.shape[2]:  # n ≤ d: Gram matrices, tr(KHLH) = <Kc, Lc>_F
        k, lg = x @ x.transpose(1, 2), y @ y.transpose(1, 2)
        hsic_kl, hsic_kk, hsic_ll = (k * lg).sum((1, 2)), (k * k).sum((1, 2)), (lg * lg).sum((1, 2))
    else:
        hsic_kl = (y.transpose(1, 2) @ x).pow(2).sum((1, 2))
        hsic_kk = (x.transpose(1, 2) @ x).pow(2).sum((1, 2))
        hsic_ll = (y.transpose(1, 2) @ y).pow(2).sum((1, 2))
    return hsic_kl / (hsic_kk * hsic_ll).sqrt()


def linear_cka(x, y) -> float:
    """Linear CKA (eq 4.3) of `x`, `y` of shape `(n, d)`: 1 for X = Y, invariant to isotropic
    scaling and orthogonal transforms of either; nan when a set's features are constant."""
    x, y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: expected (n, d) and (n, d') (got {tuple(x.shape)} and {tuple(y.shape)})")
    return float(batched_linear_cka(x[None], y[None])[0])


def ranks(values: dict[str, float], *, descending: bool = False) -> dict[str, float]:
    """Rank 1 = smallest value (largest when `descending`); ties take the average rank."""
    keys = list(values)
    v = np.array([values[k] for k in keys], dtype=np.float64)
    return dict(zip(keys, rankdata(-v if descending else v, method="average").tolist()))


def rank_sum(cmmd: dict[str, float], clip: dict[str, float]) -> dict[str, float]:
    """r_final = r_CMMD + r_CLIP per block (eq 4.4); lower = less important.

    The block whose modification hurts least gets rank 1 on each metric: the smallest CMMD and
    the highest CLIP score. Ties take average ranks.
    """
    if set(cmmd) != set(clip):
        raise ValueError(f"rank_sum: CMMD and CLIP score cover different blocks "
                         f"({sorted(set(cmmd) ^ set(clip))})")
    r_cmmd, r_clip = ranks(cmmd), ranks(clip, descending=True)
    return {b: r_cmmd[b] + r_clip[b] for b in cmmd}


def spearman(a: dict[str, float], b: dict[str, float]) -> float:
    """Spearman's ρ between two per-block criteria over their common blocks (nan if undefined)."""
    keys = [k for k in a if k in b]
    if len(keys) < 3:
        return float("nan")
    x, y = [a[k] for k in keys], [b[k] for k in keys]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


class FeatureStats:
    """Per block and sampling step: mean CKA of input vs output (image and text stream) and output RMS.

    Fed by `collect_features` from every forward the sampler makes, the unconditional CFG branch
    included: each row of a batch is one sample, its tokens the n rows CKA compares.
    """

    def __init__(self):
        self.timesteps: list[float] = []  # in first-seen (sampling) order
        self._sums = defaultdict(float)
        self._counts = defaultdict(int)

    def add(self, key: tuple, values: torch.Tensor) -> None:
        """Accumulate per-sample values (nan rows skipped) under `key`."""
        values = values[~torch.isnan(values)]
        self._sums[key] += float(values.sum())
        self._counts[key] += int(values.numel())

    def mean(self, kind: str, block: str, t: float | None = None) -> float:
        """Mean of `kind` ("cka", "cka_text", "rms") for a block, at step `t` or over all steps."""
        keys = [(kind, block, t)] if t is not None else [(kind, block, s) for s in self.timesteps]
        n = sum(self._counts[k] for k in keys)
        return sum(self._sums[k] for k in keys) / n if n else float("nan")

    def has(self, kind: str, block: str) -> bool:
        """Whether any value of `kind` was recorded for `block`."""
        return any(self._counts[(kind, block, s)] for s in self.timesteps)


@contextmanager
def collect_features(adapter: FamilyAdapter, transformer: nn.Module, block_ids: list[str]) -> Iterator[FeatureStats]:
    """While open, every forward of `transformer` adds each block's CKA and RMS at its timestep."""
    stats = FeatureStats()
    now = {}

    def read_timestep(module, args, kwargs):
        t = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments["timestep"]
        value = round(float(torch.as_tensor(t).flatten()[0]), 4)
        if value not in stats.timesteps:
            stats.timesteps.append(value)
        now["t"] = value

    def record(block_id, inputs, output):
        t = now["t"]
        stats.add(("cka", block_id, t), batched_linear_cka(inputs.image, output.image))
        stats.add(("rms", block_id, t), output.image.double().pow(2).flatten(1).mean(1).sqrt())
        if output.text is not None and inputs.text is not None:
            stats.add(("cka_text", block_id, t), batched_linear_cka(inputs.text, output.text))

    handle = unwrap(transformer).register_forward_pre_hook(read_timestep, with_kwargs=True)
    try:
        with adapter.hook_blocks(transformer, block_ids, record):
            yield stats
    finally:
        handle.remove()

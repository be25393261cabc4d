"""`LowRankLinear` (eq 4.8) and the SVD factorisation that builds it (eq 4.7, 4.4.2–4.4.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LowRankLinear(nn.Module):
    """x -> A(Bx) + b with A = U√Σ `(out, k)` and B = √ΣVᵀ `(k, in)`; the bias is the original one (eq 4.8)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        kw = {"device": device, "dtype": dtype}
        self.A = nn.Parameter(torch.empty(out_features, rank, **kw))
        self.B = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear-style uniform init (only matters for a freshly built, not yet loaded, student)."""
        for w in (self.A, self.B):
            nn.init.kaiming_uniform_(w, a=5**0.5)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -self.in_features**-0.5, self.in_features**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.B), self.A, self.bias)  # (…, in) -> (…, k) -> (…, out)

    def to_dense(self) -> nn.Linear:
        """The equivalent dense layer W = AB (what iterated SVD re-factorises, 4.4.3)."""
        dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.A.device, dtype=self.A.dtype)
        with torch.no_grad():
            dense.weight.copy_(self.A @ self.B)
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def layer_svd(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, S, Vh) of a dense or low-rank layer's weight in fp32 (fp64 stays fp64), S descending.

    For a `LowRankLinear` W_t = A_t B_t is never formed: with A = Q_a R_a and Bᵀ = Q_b R_b,
    W_t = Q_a (R_a R_bᵀ) Q_bᵀ, so only the small k×k core is decomposed (exact, and cheap for 12 B Flux).
    """
    if isinstance(layer, LowRankLinear):
        a, b = _work(layer.A), _work(layer.B)
        qa, ra = torch.linalg.qr(a)
        qb, rb = torch.linalg.qr(b.T)
        u, s, vh = torch.linalg.svd(ra @ rb.T)
        return qa @ u, s, vh @ qb.T
    return torch.linalg.svd(_work(layer.weight), full_matrices=False)


def _work(t: torch.Tensor) -> torch.Tensor:
    """A detached copy in the precision used for decompositions."""
    return t.detach().to(torch.float64 if t.dtype == torch.float64 else torch.float32)


def factorize(layer: nn.Module, rank: int, scores: torch.Tensor | None = None) -> LowRankLinear:
    """`LowRankLinear` keeping `rank` singular values: the largest ones (4.4.2), or those with the
    highest `scores` (GRASP, 4.4.4; one score per singular value, in descending-σ order)."""
    u, s, vh = layer_svd(layer)
    if scores is None:
        keep = torch.arange(rank, device=s.device)
    else:
        if scores.numel() != s.numel():
            raise ValueError(f"got {scores.numel()} scores for {s.numel()} singular values")
        keep = torch.topk(scores.to(s.device).double(), rank).indices.sort().values
    root = s[keep].sqrt()
    bias = layer.bias
    out = LowRankLinear(vh.shape[1], u.shape[0], rank, bias=bias is not None, device=_device(layer), dtype=_dtype(layer))
    with torch.no_grad():
        out.A.copy_(u[:, keep] * root)  # U√Σ
        out.B.copy_(root[:, None] * vh[keep])  # √ΣVᵀ
        if bias is not None:
            out.bias.copy_(bias)
    return out


def _dtype(layer: nn.Module) -> torch.dtype:
    """Parameter dtype of a dense or low-rank layer."""
    return next(layer.parameters()).dtype


def _device(layer: nn.Module) -> torch.device:
    """Parameter device of a dense or low-rank layer."""
    return next(layer.parameters()).device

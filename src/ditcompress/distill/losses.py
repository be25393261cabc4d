"""Feature distillation losses (thesis 4.5.1): per-sample feature MSE (eq 4.11) and its
normalisation by loss balancing and feature magnitude (eq 4.12–4.14).

The weights `w_{i,l}` of eq 4.13 are constants in the backward pass. Were they differentiated,
the loss-balancing factor L_task / (L_{i,l} + ε) would cancel the student's own term:
w·L_{i,l} ≈ L_task · (norm factor) carries no gradient towards matching the teacher.
"""

from __future__ import annotations

import torch


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16 features are summed in float32; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> None:
    if not teacher or len(teacher) != len(student):
        raise ValueError(f"feature loss: {len(teacher)} teacher and {len(student)} student features (need equal, >= 1)")
    for l, (t, s) in enumerate(zip(teacher, student)):
        if t.ndim != 2 or t.shape != s.shape:
            raise ValueError(f"feature loss: layer {l}: teacher {tuple(t.shape)} and student {tuple(s.shape)} "
                             "must both be (B, D_l)")
        if t.shape[0] != teacher[0].shape[0]:
            raise ValueError(f"feature loss: layer {l} has batch {t.shape[0]}, layer 0 has {teacher[0].shape[0]}")


def feature_mse(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """L_{i,l} = ‖T_{i,l} − S_{i,l}‖² / D_l (eq 4.11), shape `(B, L)`; the teacher is a constant."""
    _check(teacher, student)
    return torch.stack([(_wide(t.detach()) - _wide(s)).pow(2).mean(1) for t, s in zip(teacher, student)], dim=1)


@torch.no_grad()
def normalization_weights(teacher: list[torch.Tensor], per_layer: torch.Tensor, task_loss: torch.Tensor,
                          eps: float = 1e-8) -> torch.Tensor:
    """w_{i,l} of eq 4.13, `(B, L)`, without gradient: loss balancing times norm normalisation.

    Loss balancing L_{i,Task} / (L_{i,l} + ε) brings each layer's term to the task loss's scale;
    norm normalisation Σ_k η_{i,k} / (L · η_{i,l} + ε), with η the RMS of the teacher feature
    (eq 4.12), makes layers of different magnitude contribute equally.
    """
    eta = torch.stack([_wide(t).pow(2).mean(1).sqrt() for t in teacher], dim=1)  # (B, L), eq 4.12
    n_layers = eta.shape[1]
    balance = _wide(task_loss.detach())[:, None] / (per_layer.detach() + eps)
    norm = eta.sum(1, keepdim=True) / (n_layers * eta + eps)
    return balance * norm


def normalized_feature_loss(teacher: list[torch.Tensor], student: list[torch.Tensor], task_loss: torch.Tensor,
                            eps: float = 1e-8) -> torch.Tensor:
    """L_FeatKD of eq 4.14: (1/B) Σ_i (1/L) Σ_l w_{i,l} · L_{i,l}, a scalar.

    `teacher`, `student`: one `(B, D_l)` tensor per mapped layer pair (flattened features, e.g.
    `BlockOutput.flat()`); `task_loss`: the per-sample task loss `(B,)` (L_{i,Task}). The same
    function normalises the output term L_OutKD (4.5.1, last paragraph) with the output as the one
    "layer". The weights are constants in the backward pass (module docstring).
    """
    per_layer = feature_mse(teacher, student)  # (B, L)
    if task_loss.shape != (per_layer.shape[0],):
        raise ValueError(f"feature loss: task_loss must have shape ({per_layer.shape[0]},) "
                         f"(got {tuple(task_loss.shape)})")
    w = normalization_weights(teacher, per_layer, task_loss, eps)
    return (w * per_layer).mean(1).mean(0)

"""The knowledge-distillation objective of eq 4.10 for one batch: task, output and feature terms.

    kd = KDObjective(adapter, objective, teacher, student, pairs, lambdas, normalized=True)
    total, terms = kd(x0, cond, t, noise)     # terms: {"task", "out", "feat"} (detached)

Teacher and student see the same noisy latents; the teacher runs without gradient. Feature pairs
(teacher block, student block) come from `ditcompress.compress.feature_mapping` (4.5.2). With
`normalized`, the output and the feature terms are both normalised by eq 4.11–4.14 (4.5.1, last
paragraph), the output being a one-layer feature; otherwise each term is its plain MSE.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F

from ditcompress.distill.losses import feature_mse, normalized_feature_loss
from ditcompress.models.base import Conditioning, FamilyAdapter, Objective


class KDObjective:
    """L = λ_task L_Task + λ_out L_OutKD + λ_feat L_FeatKD (eq 4.10) of a student against a frozen teacher."""

    def __init__(self, adapter: FamilyAdapter, objective: Objective, teacher, student,
                 pairs: list[tuple[str, str]], lambdas: dict[str, float], *, normalized: bool, eps: float = 1e-8):
        self.adapter, self.objective, self.teacher, self.student = adapter, objective, teacher, student
        self.pairs, self.lambdas, self.normalized, self.eps = pairs, lambdas, normalized, eps

    def __call__(self, x0: torch.Tensor, cond: Conditioning, t: torch.Tensor, noise: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss and its unweighted terms (detached, for logging and the NaN check)."""
        adapter, xt = self.adapter, self.objective.add_noise(x0, noise, t)
        with_feats = self.lambdas["feat"] > 0
        t_ids = [tid for tid, _ in self.pairs] if with_feats else []
        s_ids = list(dict.fromkeys(sid for _, sid in self.pairs)) if with_feats else []
        with ExitStack() as stack:
            t_feats = stack.enter_context(adapter.capture_features(self.teacher, t_ids))
            s_feats = stack.enter_context(adapter.capture_features(self.student, s_ids))
            with torch.no_grad():
                t_out = adapter.predict(self.teacher, xt, t, cond)
            s_out = adapter.predict(self.student, xt, t, cond)
        task = F.mse_loss(s_out.float(), self.objective.target(x0, noise, t).float(),
                          reduction="none").flatten(1).mean(1)  # (B,), L_i,Task
        terms = {"task": task.mean()}
        out_t, out_s = [t_out.flatten(1)], [s_out.flatten(1)]
        terms["out"] = (normalized_feature_loss(out_t, out_s, task, self.eps) if self.normalized
                        else feature_mse(out_t, out_s).mean())
        if with_feats:
            ft = [t_feats[tid].flat() for tid, _ in self.pairs]
            fs = [s_feats[sid].flat() for _, sid in self.pairs]
            terms["feat"] = (normalized_feature_loss(ft, fs, task, self.eps) if self.normalized
                             else feature_mse(ft, fs).mean())
        else:
            terms["feat"] = torch.zeros((), device=task.device)
        total = sum(self.lambdas[k] * v for k, v in terms.items() if self.lambdas[k] > 0)
        return total, {k: v.detach() for k, v in terms.items()}

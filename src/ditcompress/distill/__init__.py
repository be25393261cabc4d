"""Knowledge distillation of a compressed student (thesis 4.5, 5.1.4–5.1.5).

    from ditcompress.distill import normalized_feature_loss
    loss = normalized_feature_loss(teacher_feats, student_feats, task_loss)   # eq 4.14

- `losses`: eq 4.11–4.14 on lists of `(B, D_l)` features;
- `loss.KDObjective`: eq 4.10 for a batch, teacher and student on the same noisy latents;
- `config`: the five named losses, the three protocols, the per-preset recipes;
- `data`: the "LAION" and domain sets encoded once (latents, caption embeddings);
- `train.distill`: the phases on accelerate, checkpoints, resume, the NaN stop;
- `stage.run_distill`: what `stages/distill.py` calls.
"""

from ditcompress.utils.lazy import lazy_getattr

_EXPORTS = {
    "DistillConfig": "ditcompress.distill.config",
    "KDObjective": "ditcompress.distill.loss",
    "TrainingDiverged": "ditcompress.distill.train",
    "distill": "ditcompress.distill.train",
    "feature_mse": "ditcompress.distill.losses",
    "normalization_weights": "ditcompress.distill.losses",
    "normalized_feature_loss": "ditcompress.distill.losses",
    "recipe_for": "ditcompress.distill.config",
    "run_distill": "ditcompress.distill.stage",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())

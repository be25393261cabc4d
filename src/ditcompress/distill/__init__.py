"""Knowledge distillation of a compressed student (thesis 4.5): the loss of eq 4.10 and its
normalisation (eq 4.11–4.14).

    from ditcompress.distill import normalized_feature_loss
    loss = normalized_feature_loss(teacher_feats, student_feats, task_loss)   # eq 4.14

The `distill` stage (training protocols, optimisers, checkpoints) is not built yet.
"""

from ditcompress.utils.lazy import lazy_getattr

_EXPORTS = {
    "feature_mse": "ditcompress.distill.losses",
    "normalized_feature_loss": "ditcompress.distill.losses",
    "normalization_weights": "ditcompress.distill.losses",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())

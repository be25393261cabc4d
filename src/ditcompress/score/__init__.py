"""Block importance and block selection (thesis 4.2): criteria per block, then which blocks to modify.

    from ditcompress.score import block_magnitude, linear_cka, rank_sum
    block_magnitude(transformer)      # {block id: ‖W‖ over its weight matrices} (eq 4.2)
    linear_cka(x, y)                  # CKA of (n, d) features (eq 4.3)
    rank_sum(cmmd, clip)              # r_CMMD + r_CLIP per block, lower = less important (eq 4.4)

The stage (`stages/score.py`) runs `run_score`; the selection algorithms are in `selection`.
"""

from ditcompress.utils.lazy import lazy_getattr

_EXPORTS = {
    "block_magnitude": "ditcompress.score.criteria",
    "linear_cka": "ditcompress.score.criteria",
    "rank_sum": "ditcompress.score.criteria",
    "spearman": "ditcompress.score.criteria",
    "collect_features": "ditcompress.score.criteria",
    "Probe": "ditcompress.score.probe",
    "modified": "ditcompress.score.probe",
    "Selection": "ditcompress.score.selection",
    "greedy": "ditcompress.score.selection",
    "exhaustive": "ditcompress.score.selection",
    "optuna_search": "ditcompress.score.selection",
    "ranking": "ditcompress.score.selection",
    "learn_masks": "ditcompress.score.tinyfusion",
    "run_score": "ditcompress.score.run",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())

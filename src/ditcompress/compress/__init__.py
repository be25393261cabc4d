"""Compression operators: block removal (eq 4.6), SVD (eq 4.7–4.9), iterated SVD (4.4.3), GRASP
(4.4.4), per-part ratios (5.1.7); the record of what was done; saving/loading students; the
feature mapping for KD (4.5.2). Each operator returns a new model (unless `inplace`) and its record.
"""

from __future__ import annotations

from ditcompress.utils.lazy import lazy_getattr

# name -> module; imported on first use, so that `ditcompress.models.loading` can build students
# from `compress.record` / `compress.svd` without importing the whole package (and itself) back
_EXPORTS = {
    "CompressionError": "ditcompress.compress.errors",
    "CompressionRecord": "ditcompress.compress.record",
    "LowRankLinear": "ditcompress.compress.lowrank",
    "LowRankSpec": "ditcompress.compress.record",
    "MANIFEST": "ditcompress.compress.student",
    "build_student": "ditcompress.compress.student",
    "factorize": "ditcompress.compress.lowrank",
    "feature_mapping": "ditcompress.compress.mapping",
    "grasp_scores": "ditcompress.compress.grasp",
    "load_student": "ditcompress.compress.student",
    "plan": "ditcompress.compress.svd",
    "record_of": "ditcompress.compress.record",
    "remove_blocks": "ditcompress.compress.removal",
    "save_student": "ditcompress.compress.student",
    "svd_compress": "ditcompress.compress.svd",
    "target_rank": "ditcompress.compress.rank",
}

__all__ = [
    "CompressionError", "CompressionRecord", "LowRankLinear", "LowRankSpec", "MANIFEST", "build_student",
    "factorize", "feature_mapping", "grasp_scores", "load_student", "plan", "record_of", "remove_blocks",
    "save_student", "svd_compress", "target_rank",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())

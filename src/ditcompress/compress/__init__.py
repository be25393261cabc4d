"""Compression operators: block removal (eq 4.6), SVD (eq 4.7–4.9), iterated SVD (4.4.3), GRASP
(4.4.4), per-part ratios (5.1.7); the record of what was done; saving/loading students; the
feature mapping for KD (4.5.2). Each operator returns a new model (unless `inplace`) and its record.
"""

from ditcompress.compress.errors import CompressionError
from ditcompress.compress.grasp import grasp_scores
from ditcompress.compress.lowrank import LowRankLinear, factorize
from ditcompress.compress.mapping import feature_mapping
from ditcompress.compress.rank import target_rank
from ditcompress.compress.record import CompressionRecord, LowRankSpec, record_of
from ditcompress.compress.removal import remove_blocks
from ditcompress.compress.student import MANIFEST, build_student, load_student, save_student
from ditcompress.compress.svd import plan, svd_compress

__all__ = [
    "CompressionError", "CompressionRecord", "LowRankLinear", "LowRankSpec", "MANIFEST", "build_student",
    "factorize", "feature_mapping", "grasp_scores", "load_student", "plan", "record_of", "remove_blocks",
    "save_student", "svd_compress", "target_rank",
]

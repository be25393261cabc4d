"""Feature mapping for feature KD (4.5.2): which student block's output mimics which teacher block's."""

from __future__ import annotations

from ditcompress.compress.record import CompressionRecord


def feature_mapping(teacher_ids: list[str], record: CompressionRecord) -> list[tuple[str, str]]:
    """(teacher block, student block) pairs in execution order.

    Surviving blocks (SVD-compressed or untouched) map 1:1. A removed teacher block l maps to the
    last surviving student block before it, so that block learns to stand in for the removed
    ones too (consecutive removals all map to the same survivor). Removed blocks with no survivor
    before them (the first blocks) have no student counterpart and get no pair.
    """
    removed = set(record.removed)
    pairs, last = [], None
    for tid in teacher_ids:
        if tid not in removed:
            last = tid
        if last is not None:
            pairs.append((tid, last))
    return pairs

"""Feature mapping for feature KD (4.5.2): which student block's output mimics which teacher block's."""

from __future__ import annotations

from ditcompress.compress.errors import CompressionError
from ditcompress.compress.record import CompressionRecord

MODES = ("last", "all")


def feature_mapping(teacher_ids: list[str], record: CompressionRecord, *, mode: str = "last"
                    ) -> list[tuple[str, str]]:
    """(teacher block, student block) pairs in execution order (`teacher_ids`: Flux double then single).

    Surviving blocks (SVD-compressed or untouched) keep their teacher ids, so an SVD-only student
    maps 1:1. With removed blocks, `mode` picks the targets:

    - "last" (default): each kept block has one target, the output of the last teacher block
      before the next kept one (or the teacher's last block). The thesis compares S_{l−(i+1)} with
      T_l when B_{l−i}..B_l are removed, "forcing B_{l−1} to approximate the removed block": the
      kept block before a gap stands in for the whole gap, and its target is what the next kept
      block expects as input. Removing 3, 4, 5 of 0..7 gives (0,0), (1,1), (5,2), (6,6), (7,7);
      a removed tail 6, 7 gives ..., (7,5).
    - "all": every teacher block is a target of the last kept block before it (removing 3, 4, 5
      of 0..7 gives (2,2), (3,2), (4,2), (5,2)), i.e. a block gets one target per block it replaces
      (a KD ablation; the targets conflict, since S_2 cannot match T_2 and T_5 at once).

    Removed leading blocks have no student block before them, so they get no pair of their own:
    removing 0, 1 of 0..3 gives (2,2), (3,3). The first kept block then reads the embedded input
    where its teacher counterpart read T_1, yet its target stays its own teacher output T_2 — the
    input the rest of the student expects — so it learns to stand in for the removed leading
    blocks as well as itself (the thesis leaves this case open; this is the "last" rule applied
    without a kept block before the gap).
    """
    if mode not in MODES:
        raise CompressionError(f"feature mapping mode must be one of {MODES} (got {mode!r})")
    removed = set(record.removed)
    unknown = sorted(removed - set(teacher_ids))
    if unknown:
        raise CompressionError(f"removed blocks {unknown} are not teacher blocks {list(teacher_ids)}")
    kept = [tid for tid in teacher_ids if tid not in removed]
    return _last_targets(teacher_ids, kept) if mode == "last" else _all_targets(teacher_ids, removed)


def _last_targets(teacher_ids: list[str], kept: list[str]) -> list[tuple[str, str]]:
    """(T before the next kept block, S) for every kept block S (4.5.2: S_{l−(i+1)} vs T_l)."""
    order = {tid: i for i, tid in enumerate(teacher_ids)}
    ends = [order[nxt] - 1 for nxt in kept[1:]] + [len(teacher_ids) - 1]
    return [(teacher_ids[end], sid) for sid, end in zip(kept, ends)]


def _all_targets(teacher_ids: list[str], removed: set[str]) -> list[tuple[str, str]]:
    """(T_l, last kept block at or before l) for every teacher block l after the first kept one."""
    pairs, last = [], None
    for tid in teacher_ids:
        if tid not in removed:
            last = tid
        if last is not None:
            pairs.append((tid, last))
    return pairs

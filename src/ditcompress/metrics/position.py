"""GenEval's relative-position rule (`evaluate_images.py::relative_position`), numpy only.

One implementation for everything that judges "A left of / right of / above / below B": the
GenEval scorer on detections, the DPG detector-VQA, and the shapes world's ground truth and
scene sampler (which must agree with the scorer exactly).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITION_THRESHOLD = 0.1  # GenEval's default `position_threshold`


def relation_offsets(center_a, dim_a, center_b, dim_b, threshold: float = POSITION_THRESHOLD):
    """GenEval's normalised (dx, dy) of A relative to B; broadcasts over leading axes.

    The offset between box centres is shrunk by `threshold` times the summed box sizes and
    divided by the raw distance; a component beyond +-0.5 is a relation.
    """
    offset = np.asarray(center_a, float) - np.asarray(center_b, float)  # (..., 2)
    dims = np.asarray(dim_a, float) + np.asarray(dim_b, float)
    revised = np.maximum(np.abs(offset) - threshold * dims, 0) * np.sign(offset)
    norm = np.linalg.norm(offset, axis=-1, keepdims=True)
    # GenEval: no relation at all when the revised offset vanishes
    none = np.all(np.abs(revised) < 1e-3, axis=-1, keepdims=True)
    return np.where(none, 0.0, revised / np.where(none, 1.0, norm))  # (..., 2)


def relations_from_offsets(dx: float, dy: float) -> set[str]:
    """Relation words for one normalised offset."""
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def relative_position(box_a: Sequence[float], box_b: Sequence[float],
                      position_threshold: float = POSITION_THRESHOLD) -> set[str]:
    """Relations of box A to box B (x0, y0, x1, y1): "left of", "right of", "above", "below"."""
    boxes = np.array([box_a[:4], box_b[:4]], dtype=float).reshape(2, 2, 2)
    (center_a, center_b), (dim_a, dim_b) = boxes.mean(axis=-2), boxes[:, 1] - boxes[:, 0]
    dx, dy = relation_offsets(center_a, np.abs(dim_a), center_b, np.abs(dim_b), position_threshold)
    return relations_from_offsets(dx, dy)

"""Ground truth: does a scene satisfy a GenEval item / a DPG check? Same rules as scoring images.

`scene_satisfies` applies the rules of GenEval's `evaluate_images.py` (include clauses AND-ed,
exclude clauses OR-ed, colour and position judged on the first `count` objects of a class,
position from box centres with a margin of 0.1 of the summed box sizes) to the true object
list of a scene instead of detections. `answer_check` answers the `check` column of the
DPG-style question file on any object list: a scene's objects or detections.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
                      threshold: float = POSITION_THRESHOLD) -> set[str]:
    """Relations of box A to box B (x0, y0, x1, y1), GenEval's rule."""
    boxes = np.array([box_a[:4], box_b[:4]], dtype=float).reshape(2, 2, 2)
    (center_a, center_b), (dim_a, dim_b) = boxes.mean(axis=-2), boxes[:, 1] - boxes[:, 0]
    dx, dy = relation_offsets(center_a, np.abs(dim_a), center_b, np.abs(dim_b), threshold)
    return relations_from_offsets(dx, dy)


def as_objects(items: Iterable) -> list[dict]:
    """Scene objects or `Detection`s as dicts with class, color and bbox."""
    out = []
    for it in items:
        if isinstance(it, dict):
            out.append(it)
        else:  # a Detection
            out.append({"class": it.label, "color": it.color, "bbox": list(it.box), "score": it.score})
    return out


def _by_class(objects: list[dict]) -> dict[str, list[dict]]:
    """Objects grouped by class, most confident first (ties keep the given order)."""
    groups: dict[str, list[dict]] = {}
    for obj in sorted(objects, key=lambda o: -o.get("score", 1.0)):
        groups.setdefault(obj["class"], []).append(obj)
    return groups


def scene_satisfies(scene: dict | list, item: dict) -> bool:
    """True when the scene's objects pass the GenEval item (GenEval's `evaluate`, on ground truth)."""
    objects = _by_class(as_objects(scene["objects"] if isinstance(scene, dict) else scene))
    matched_groups: list[list[dict] | None] = []
    correct = True
    for req in item.get("include", []):
        found = objects.get(req["class"], [])[: req["count"]]
        matched = len(found) >= req["count"]
        if matched and "color" in req:
            matched = sum(o["color"] == req["color"] for o in found) >= req["count"]
        if matched and "position" in req:
            relation, target = req["position"]
            targets = matched_groups[target]
            matched = targets is not None and all(
                relation in relative_position(o["bbox"], t["bbox"]) for o in found for t in targets
            )
        correct &= matched
        matched_groups.append(found if matched else None)
    for req in item.get("exclude", []):
        if len(objects.get(req["class"], [])) >= req["count"]:
            correct = False
    return correct


def answer_check(check: dict, objects: Iterable) -> bool:
    """Answer one DPG `check` spec ('yes' = True) on a list of objects or detections."""
    groups = _by_class(as_objects(objects))
    kind = check["type"]
    if kind == "exists":
        return bool(groups.get(check["class"]))
    if kind == "count":
        return len(groups.get(check["class"], [])) == check["count"]
    if kind == "color":
        # "Are the circles red?": every one of them is, and there is at least one
        found = groups.get(check["class"], [])
        return bool(found) and all(o["color"] == check["color"] for o in found)
    if kind == "position":
        a, b = groups.get(check["a"], []), groups.get(check["b"], [])
        return bool(a and b) and all(check["relation"] in relative_position(x["bbox"], y["bbox"]) for x in a for y in b)
    raise ValueError(f"check: unknown type {kind!r} (known: exists, count, color, position)")

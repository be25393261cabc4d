"""Ground truth: does a scene satisfy a GenEval item / a DPG check? Same rules as scoring images.

`scene_satisfies` applies the rules of GenEval's `evaluate_images.py` (include clauses AND-ed,
exclude clauses OR-ed, colour and position judged on the first `count` objects of a class,
position from box centres with a margin of 0.1 of the summed box sizes) to the true object
list of a scene instead of detections. `answer_check` answers the `check` column of the
DPG-style question file on any object list: a scene's objects or detections.
"""

from __future__ import annotations

from collections.abc import Iterable


from ditcompress.metrics.position import (  # noqa: F401  (re-exported for the shapes world)
    POSITION_THRESHOLD, relation_offsets, relations_from_offsets, relative_position,
)


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


def answer_check(check: dict, objects: Iterable, position_threshold: float = POSITION_THRESHOLD) -> bool:
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
        return bool(a and b) and all(check["relation"] in relative_position(x["bbox"], y["bbox"], position_threshold)
                                     for x in a for y in b)
    raise ValueError(f"check: unknown type {kind!r} (known: exists, count, color, position)")

"""Sample a scene (background + objects with exact geometry) that satisfies a caption's GenEval item.

Layout rules, chosen so that a 32 px image stays legible and the detector can be exact:
- object size shrinks with the number of objects (one object ~1/3-1/2 of the image, four
  ~1/5-1/4), never below MIN_SIZE_PX, so four objects fit and a triangle stays a triangle;
- boxes keep a gap of at least GAP_FRACTION of the image (>= 2 px) from each other, so
  connected components never merge, and stay inside the image;
- a required relation must hold with twice GenEval's margin (0.2 instead of 0.1), so a
  detector whose boxes are off by a pixel still reads the same relation, and the
  perpendicular direction must not also read as a relation (the caption is unambiguous).
"""

from __future__ import annotations

import numpy as np

from ditcompress.shapes.truth import POSITION_THRESHOLD, relation_offsets
from ditcompress.shapes.vocab import BACKGROUND_GREY, BACKGROUND_TINT

SIZE_FRACTION = {1: (0.32, 0.55), 2: (0.26, 0.40), 3: (0.22, 0.32), 4: (0.20, 0.28)}
MIN_SIZE_PX = 6.0
GAP_FRACTION = 0.06
BORDER_PX = 1.0
CANDIDATES = 64  # layouts drawn at once; the first valid one is kept
_AXIS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}


def expand_objects(item: dict, rng: np.random.Generator, colors: tuple[str, ...]) -> tuple[list[dict], list[tuple]]:
    """Objects an item asks for (unnamed colours drawn at random) and its (a, relation, b) constraints."""
    objects, groups, constraints = [], [], []
    for req in item["include"]:
        group = []
        for _ in range(req["count"]):
            color = req.get("color") or colors[rng.integers(len(colors))]
            group.append(len(objects))
            objects.append({"class": req["class"], "color": color})
        if "position" in req:
            relation, target = req["position"]
            constraints += [(a, relation, b) for a in group for b in groups[target]]
        groups.append(group)
    return objects, constraints


def _valid_layouts(centres, sizes, constraints, image_size) -> np.ndarray:
    """Which candidate layouts (K, n, 2) keep gaps and satisfy every relation robustly; (K,) bool."""
    n = sizes.shape[0]
    gap = max(2.0, GAP_FRACTION * image_size)
    ok = np.ones(len(centres), bool)
    for i in range(n):
        for j in range(i + 1, n):
            free = np.abs(centres[:, i] - centres[:, j]) - (sizes[i] + sizes[j]) / 2  # (K, 2)
            ok &= free.max(axis=1) >= gap  # separated along at least one axis
    for a, relation, b in constraints:
        axis, sign = _AXIS[relation]
        dim_a, dim_b = np.full(2, sizes[a]), np.full(2, sizes[b])
        strict = relation_offsets(centres[:, a], dim_a, centres[:, b], dim_b, 2 * POSITION_THRESHOLD)
        loose = relation_offsets(centres[:, a], dim_a, centres[:, b], dim_b, POSITION_THRESHOLD)
        ok &= sign * strict[:, axis] > 0.5
        ok &= np.abs(loose[:, 1 - axis]) <= 0.5
    return ok


def place_objects(n: int, constraints: list[tuple], rng: np.random.Generator, image_size: int):
    """Centres (n, 2) and sizes (n,) of a valid layout, shrinking objects until one is found."""
    lo, hi = (f * image_size for f in SIZE_FRACTION[min(n, 4)])
    sizes = np.maximum(rng.uniform(lo, hi, n), MIN_SIZE_PX)
    for _ in range(40):
        low = BORDER_PX + sizes / 2
        centres = rng.uniform(low, image_size - low, (CANDIDATES, 2, n)).transpose(0, 2, 1)  # (K, n, 2)
        ok = np.flatnonzero(_valid_layouts(centres, sizes, constraints, image_size))
        if ok.size:
            return centres[ok[0]], sizes
        sizes = np.maximum(sizes * 0.93, MIN_SIZE_PX)
    raise ValueError(f"image_size: {image_size} px is too small to lay out {n} objects of >= {MIN_SIZE_PX} px")


def sample_scene(item: dict, rng: np.random.Generator, image_size: int, colors: tuple[str, ...]) -> dict:
    """A random scene satisfying the item; coordinates rounded so metadata re-renders exactly."""
    objects, constraints = expand_objects(item, rng, colors)
    centres, sizes = place_objects(len(objects), constraints, rng, image_size)
    grey = int(rng.integers(BACKGROUND_GREY[0], BACKGROUND_GREY[1] + 1))
    tint = rng.integers(-BACKGROUND_TINT, BACKGROUND_TINT + 1, 3)
    for obj, (x, y), size in zip(objects, centres, sizes):
        x, y, size = round(float(x), 3), round(float(y), 3), round(float(size), 3)
        bbox = [round(v, 3) for v in (x - size / 2, y - size / 2, x + size / 2, y + size / 2)]
        obj.update(x=x, y=y, size=size, bbox=bbox)
    return {"background": [grey + int(t) for t in tint], "objects": objects}

"""The words of the shapes world: shape geometry, colour palette and how they read in English.

Everything the renderer draws and the detector recognises is defined here once, so a name in
`params.yaml` that is not in these tables is rejected before any work starts.

Shapes are axis-aligned and live in a square box of side `size` centred on the object's
centre; `inside(u, v)` tests points in box coordinates u, v in [-1, 1] (v grows downwards,
as image rows do). The colours are GenEval's ten colour names (its CLIP colour classifier uses
exactly these), with RGB values chosen far apart from each other and from the grey backgrounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShapeKind:
    """Geometry of one shape class in its unit box."""

    inside: Callable[[np.ndarray, np.ndarray], np.ndarray]
    fill: float  # area / size**2
    centroid_dy: float  # (area centroid - box centre) / size along y; the triangle's is below
    plural: str
    perimeter: float  # outline length / size


SHAPES: dict[str, ShapeKind] = {
    "circle": ShapeKind(lambda u, v: u * u + v * v <= 1.0, np.pi / 4, 0.0, "circles", np.pi),
    "square": ShapeKind(lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0), 1.0, 0.0, "squares", 4.0),
    # apex up, base down: width grows linearly from the apex (v=-1) to the base (v=+1)
    "triangle": ShapeKind(lambda u, v: (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2), 0.5, 1 / 6, "triangles",
                          1 + np.sqrt(5)),
    "diamond": ShapeKind(lambda u, v: np.abs(u) + np.abs(v) <= 1.0, 0.5, 0.0, "diamonds", 2 * np.sqrt(2)),
    "cross": ShapeKind(
        lambda u, v: ((np.abs(u) <= 1 / 3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 1 / 3) & (np.abs(u) <= 1.0)),
        5 / 9,
        0.0,
        "crosses",
        4.0,
    ),
    # a 2:1 horizontal bar, the full width of its box and half its height
    "bar": ShapeKind(lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 0.5), 0.5, 0.0, "bars", 3.0),
}

# GenEval's COLORS list (evaluate_images.py), in its order
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (140, 50, 190),
    "pink": (255, 120, 200),
    "brown": (130, 75, 30),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}

# backgrounds are plain greys in this range (plus a faint tint), far from every palette colour
BACKGROUND_GREY = (100, 156)
BACKGROUND_TINT = 6

RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
COUNTS = (2, 3, 4)  # GenEval's counting prompts ask for two, three or four objects


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (GenEval writes 'an orange ...')."""
    return "an" if word[0] in "aeiou" else "a"


def check_vocabulary(shapes: tuple[str, ...], colors: tuple[str, ...]) -> None:
    """Raise ValueError naming the key if the vocabulary cannot be drawn or cannot express every task."""
    for key, names, known in (("shapes", shapes, SHAPES), ("colors", colors, PALETTE)):
        for name in names:
            if name not in known:
                raise ValueError(f"{key}: unknown name {name!r} (known: {', '.join(known)})")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{key}: duplicate name {dupes[0]!r}")
    # two-object and position prompts need two classes, colour binding two colours
    if len(shapes) < 2:
        raise ValueError("shapes: need at least 2 distinct shapes for two-object and position prompts")
    if len(colors) < 2:
        raise ValueError("colors: need at least 2 distinct colours for colour binding")

"""The detector interface GenEval scoring consumes; the shapes detector and Mask2Former implement it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Detection:
    """One detected object instance in an image.

    `box` is (x0, y0, x1, y1) in pixels, `mask` a boolean (H, W) array. `color` is filled by
    detectors that know it exactly (the shapes detector); otherwise GenEval scoring classifies the
    colour of the masked crop with CLIP zero-shot.
    """

    label: str
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None
    color: str | None = None
    extra: dict = field(default_factory=dict)


class Detector(Protocol):
    """Anything that turns an RGB uint8 (H, W, 3) image into detections."""

    classes: tuple[str, ...]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections of every known class in one image."""
        ...

"""Anti-aliased rendering of shape scenes into uint8 RGB arrays.

Each object's pixel coverage is computed analytically on a SUPERSAMPLE x SUPERSAMPLE grid per
pixel (vectorised, only inside the object's box) and alpha-blended over the plain background.
The detector renders its templates with the same `coverage`, so a clean image and its template
agree to the rounding of uint8.
"""

from __future__ import annotations

import math

import numpy as np

from ditcompress.shapes.vocab import PALETTE, SHAPES

SUPERSAMPLE = 4


def coverage(shape: str, cx: float, cy: float, size: float, height: int, width: int):
    """Fraction of each pixel the shape covers, on the window its box touches.

    Returns (y0, x0, cov) with cov of shape (h, w); pixel (i, j) spans [j, j+1) x [i, i+1).
    """
    half = size / 2
    x0, x1 = max(math.floor(cx - half), 0), min(math.ceil(cx + half), width)
    y0, y1 = max(math.floor(cy - half), 0), min(math.ceil(cy + half), height)
    if x1 <= x0 or y1 <= y0:
        return y0, x0, np.zeros((0, 0))
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    xs = (np.arange(x0, x1)[:, None] + sub).ravel()  # (w * S,)
    ys = (np.arange(y0, y1)[:, None] + sub).ravel()  # (h * S,)
    inside = SHAPES[shape].inside((xs[None, :] - cx) / half, (ys[:, None] - cy) / half)
    h, w = y1 - y0, x1 - x0
    cov = inside.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))  # (h, w)
    return y0, x0, cov


def render_scene(scene: dict, image_size: int) -> np.ndarray:
    """One scene as a uint8 (H, W, 3) image."""
    img = np.empty((image_size, image_size, 3), np.float32)
    img[:] = scene["background"]
    for obj in scene["objects"]:
        y0, x0, cov = coverage(obj["class"], obj["x"], obj["y"], obj["size"], image_size, image_size)
        h, w = cov.shape
        a = cov[..., None].astype(np.float32)  # (h, w, 1)
        win = img[y0 : y0 + h, x0 : x0 + w]
        win *= 1 - a
        win += a * np.asarray(PALETTE[obj["color"]], np.float32)
    return np.rint(img).astype(np.uint8)


def render_scenes(scenes: list[dict], image_size: int) -> np.ndarray:
    """A batch of scenes as uint8 (N, H, W, 3)."""
    out = np.empty((len(scenes), image_size, image_size, 3), np.uint8)
    for i, scene in enumerate(scenes):
        out[i] = render_scene(scene, image_size)
    return out

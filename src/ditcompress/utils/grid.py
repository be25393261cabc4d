"""Image grids for humans: training samples, teacher/student samples, each with an optional caption."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_TILE_PX = 128  # small images are upscaled (nearest) to at least this, so 32 px shapes are visible
FONT_PX = 10
PAD_PX = 2


def to_uint8_images(images) -> np.ndarray:
    """(N, H, W, 3) uint8 from a batch or a list of uint8 / [0, 1] float arrays, tensors or PIL images.

    Channel-first batches (N, 3, H, W), as torch pipelines return them, are transposed.
    """
    if isinstance(images, (list, tuple)):
        return np.concatenate([to_uint8_images(im) for im in images]) if images else np.zeros((0, 1, 1, 3), np.uint8)
    if isinstance(images, Image.Image):
        images = np.asarray(images.convert("RGB"))
    if hasattr(images, "detach"):  # a torch tensor, without importing torch here
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"images: expected (N, H, W, 3) or (N, 3, H, W), got shape {arr.shape}")
    if arr.shape[-1] not in (1, 3) and arr.shape[1] in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)  # channel-first -> channel-last
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    return arr


def _wrap(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap to a pixel width."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def sample_grid(images, captions: Sequence[str] | None = None, ncol: int | None = None) -> Image.Image:
    """A grid of images (upscaled when tiny), each with its caption underneath if given."""
    arr = to_uint8_images(images)
    n, h, w, _ = arr.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    scale = max(1, math.ceil(MIN_TILE_PX / max(h, w)))
    tile_w, tile_h = w * scale, h * scale
    font = ImageFont.load_default(FONT_PX)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(c, font, tile_w, scratch) for c in captions] if captions is not None else None
    text_h = (max(map(len, wrapped), default=0) * (FONT_PX + 2) + PAD_PX) if wrapped else 0
    cell_w, cell_h = tile_w + PAD_PX, tile_h + text_h + PAD_PX
    grid = Image.new("RGB", (ncol * cell_w + PAD_PX, nrow * cell_h + PAD_PX), "white")
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        x, y = PAD_PX + (i % ncol) * cell_w, PAD_PX + (i // ncol) * cell_h
        grid.paste(Image.fromarray(arr[i]).resize((tile_w, tile_h), Image.NEAREST), (x, y))
        for j, line in enumerate(wrapped[i] if wrapped else []):
            draw.text((x, y + tile_h + PAD_PX + j * (FONT_PX + 2)), line, fill="black", font=font)
    return grid

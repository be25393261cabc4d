"""The evaluator interface (big_vision style): every metric is an `Evaluator` chosen by name.

An evaluator is built from its config (`get_evaluator("cmmd", clip_path=...)`), may own a
benchmark prompt set (`items()`: HPSv2, GenEval, DPG-Bench) and scores images with
`run(images, prompts, items, reference=..., set_id=...) -> {name: value}`. Images are RGB uint8,
either an `(N, H, W, 3)` array or a list of `(H, W, 3)` arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ditcompress.errors import UserError


class MetricsError(UserError):
    """A bad metric input (file, format, name); `str()` is one line naming the file or key."""


@dataclass(frozen=True)
class ImageSet:
    """Images (RGB uint8) with their prompts; `id` names the set in the embedding cache (None: not cached)."""

    images: list[np.ndarray] | np.ndarray
    prompts: list[str] | None = None
    id: str | None = None

    def __len__(self) -> int:
        """Number of images."""
        return len(self.images)


class Evaluator(ABC):
    """One metric: build from config, optionally provide benchmark items, score a set of images."""

    name: ClassVar[str]
    # the prompt set the images must be generated from: None = the caller's prompts,
    # otherwise the evaluator's own benchmark (`items()` is then not None)
    benchmark: ClassVar[str | None] = None
    # metrics that compare against a reference set (CMMD, FID) need `reference=` in `run`
    needs_reference: ClassVar[bool] = False

    def items(self) -> list[dict] | None:
        """Benchmark items in image order, each with a "prompt" (None: score the caller's prompts)."""
        return None

    @abstractmethod
    def run(self, images, prompts: list[str] | None = None, items: list[dict] | None = None, *,
            reference: ImageSet | None = None, set_id: str | None = None) -> dict[str, float]:
        """Named metric values for `images` (generated from `prompts` / `items`)."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None) -> cuda when available, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_image_list(images) -> list[np.ndarray]:
    """RGB uint8 `(H, W, 3)` arrays from an `(N, H, W, 3)` array or a list of arrays / PIL images."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise MetricsError(f"images: expected an (N, H, W, 3) array (got shape {images.shape})")
        images = list(images)
    out = []
    for i, img in enumerate(images):
        arr = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise MetricsError(f"images[{i}]: expected an RGB uint8 (H, W, 3) image (got {arr.dtype} {arr.shape})")
        out.append(arr)
    return out


def check_count(images, expected: int, what: str) -> None:
    """One-line error when a metric gets a different number of images than prompts/items."""
    if len(images) != expected:
        raise MetricsError(f"{what}: got {len(images)} images for {expected} prompts")


def sub_id(set_id: str | None, suffix: str) -> str | None:
    """Cache id of a derived set (None stays None)."""
    return None if set_id is None else f"{set_id}:{suffix}"

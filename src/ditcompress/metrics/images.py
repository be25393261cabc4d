"""Image folders in, RGB uint8 arrays out; the CMMD reference's centre crop + bicubic resize."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from ditcompress.metrics.base import ImageSet, MetricsError
from ditcompress.utils.logging import get_logger

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
log = get_logger(__name__)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted by relative path: the order of the prompts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetricsError(f"{folder}: image folder not found")
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                  key=lambda p: p.relative_to(folder).as_posix())


def load_image_folder(folder: str | Path, n: int | None = None) -> list[np.ndarray]:
    """The first `n` images of a folder as RGB uint8 arrays; fewer than `n` is an error."""
    files = list_images(folder)
    if n is not None:
        if len(files) < n:
            raise MetricsError(f"{folder}: {len(files)} images for {n} prompts (fewer images than prompts)")
        if len(files) > n:
            log.warning("%s: %d images for %d prompts; using the first %d", folder, len(files), n, n)
        files = files[:n]
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


def folder_set_id(folder: str | Path, n: int | None = None) -> str:
    """Cache id of a folder's contents: resolved path plus a hash of names, sizes and mtimes."""
    files = list_images(folder)[:n]
    stamp = "\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return f"{Path(folder).resolve()}#{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"


def image_set_from_folder(folder: str | Path, prompts: list[str] | None = None, n: int | None = None) -> ImageSet:
    """An `ImageSet` of a folder (one image per prompt when prompts are given), cached by content."""
    n = len(prompts) if prompts is not None and n is None else n
    return ImageSet(load_image_folder(folder, n), prompts, folder_set_id(folder, n))


def centre_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, then PIL bicubic (antialiased) resize to `size`.

    Rule of google-research/cmmd `io_util._center_crop_and_resize`, applied to every image
    before the CLIP embedding model.
    """
    im = Image.fromarray(image)
    w, h = im.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    im = im.crop((left, top, left + side, top + side))
    return np.asarray(im.resize((size, size), resample=Image.BICUBIC))

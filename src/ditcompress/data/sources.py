"""Image collections the caption stage reads: a folder, webdataset tar shards, or a shapes split.

Every source lists its ids up front (cheap: names or tar headers, no decoding) and loads one image
by id. Loading decodes fully, so a corrupt or truncated file raises there and the caption stage
can skip it with the reason.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from pathlib import Path

from PIL import Image

from ditcompress.data.shards import check_id, read_range, tar_index
from ditcompress.errors import UserError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def decode_image(data: bytes) -> Image.Image:
    """RGB image from encoded bytes; raises on anything PIL cannot decode completely."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # Image.open only reads the header: truncation shows up here
        return img.convert("RGB")


class ImageSource(ABC):
    """A collection of images keyed by unique ids."""

    @abstractmethod
    def ids(self) -> list[str]:
        """All ids, in the source's natural (reading) order."""

    @abstractmethod
    def load(self, item_id: str) -> tuple[Image.Image, dict | None]:
        """The decoded RGB image and its metadata (None outside the shapes world)."""


class FolderSource(ImageSource):
    """Image files under a folder (recursive); id = relative path without extension.

    Dots left in a file's stem become '_' (ids are webdataset keys, see `check_id`); two files
    that map to the same id are an error naming both.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: image folder not found")
        self.paths: dict[str, Path] = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.suffix[1:].lower() in IMAGE_EXTENSIONS:
                rel = path.relative_to(self.root).with_suffix("")
                item_id = "/".join([*rel.parts[:-1], rel.name.replace(".", "_")])
                if item_id in self.paths:
                    raise UserError(f"{path}: maps to id {item_id!r} like {self.paths[item_id]}; rename one")
                if (why := check_id(item_id)) is not None:
                    raise UserError(f"{path}: cannot be used as id {item_id!r} ({why})")
                self.paths[item_id] = path

    def ids(self) -> list[str]:
        return list(self.paths)

    def load(self, item_id):
        return decode_image(self.paths[item_id].read_bytes()), None


class TarSource(ImageSource):
    """Webdataset shards (`*.tar`): each sample's first image member by `IMAGE_EXTENSIONS` order."""

    def __init__(self, path: str | Path):
        path = Path(path)
        tars = sorted(path.glob("*.tar")) if path.is_dir() else [path]
        if not tars or not tars[0].is_file():
            raise UserError(f"{path}: no .tar shards found")
        self.members: dict[str, tuple[Path, int, int]] = {}
        for tar in tars:
            for key, files in tar_index(tar).items():
                ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
                if ext is None:
                    continue  # a sample without an image (e.g. only .json) is not an image
                if key in self.members:
                    raise UserError(f"{tar}: sample {key!r} also in {self.members[key][0]}; keys must be unique")
                self.members[key] = (tar, *files[ext])

    def ids(self) -> list[str]:
        return list(self.members)

    def load(self, item_id):
        return decode_image(read_range(*self.members[item_id])), None


class ShapesSource(ImageSource):
    """A shapes-world split (`images.npy` + `metadata.jsonl`); metadata = the scene's record."""

    def __init__(self, split_dir: str | Path):
        from ditcompress.shapes.dataset import load_split

        self.split = load_split(split_dir, mmap=True)
        self.index = {item_id: i for i, item_id in enumerate(self.split.ids)}

    def ids(self) -> list[str]:
        return list(self.split.ids)

    def load(self, item_id):
        i = self.index[item_id]
        meta = {"caption": self.split.captions[i], "scene": self.split.scenes[i], "item": self.split.items[i]}
        return Image.fromarray(self.split.images[i]), meta


def open_source(path: str | Path, source_format: str = "auto") -> ImageSource:
    """The source at `path`; "auto" recognises a shapes split, tar shards, else an image folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: image source not found")
    if source_format == "auto":
        if (path / "images.npy").is_file() and (path / "metadata.jsonl").is_file():
            source_format = "shapes"
        elif path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.tar"))):
            source_format = "webdataset"
        else:
            source_format = "folder"
    sources = {"folder": FolderSource, "webdataset": TarSource, "shapes": ShapesSource}
    if source_format not in sources:
        raise UserError(f"source_format: unknown {source_format!r} (known: auto, {', '.join(sources)})")
    return sources[source_format](path)

"""Reading a teacher dataset written by the `generate` stage, by index, straight from its tar shards."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from torch.utils.data import Dataset

from ditcompress.data.generate import INDEX_FILE
from ditcompress.data.shards import SHARDS_DIR, read_complete_plan, read_range
from ditcompress.data.sources import decode_image


class TeacherDataset(Dataset):
    """Sample i = {"id", "image" (PIL RGB, or `transform(image)`), "prompt", "seed"}, in generation order."""

    def __init__(self, out_dir: str | Path, transform: Callable | None = None, check_complete: bool = True):
        self.out_dir = Path(out_dir)
        if check_complete:
            read_complete_plan(self.out_dir, "generate")
        index = pq.read_table(self.out_dir / INDEX_FILE).to_pydict()
        self.ids, self.prompts, self.seeds = index["id"], index["prompt"], index["seed"]
        self.where = list(zip(index["shard"], index["offset"], index["size"]))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        shard, offset, size = self.where[i]
        image = decode_image(read_range(self.out_dir / SHARDS_DIR / shard, offset, size))
        return {"id": self.ids[i], "image": self.transform(image) if self.transform else image,
                "prompt": self.prompts[i], "seed": self.seeds[i]}

    def record(self, i: int) -> dict:
        """The full .json record of sample i (settings included), e.g. for `generate.regenerate`."""
        shard = self.out_dir / SHARDS_DIR / self.where[i][0]
        with tarfile.open(shard, "r:") as tar:
            return json.load(tar.extractfile(f"{self.ids[i]}.json"))

"""Build the shapes-world dataset on disk, deterministically from a seed, and load it back.

Layout under `out_dir` (every split folder loads with `load_split`):

    train/images.npy             uint8 (n_train, H, W, 3)      -- plays the LAION training set
    train/metadata.jsonl         {"id", "caption", "tag", "geneval": item, "scene": {...}} per image
    reference/images.npy, metadata.jsonl, images/<id>.png     -- the reference set for block scoring
    eval/geneval_metadata.jsonl  GenEval prompt file, `prompts_per_task` lines per tag
    eval/dpg_questions.csv       DPG-Bench-style questions (+ a `check` column)
    eval/geneval_truth/          one ground-truth render per GenEval line, in file order
    eval/dpg_truth/              one ground-truth render per DPG prompt, in item order

A scene is {"background": [r, g, b], "objects": [{"class", "color", "x", "y", "size",
"bbox": [x0, y0, x1, y1]}]} in pixels; `render.render_scene(scene)` reproduces the image exactly.
Each split draws from its own random stream, so changing `n_reference` leaves `train` unchanged.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ditcompress.errors import UserError
from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.dpg import dpg_items, write_dpg_csv
from ditcompress.shapes.prompts import GENEVAL_TAGS, TRAIN_FAMILIES, all_geneval_items, random_item
from ditcompress.shapes.render import render_scenes
from ditcompress.shapes.scene import sample_scene
from ditcompress.shapes.truth import scene_satisfies
from ditcompress.utils.logging import get_logger, progress as progress_bar

log = get_logger(__name__)

SEED_MAX = 2**31 - 1
_STREAMS = {"train": 0, "reference": 1, "geneval": 2, "dpg": 3, "geneval_truth": 4}  # one random stream per output


class ShapesDataError(UserError):
    """A bad argument, output path or missing split for the dataset; `str()` is one line."""


@dataclass
class ShapesSplit:
    """One split folder in memory."""

    images: np.ndarray  # (N, H, W, 3) uint8
    captions: list[str]
    scenes: list[dict]
    ids: list[str]
    items: list[dict]  # the GenEval item of each caption

    def __len__(self) -> int:
        return len(self.ids)


def _rng(seed: int, stream: str) -> np.random.Generator:
    """Independent generator for one output of the dataset."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAMS[stream]]))


def _check_args(cfg, seed, out_dir: Path) -> None:
    """Fail in one line, before any work, on a bad config, seed or output directory."""
    if not isinstance(cfg, ShapesDataConfig):
        raise ShapesDataError(f"data: expected a ShapesDataConfig, got {type(cfg).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ShapesDataError(f"seed: must be an integer in [0, {SEED_MAX}] (got {seed!r})")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise ShapesDataError(f"{out_dir}: output directory is not writable ({exc.strerror or exc})") from None


def _write_split(split_dir: Path, ids, items, scenes, images, pngs: bool = False) -> None:
    """images.npy + metadata.jsonl (+ PNGs) of one split; replaces what was there."""
    if split_dir.exists():
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True)
    np.save(split_dir / "images.npy", images)
    with open(split_dir / "metadata.jsonl", "w") as f:
        for id_, item, scene in zip(ids, items, scenes):
            record = {"id": id_, "caption": item["prompt"], "tag": item["tag"], "geneval": item, "scene": scene}
            f.write(json.dumps(record) + "\n")
    if pngs:
        (split_dir / "images").mkdir()
        for id_, image in zip(ids, images):
            Image.fromarray(image).save(split_dir / "images" / f"{id_}.png")


def _render_checked(name: str, items: list[dict], rng, cfg: ShapesDataConfig, show: bool):
    """Scenes for the items, rendered; every scene is checked against its caption."""
    scenes = [
        sample_scene(item, rng, cfg.image_size, cfg.colors)
        for item in progress_bar(items, desc=f"shapes {name}", unit="img", disable=not show)
    ]
    bad = [i for i, (item, scene) in enumerate(zip(items, scenes)) if not scene_satisfies(scene, item)]
    if bad:  # a bug in the scene sampler, never bad input
        raise RuntimeError(f"{name}: scene {bad[0]} does not satisfy its caption {items[bad[0]]['prompt']!r}")
    return scenes, render_scenes(scenes, cfg.image_size)


def _training_items(n: int, rng, cfg: ShapesDataConfig) -> list[dict]:
    """n captions, the families in equal shares (shuffled)."""
    families = rng.permutation(np.resize(np.arange(len(TRAIN_FAMILIES)), n))
    return [random_item(TRAIN_FAMILIES[f], rng, cfg.shapes, cfg.colors) for f in families]


def geneval_prompts(cfg: ShapesDataConfig, seed: int) -> list[dict]:
    """`prompts_per_task` GenEval items per tag: all distinct prompts in seeded order, cycled if too few."""
    rng = _rng(seed, "geneval")
    lines = []
    for tag in GENEVAL_TAGS:
        pool = all_geneval_items(tag, cfg.shapes, cfg.colors)
        order = rng.permutation(len(pool))
        lines += [pool[order[i % len(pool)]] for i in range(cfg.prompts_per_task)]
    return lines


def build_dataset(cfg: ShapesDataConfig, seed: int, out_dir: Path, progress: bool = True) -> dict:
    """Write train / reference / eval under out_dir; returns flat statistics for the metrics file."""
    out_dir = Path(out_dir)
    _check_args(cfg, seed, out_dir)
    start = time.perf_counter()
    stats: dict[str, float] = {"image_size": cfg.image_size}
    for split, n, pngs in (("train", cfg.n_train, False), ("reference", cfg.n_reference, True)):
        rng = _rng(seed, split)
        items = _training_items(n, rng, cfg)
        scenes, images = _render_checked(split, items, rng, cfg, progress)
        _write_split(out_dir / split, [f"{split}_{i:06d}" for i in range(n)], items, scenes, images, pngs)
        stats[f"{split}_images"] = n
        stats[f"{split}_unique_captions"] = len({it["prompt"] for it in items})
        stats[f"{split}_mean_objects"] = round(float(np.mean([len(s["objects"]) for s in scenes])), 4)
        if split == "train":
            for family in TRAIN_FAMILIES:
                stats[f"train_share_{family}"] = round(sum(it["tag"] == family for it in items) / n, 4)
            stats["train_min_object_px"] = round(min(o["size"] for s in scenes for o in s["objects"]), 3)

    eval_dir = out_dir / "eval"
    eval_dir.mkdir(exist_ok=True)
    geneval = geneval_prompts(cfg, seed)
    with open(eval_dir / "geneval_metadata.jsonl", "w") as f:
        f.writelines(json.dumps(item) + "\n" for item in geneval)
    dpg_rng = _rng(seed, "dpg")
    dpg = dpg_items(cfg.dpg_prompts, dpg_rng, cfg.shapes, cfg.colors)
    dpg_ids = [f"shapes_{i:04d}" for i in range(len(dpg))]
    stats["dpg_questions"] = write_dpg_csv(eval_dir / "dpg_questions.csv", dpg, dpg_ids)
    for name, items, ids, rng in (
        ("geneval_truth", geneval, [f"geneval_{i:04d}" for i in range(len(geneval))], _rng(seed, "geneval_truth")),
        ("dpg_truth", dpg, dpg_ids, dpg_rng),
    ):
        scenes, images = _render_checked(name, items, rng, cfg, show=False)
        _write_split(eval_dir / name, ids, items, scenes, images)
    stats["geneval_prompts"] = len(geneval)
    stats["geneval_unique_prompts"] = len({it["prompt"] for it in geneval})
    stats["dpg_prompts"] = len(dpg)
    log.info("shapes dataset in %s: %d train, %d reference images, %d GenEval prompts, %d DPG questions (%.1f s)",
             out_dir, cfg.n_train, cfg.n_reference, len(geneval), stats["dpg_questions"], time.perf_counter() - start)
    return stats


def read_jsonl(path: str | Path) -> list[dict]:
    """All JSON objects of a .jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_geneval_metadata(path: str | Path) -> list[dict]:
    """The GenEval prompt file: one item (tag, include, exclude?, prompt) per line."""
    return read_jsonl(path)


def load_split(split_dir: str | Path, mmap: bool = False) -> ShapesSplit:
    """A split folder written by `build_dataset` (mmap: map images.npy instead of reading it)."""
    split_dir = Path(split_dir)
    for name in ("images.npy", "metadata.jsonl"):
        if not (split_dir / name).is_file():
            raise ShapesDataError(f"{split_dir / name}: missing (run the shapes_data stage first)")
    images = np.load(split_dir / "images.npy", mmap_mode="r" if mmap else None)
    records = read_jsonl(split_dir / "metadata.jsonl")
    if len(records) != len(images):
        raise ValueError(f"{split_dir}: {len(images)} images but {len(records)} metadata lines")
    return ShapesSplit(
        images=images,
        captions=[r["caption"] for r in records],
        scenes=[r["scene"] for r in records],
        ids=[r["id"] for r in records],
        items=[r["geneval"] for r in records],
    )

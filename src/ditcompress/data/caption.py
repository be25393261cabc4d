"""The `caption` stage: caption an image collection with a VLM (JoyCaption by default, thesis 4.3.1).

    accelerate launch stages/caption.py   # or plain python; 608k LAION images: days of GPU time

Output (`out_dir`), see `shards.py` for plan/manifest:

    shards/shard-00000.jsonl           {"id": ..., "caption": ...} per line, in source order
    shards/shard-00000.skipped.jsonl   {"id": ..., "reason": ...} images that could not be captioned
    skipped.jsonl                      all skipped images (merged at the end), the stage's report

An image that cannot be decoded is skipped and reported; the stage never stops on one bad file.
In the shapes world the `scene` captioner reads each image's metadata through the same interface.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps

from ditcompress.data.config import CaptionConfig, fingerprint
from ditcompress.data.shards import (
    PLAN_FILE, SHARDS_DIR, Process, Shard, ShardedRun, atomic_write, check_id, current_process, digest_lines,
    plan_shards, read_complete_plan, seed_for,
)
from ditcompress.data.sources import ImageSource, open_source
from ditcompress.errors import UserError
from ditcompress.utils.logging import get_logger, progress

log = get_logger(__name__)

SUFFIX = ".jsonl"
SKIPPED_SUFFIX = ".skipped.jsonl"
GRID_IMAGES = 16
GRID_TILE_PX = 256  # sources mix sizes; tiles are centre crops of one size


class Captioner(Protocol):
    """Captions a batch of images; `metas` carries per-image metadata where the source has it."""

    def __call__(self, images: Sequence[Image.Image], metas: Sequence[dict | None]) -> list[str]: ...


class SceneCaptioner:
    """Shapes world: the caption recorded with each scene (a perfect captioner)."""

    def __call__(self, images, metas):
        if any(m is None or "caption" not in m for m in metas):
            raise UserError("caption.captioner: 'scene' needs scene metadata, i.e. a shapes split as source")
        return [m["caption"] for m in metas]


class VLMCaptioner:
    """Any transformers image-text-to-text model (LLaVA/JoyCaption, ...), batched greedy or sampled."""

    def __init__(self, cfg: CaptionConfig, device):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.cfg, self.device = cfg, device
        self.dtype = getattr(torch, cfg.torch_dtype)
        self.processor = AutoProcessor.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at the end
        # straight onto this process's device: 8 processes x 16 GB of JoyCaption would not fit in host RAM
        self.model = AutoModelForImageTextToText.from_pretrained(
            cfg.model, dtype=self.dtype, device_map={"": str(device)}, trust_remote_code=cfg.trust_remote_code).eval()
        self.text = self._prompt_text()

    def _prompt_text(self) -> str:
        """The chat-formatted prompt, with the image slot wherever the model's template puts it."""
        if getattr(self.processor, "chat_template", None) is None:
            raise UserError(f"caption.model: {self.cfg.model} has no chat template")
        token = getattr(self.processor, "image_token", None)
        # JoyCaption's template inserts the image itself from plain-text content; most other
        # templates (llava-hf, Qwen-VL, ...) want an explicit {"type": "image"} part
        contents = [self.cfg.prompt, [{"type": "image"}, {"type": "text", "text": self.cfg.prompt}]]
        for content in contents if token is not None else contents[1:]:
            convo = [{"role": "user", "content": content}]
            if self.cfg.system_prompt:
                convo.insert(0, {"role": "system", "content": self.cfg.system_prompt})
            text = self.processor.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
            if token is None or token in text:
                return text
        raise UserError(f"caption.model: the chat template of {self.cfg.model} places no image token {token!r}")

    def __call__(self, images, metas=None):
        inputs = self.processor(text=[self.text] * len(images), images=list(images), return_tensors="pt",
                                padding=True).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        cfg = self.cfg
        sampling = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=None) if cfg.do_sample else {}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, **sampling)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def make_captioner(cfg: CaptionConfig, device) -> Captioner:
    """The captioner `cfg.captioner` names."""
    return SceneCaptioner() if cfg.captioner == "scene" else VLMCaptioner(cfg, device)


def _reason(exc: BaseException) -> str:
    """One line for a skipped image."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def caption_batch(captioner: Captioner, ids, images, metas) -> tuple[dict[str, str], dict[str, str]]:
    """(captions, skip reasons) for decoded images; a failing batch is retried image by image.

    If every image of a batch fails on its own too, the error is systematic (bad model, bad
    params) and is raised instead of silently skipping the whole collection.
    """
    try:
        return dict(zip(ids, captioner(images, metas))), {}
    except UserError:
        raise
    except Exception as batch_error:  # noqa: BLE001 - one odd image must not stop the stage
        captions, skipped = {}, {}
        for item_id, img, meta in zip(ids, images, metas):
            try:
                captions[item_id] = captioner([img], [meta])[0]
            except Exception as exc:  # noqa: BLE001
                skipped[item_id] = f"captioner failed: {_reason(exc)}"
        if not captions:
            raise batch_error
        return captions, skipped


def caption_shard(captioner: Captioner, source: ImageSource, shard: Shard, cfg: CaptionConfig):
    """Rows `{"id", "caption"}` and `{"id", "reason"}` of one shard, in shard order."""
    captions, skipped = {}, {}
    for start in range(0, len(shard.ids), cfg.batch_size):
        loaded = []  # (id, image, metadata) of the batch's decodable images
        for item_id in shard.ids[start : start + cfg.batch_size]:
            try:
                loaded.append((item_id, *source.load(item_id)))
            except Exception as exc:  # noqa: BLE001 - corrupt, truncated, unreadable: report, go on
                skipped[item_id] = f"cannot decode: {_reason(exc)}"
        if not loaded:
            continue
        batch_ids, images, metas = zip(*loaded)
        # HF generate samples from the global RNG: seeding per batch gives the same captions on resume
        torch.manual_seed(seed_for(cfg.seed, f"caption/{batch_ids[0]}"))
        got, failed = caption_batch(captioner, batch_ids, images, metas)
        skipped.update(failed)
        for item_id, text in got.items():
            if text:
                captions[item_id] = text
            else:
                skipped[item_id] = "captioner returned an empty caption"
    rows = [{"id": i, "caption": captions[i]} for i in shard.ids if i in captions]
    return rows, [{"id": i, "reason": skipped[i]} for i in shard.ids if i in skipped]


def _jsonl(rows: list[dict]) -> bytes:
    """JSON lines, UTF-8."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_caption(cfg: CaptionConfig, source: ImageSource | str | Path, out_dir: str | Path, tracker=None, *,
                process: Process | None = None, restart_if_changed: bool = False) -> dict:
    """Caption every image of `source` into `out_dir`, resuming what exists; summary metrics on the main process."""
    t0 = time.perf_counter()
    process = process or current_process()
    source = source if isinstance(source, ImageSource) else open_source(source, cfg.source_format)
    ids = source.ids()
    shards = plan_shards(ids, cfg.shard_size)
    run = ShardedRun(out_dir, "caption", fingerprint(cfg), shards, SUFFIX, digest_lines(ids), process,
                     restart_if_changed)
    mine = run.start()
    if mine:
        captioner = make_captioner(cfg, process.device)
        bar = progress(total=sum(len(s.ids) for s in mine), desc="caption", unit="img")
        for shard in mine:
            rows, skipped = caption_shard(captioner, source, shard, cfg)
            # the skip report first: the caption file's appearance is what marks the shard complete
            with atomic_write(run.shards_dir / f"{shard.stem}{SKIPPED_SUFFIX}") as f:
                f.write(_jsonl(skipped))
            with atomic_write(run.path(shard)) as f:
                f.write(_jsonl(rows))
            bar.update(len(shard.ids))
        bar.close()
    skipped: list[dict] = []

    def summarize(done: list[Shard]) -> dict:
        """Merge the per-shard skip reports into `skipped.jsonl`."""
        skipped.extend(r for s in done for r in _read_jsonl(run.shards_dir / f"{s.stem}{SKIPPED_SUFFIX}"))
        with atomic_write(run.out_dir / "skipped.jsonl") as f:
            f.write(_jsonl(skipped))
        return {"skipped": len(skipped), "captioned": sum(len(s.ids) for s in done) - len(skipped)}

    manifest = run.finish(summarize)
    if manifest is None:
        return {}
    for row in skipped[:20]:
        log.warning("skipped %s: %s", row["id"], row["reason"])
    seconds = time.perf_counter() - t0
    metrics = {"images": manifest["num_items"], "captioned": manifest["captioned"], "skipped": manifest["skipped"],
               # over the whole run, model loading included
               "new_images": manifest["new_items"], "images_per_s": manifest["new_items"] / seconds, "seconds": seconds}
    if tracker is not None and manifest["shards"]:
        _log_grid(tracker, source, run.shards_dir / manifest["shards"][0])
    log.info("caption: %d captioned, %d skipped -> %s", metrics["captioned"], metrics["skipped"], run.out_dir)
    return metrics


def _log_grid(tracker, source: ImageSource, shard_file: Path) -> None:
    """A grid of the first captioned images with their captions."""
    from ditcompress.utils.grid import sample_grid

    rows = _read_jsonl(shard_file)[:GRID_IMAGES]
    if rows:
        images = [source.load(r["id"])[0] for r in rows]
        tile = min(GRID_TILE_PX, *(min(img.size) for img in images))
        images = [ImageOps.fit(img, (tile, tile)) for img in images]
        tracker.log_image(sample_grid(images, [r["caption"][:200] for r in rows]), "caption_samples.png")


# ---- reading a caption set ------------------------------------------------------------------
def _caption_files(path: Path) -> list[Path]:
    """Caption files of a caption-stage output, a folder of .jsonl/.parquet files, or one file."""
    if path.is_file():
        return [path]
    if (path / PLAN_FILE).is_file():
        read_complete_plan(path, "caption")
        return sorted(p for p in (path / SHARDS_DIR).glob(f"*{SUFFIX}") if not p.name.endswith(SKIPPED_SUFFIX))
    files = sorted(p for p in path.glob("*")
                   if p.suffix in (".jsonl", ".parquet") and not p.name.endswith(SKIPPED_SUFFIX))
    if not files:
        raise UserError(f"{path}: no caption files (.jsonl or .parquet with columns id, caption)")
    return files


def _rows(path: Path):
    """(line/row number, record) of one caption file."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        missing = {"id", "caption"} - set(table.column_names)
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        yield from enumerate(table.select(["id", "caption"]).to_pylist(), start=1)
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from None


def read_captions(path: str | Path) -> dict[str, str]:
    """id -> caption of a caption set; an empty, invalid or duplicate id or an empty caption is an error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: caption set not found")
    captions: dict[str, str] = {}
    where: dict[str, str] = {}
    for file in _caption_files(path):
        for n, row in _rows(file):
            at = f"{file}:{n}"
            item_id = row.get("id") if isinstance(row, dict) else None
            if (why := check_id(item_id)) is not None:
                raise UserError(f"{at}: {why} ({item_id!r})")
            if item_id in captions:
                raise UserError(f"{at}: duplicate id {item_id!r} (first at {where[item_id]})")
            caption = row.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise UserError(f"{at}: empty caption for id {item_id!r}")
            captions[item_id], where[item_id] = caption, at
    if not captions:
        raise UserError(f"{path}: the caption set is empty")
    return captions

"""The `generate` stage: a teacher-generated training set from a caption set (thesis 4.3.1, tab. 4.3/4.4).

    accelerate launch stages/generate.py   # or plain python; LAION-PixArt (100k @ 512²): GPU-days

Output (`out_dir`), see `shards.py` for plan/manifest:

    shards/shard-00000.tar   webdataset samples: <id>.json (prompt, seed, settings), <id>.png, <id>.txt
    index.parquet            id, shard, offset, size, prompt, seed of every image (random access)

Images are rendered by `ditcompress.sampling.Renderer`: every image has its own seed
`seed_for(cfg.seed, id)` and its own CPU generator, so its starting noise does not depend on the
batch, the shard, the device or the number of processes, and `regenerate` can redo any single image.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ditcompress.data.caption import read_captions
from ditcompress.data.config import GenerateConfig, fingerprint
from ditcompress.data.shards import (
    Process, Shard, ShardedRun, add_member, atomic_write, current_process, digest_lines, plan_shards, seed_for,
    split_member, tar_index,
)
from ditcompress.errors import UserError
from ditcompress.sampling import Renderer
from ditcompress.utils.digest import model_digest
from ditcompress.utils.logging import get_logger, progress

log = get_logger(__name__)

SUFFIX = ".tar"
INDEX_FILE = "index.parquet"
GRID_IMAGES = 16


def generation_order(ids, seed: int) -> list[str]:
    """Ids in a seeded pseudo-random order: any prefix is a uniform subset, and shards are well mixed."""
    return sorted(ids, key=lambda i: seed_for(seed, f"order/{i}"))


def encode_image(img: Image.Image, image_format: str) -> bytes:
    """PNG (lossless) or JPEG q95 bytes; the same pixels always give the same bytes."""
    buf = io.BytesIO()
    if image_format == "png":
        img.save(buf, format="PNG")
    else:
        img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def image_record(item_id: str, prompt: str, cfg: GenerateConfig, family: str, teacher: str) -> dict:
    """What a sample's .json holds: enough to regenerate it alone."""
    from ditcompress.models.registry import get_adapter

    dropped = {"num_images", "shard_size", "image_format", "seed"} | get_adapter(family).unused_sampler_settings(
        cfg.true_cfg_scale)
    settings = {k: v for k, v in fingerprint(cfg).items() if k not in dropped}
    return {"id": item_id, "prompt": prompt, "seed": seed_for(cfg.seed, item_id), "base_seed": cfg.seed,
            "family": family, "teacher": teacher, **settings}


def regenerate(record: dict, pipeline_path: str | Path, device="cpu", batch_size: int = 1) -> Image.Image:
    """Image of one sample's .json record, generated alone."""
    fields = {k: record[k] for k in GenerateConfig.model_fields if k in record and k != "seed"}
    cfg = GenerateConfig.model_validate({**fields, "batch_size": batch_size})
    renderer = Renderer.load(pipeline_path, record["family"], cfg, device)
    return Image.fromarray(renderer.render([record["prompt"]], [record["seed"]])[0])


def _write_shard(path: Path, shard: Shard, captions: dict[str, str], renderer: Renderer, cfg, family, teacher,
                 bar) -> None:
    """Generate a shard's images batch by batch, streaming them into its tar."""
    with atomic_write(path) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for s in range(0, len(shard.ids), cfg.batch_size):
            ids = shard.ids[s : s + cfg.batch_size]
            images = renderer.render([captions[i] for i in ids], [seed_for(cfg.seed, i) for i in ids])
            for item_id, pixels in zip(ids, images):
                record = image_record(item_id, captions[item_id], cfg, family, teacher)
                add_member(tar, f"{item_id}.json", json.dumps(record, ensure_ascii=False).encode())
                add_member(tar, f"{item_id}.{cfg.image_format}", encode_image(Image.fromarray(pixels),
                                                                              cfg.image_format))
                add_member(tar, f"{item_id}.txt", captions[item_id].encode())
            bar.update(len(ids))


def _write_index(run: ShardedRun, done: list[Shard], image_format: str) -> dict:
    """index.parquet over the complete shards: where each image lies, with its prompt and seed."""
    cols: dict[str, list] = {"id": [], "shard": [], "offset": [], "size": [], "prompt": [], "seed": []}
    for shard in done:
        path = run.path(shard)
        members = tar_index(path)
        with tarfile.open(path, "r:") as tar:
            records = {split_member(m.name)[0]: json.load(tar.extractfile(m)) for m in tar if m.name.endswith(".json")}
        for item_id in shard.ids:
            offset, size = members[item_id][image_format]
            for key, value in zip(cols, (item_id, path.name, offset, size, records[item_id]["prompt"],
                                         records[item_id]["seed"])):
                cols[key].append(value)
    with atomic_write(run.out_dir / INDEX_FILE) as f:
        pq.write_table(pa.table(cols), f)
    return {"images": len(cols["id"])}


def run_generate(cfg: GenerateConfig, captions_dir: str | Path, pipeline_path: str | Path, family: str,
                 out_dir: str | Path, tracker=None, *, process: Process | None = None,
                 restart_if_changed: bool = False) -> dict:
    """Generate the teacher dataset into `out_dir`, resuming what exists; summary metrics on the main process."""
    t0 = time.perf_counter()
    process = process or current_process()
    captions = read_captions(captions_dir)
    if cfg.num_images is not None and cfg.num_images > len(captions):
        raise UserError(f"generate.num_images: {cfg.num_images} but {captions_dir} has {len(captions)} captions")
    ids = generation_order(captions, cfg.seed)[: cfg.num_images]
    teacher = str(pipeline_path)
    # the weights too: a retrained teacher at the same path must not keep the old teacher's images
    settings = {**fingerprint(cfg), "family": family, "teacher": teacher, "teacher_digest": model_digest(pipeline_path)}
    run = ShardedRun(out_dir, "generate", settings, plan_shards(ids, cfg.shard_size), SUFFIX,
                     digest_lines(f"{i}\t{captions[i]}" for i in ids), process, restart_if_changed)
    mine = run.start()
    if mine:
        # captions are mostly distinct: embeddings are not kept past their batch
        renderer = Renderer.load(pipeline_path, family, cfg, process.device, keep_prompts=False)
        bar = progress(total=sum(len(s.ids) for s in mine), desc="generate", unit="img")
        for k, shard in enumerate(mine, start=1):
            _write_shard(run.path(shard), shard, captions, renderer, cfg, family, teacher, bar)
            if tracker is not None and process.is_main_process:
                tracker.log_metrics({"generate/images_per_s": bar.n / (time.perf_counter() - t0)}, step=k)
        bar.close()
    manifest = run.finish(lambda done: _write_index(run, done, cfg.image_format))
    if manifest is None:
        return {}
    seconds = time.perf_counter() - t0
    metrics = {"images": manifest["images"], "new_images": manifest["new_items"], "shards": manifest["complete_shards"],
               "images_per_s": manifest["new_items"] / seconds, "seconds": seconds}
    if tracker is not None and manifest["shards"]:
        _log_grid(tracker, run.out_dir, cfg.image_format)
    log.info("generate: %d images (%d new, %.2f img/s) -> %s", metrics["images"], metrics["new_images"],
             metrics["images_per_s"], run.out_dir)
    return metrics


def _log_grid(tracker, out_dir: Path, image_format: str) -> None:
    """The first images of the dataset with their prompts."""
    from ditcompress.data.dataset import TeacherDataset
    from ditcompress.utils.grid import sample_grid

    data = TeacherDataset(out_dir, check_complete=False)
    samples = [data[i] for i in range(min(GRID_IMAGES, len(data)))]
    tracker.log_image(sample_grid([s["image"] for s in samples], [s["prompt"][:200] for s in samples]),
                      "generate_samples.png")

"""Training sets of the distill stage in the teacher's latent space, encoded once and cached.

The text encoders and the VAE are frozen, so every image is encoded once and every distinct
caption once (a T5-XXL forward per step would dominate a real run); a step then only runs the
two transformers. Two sets (5.1.5):

- "laion": the captioned real images (`caption.source` with the caption stage's captions; the
  shapes world: the ground-truth training images and their scene captions);
- "domain": the teacher-generated set of the generate stage.

Each set is cached as `<cache>/<name>.safetensors` (latents, distinct-caption embeddings, the
caption row of each latent, the empty prompt for caption dropout) with a `<name>.json` key; a
cache whose key differs from the current inputs is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ditcompress.data.latents import encode_images
from ditcompress.errors import UserError
from ditcompress.models.base import Conditioning
from ditcompress.utils.logging import get_logger, progress
from ditcompress.zoo.teacher import TeacherData

log = get_logger(__name__)
ENCODE_BATCH = 256


def laion_items(source: str | Path, captions: str | Path, source_format: str = "auto"
                ) -> tuple[list[str], callable, list[str]]:
    """(ids, load(id) -> RGB image, captions) of the captioned real-image set, in the source's order."""
    from ditcompress.data.caption import read_captions
    from ditcompress.data.sources import open_source

    src = open_source(source, source_format)
    caps = read_captions(captions)
    ids = [i for i in src.ids() if i in caps]
    if not ids:
        raise UserError(f"distill.laion: {captions}: no caption matches an image of {source}")
    return ids, (lambda i: src.load(i)[0]), [caps[i] for i in ids]


def domain_items(data_dir: str | Path) -> tuple[list[str], callable, list[str]]:
    """(ids, load(id) -> RGB image, prompts) of the generate stage's teacher-generated set."""
    from ditcompress.data.dataset import TeacherDataset

    if not Path(data_dir).is_dir():
        raise UserError(f"distill.domain: {data_dir}: teacher-generated set not found (run `dvc repro generate`)")
    data = TeacherDataset(data_dir)
    index = {item_id: i for i, item_id in enumerate(data.ids)}
    return list(data.ids), (lambda i: data[index[i]]["image"]), list(data.prompts)


def _key(name: str, ids: list[str], captions: list[str], context: dict) -> dict:
    h = hashlib.sha256()
    for i, c in zip(ids, captions):
        h.update(f"{i}\t{c}\n".encode())
    return {"set": name, "items": len(ids), "items_digest": h.hexdigest(), **context}


def _pack(data: TeacherData) -> dict[str, torch.Tensor]:
    out = {"latents": data.latents.contiguous(), "caption_index": data.caption_index.contiguous()}
    for prefix, cond in (("captions", data.captions), ("empty", data.empty)):
        for field in ("prompt_embeds", "attention_mask", "pooled"):
            value = getattr(cond, field)
            if value is not None:
                out[f"{prefix}.{field}"] = value.contiguous()
    return out


def _unpack(tensors: dict[str, torch.Tensor]) -> TeacherData:
    cond = lambda p: Conditioning(tensors[f"{p}.prompt_embeds"], tensors.get(f"{p}.attention_mask"),  # noqa: E731
                                  tensors.get(f"{p}.pooled"))
    return TeacherData(tensors["latents"], cond("captions"), tensors["caption_index"], cond("empty"))


def _read(file: Path) -> TeacherData:
    # fresh allocations: kernels on mmap'd, unaligned tensors can round differently
    return _unpack({k: v.clone() for k, v in load_file(file).items()})


def cached_set(name: str, items: tuple[list[str], callable, list[str]], renderer, cache_dir: str | Path,
               context: dict) -> TeacherData:
    """The set's latents and caption embeddings, from `<cache_dir>/<name>.safetensors` when its key matches.

    `context` holds what else decides the encodings (teacher digest, text length); the images are
    keyed by id and caption, so a changed source or caption set is re-encoded.
    """
    ids, load, captions = items
    cache_dir = Path(cache_dir)
    key = _key(name, ids, captions, context)
    file, key_file = cache_dir / f"{name}.safetensors", cache_dir / f"{name}.json"
    if file.is_file() and key_file.is_file() and json.loads(key_file.read_text()) == key:
        log.info("distill: %s set: %d items from the cache %s", name, len(ids), file)
        return _read(file)
    pipe = renderer.pipeline
    latents = []
    for s in progress(range(0, len(ids), ENCODE_BATCH), desc=f"encode {name} images", unit="batch"):
        images = np.stack([np.asarray(load(i).convert("RGB")) for i in ids[s : s + ENCODE_BATCH]])
        latents.append(encode_images(pipe.vae, images).float().cpu())
    distinct = list(dict.fromkeys(captions))
    row = {c: r for r, c in enumerate(distinct)}
    chunks = [renderer.encode(distinct[s : s + ENCODE_BATCH]).to("cpu")
              for s in progress(range(0, len(distinct), ENCODE_BATCH), desc=f"encode {name} captions", unit="batch")]
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    bank = Conditioning(cat([c.prompt_embeds for c in chunks]), cat([c.attention_mask for c in chunks]),
                        cat([c.pooled for c in chunks]))
    data = TeacherData(torch.cat(latents), bank, torch.tensor([row[c] for c in captions]),
                       renderer.encode([""]).to("cpu"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    save_file(_pack(data), tmp)
    tmp.replace(file)
    key_file.write_text(json.dumps(key, indent=2) + "\n")
    log.info("distill: %s set: encoded %d images and %d distinct captions", name, len(ids), len(distinct))
    return _read(file)  # as a later run reads it: the same tensors, laid out alike

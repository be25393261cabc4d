"""CLIP embeddings (transformers `CLIPModel`) and the CLIP score (torchmetrics semantics).

One loaded model serves CMMD, CLIP score, the CLIP Fréchet distance and GenEval's colour
classifier. Two image preprocessings, each the one of its reference:

- "cmmd": google-research/cmmd — centre crop, PIL bicubic resize to the model's input size,
  [0, 1], CLIP mean/std (ViT-L/14-336 for real images; the shapes CLIP in the shapes world);
- "processor": the model's own `CLIPProcessor`, as torchmetrics' `CLIPScore` calls it.

Texts are tokenised with the model's tokenizer, truncated to its positions (see `embed_texts`).

Embeddings are L2-normalised float32 `(N, D)` arrays.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ditcompress.metrics.base import Evaluator, MetricsError, as_image_list, check_count, resolve_device
from ditcompress.metrics.cache import EmbeddingCache, default_cache
from ditcompress.metrics.config import CLIP_SCORE_CLIP
from ditcompress.metrics.images import centre_crop_resize


def _features(out) -> torch.Tensor:
    """Projected features from `get_*_features` (a tensor in transformers 4, an output object in 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _stamp(path: str) -> str:
    """Model identity for cache keys: a hub id as is, a local dir with its weights' mtimes."""
    p = Path(path)
    if not p.is_dir():
        return path
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".json"))
    return f"{p.resolve()}@{max((f.stat().st_mtime_ns for f in files), default=0)}"


class HFClip:
    """A transformers CLIP model with its processor, embedding images and texts in batches."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        self.path, self.device = str(path), resolve_device(device)
        try:
            self.model = CLIPModel.from_pretrained(self.path).eval().to(self.device)
            self.processor = CLIPProcessor.from_pretrained(self.path)
        except OSError as exc:
            raise MetricsError(f"{self.path}: cannot load a CLIP model ({str(exc).splitlines()[0]})") from None
        ip = self.processor.image_processor
        self.input_size = int(ip.crop_size["height"])
        self.mean = torch.tensor(ip.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(ip.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self._stamp = _stamp(self.path)

    def id(self, preprocess: str) -> str:
        """Embedder id for the cache: model identity plus preprocessing."""
        return f"hfclip:{self._stamp}:{preprocess}"

    def pixel_values(self, images: list[np.ndarray], preprocess: str) -> torch.Tensor:
        """Model inputs `(B, 3, S, S)` for RGB uint8 images."""
        if preprocess == "cmmd":
            x = np.stack([centre_crop_resize(im, self.input_size) for im in images]).astype(np.float32) / 255.0
            x = torch.from_numpy(x).permute(0, 3, 1, 2)  # (B, 3, S, S) in [0, 1]
            return (x - self.mean) / self.std
        if preprocess == "processor":
            # exactly as torchmetrics: (C, H, W) uint8 tensors through the processor
            chw = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
            return self.processor.image_processor(images=chw, return_tensors="pt")["pixel_values"]
        raise MetricsError(f"clip: unknown preprocessing {preprocess!r} (known: cmmd, processor)")

    @torch.no_grad()
    def embed_images(self, images, preprocess: str = "cmmd", batch_size: int = 32) -> np.ndarray:
        """L2-normalised image embeddings `(N, D)`."""
        images = as_image_list(images)
        out = []
        for i in range(0, len(images), batch_size):
            pixels = self.pixel_values(images[i:i + batch_size], preprocess).to(self.device, self.model.dtype)
            f = _features(self.model.get_image_features(pixel_values=pixels)).float()
            out.append(torch.nn.functional.normalize(f, dim=-1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.model.config.projection_dim), np.float32)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised text embeddings `(N, D)`.

        Captions longer than the model's positions are truncated by the tokenizer, keeping the
        end token the text features are pooled at. torchmetrics instead slices the token ids,
        dropping the end token of long captions (DPG-Bench and JoyCaption prompts); captions
        that fit give identical numbers.
        """
        max_len = self.model.config.text_config.max_position_embeddings
        out = []
        for i in range(0, len(texts), batch_size):
            tok = self.processor.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                           max_length=max_len, return_tensors="pt")
            f = _features(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                       attention_mask=tok["attention_mask"].to(self.device))).float()
            out.append(torch.nn.functional.normalize(f, dim=-1).cpu())
        return torch.cat(out).numpy()


@lru_cache(maxsize=4)
def _load_clip(stamp: str, path: str, device: str) -> HFClip:
    """Memoised constructor, keyed by the model's identity (`stamp`), not by how `path` is spelt."""
    return HFClip(path, device)


def load_clip(path: str | Path, device: str | torch.device = "auto") -> HFClip:
    """A shared `HFClip` per (model, device): CMMD, CLIP score and colour use one loaded model.

    A local directory is keyed by its resolved path and weights' mtimes: a relative path such as
    `models/shapes/clip` names another model after a chdir or a retrain in the same process.
    """
    local = Path(path).is_dir()
    return _load_clip(_stamp(str(path)), str(Path(path).resolve()) if local else str(path), str(resolve_device(device)))


def clip_score(image_embeds, text_embeds) -> float:
    """torchmetrics CLIPScore: max(mean over pairs of 100 * cos(image_i, text_i), 0)."""
    a = torch.nn.functional.normalize(torch.as_tensor(np.asarray(image_embeds), dtype=torch.float64), dim=-1)
    b = torch.nn.functional.normalize(torch.as_tensor(np.asarray(text_embeds), dtype=torch.float64), dim=-1)
    if a.shape != b.shape:
        raise MetricsError(f"clip_score: {tuple(a.shape)} image embeddings for {tuple(b.shape)} text embeddings")
    return max(float((100 * (a * b).sum(-1)).mean()), 0.0)


class ClipScoreEvaluator(Evaluator):
    """CLIP score of images against the prompts they were generated from."""

    name = "clip_score"

    def __init__(self, clip_path: str = CLIP_SCORE_CLIP, *, device: str = "auto",
                 batch_size: int = 32, cache: EmbeddingCache | None = None):
        self.clip_path, self.device, self.batch_size = clip_path, resolve_device(device), batch_size
        self.cache = cache if cache is not None else default_cache()

    def run(self, images, prompts=None, items=None, *, reference=None, set_id=None):
        """{"clip_score": value}."""
        if prompts is None:
            raise MetricsError("clip_score: needs the prompts the images were generated from")
        check_count(images, len(prompts), "clip_score")
        clip = load_clip(self.clip_path, self.device)
        img = self.cache.get_or_compute(clip.id("processor"), set_id,
                                        lambda: clip.embed_images(images, "processor", self.batch_size))
        txt = clip.embed_texts(list(prompts), self.batch_size)
        return {"clip_score": clip_score(img, txt)}

"""HPSv2 / HPSv2.1 (thesis 2.5.3, eq 2.93) on upstream open_clip, without the `hpsv2` package.

Model: open_clip `ViT-H-14` with the HPS checkpoint (`HPS_v2_compressed.pt` or
`HPS_v2.1_compressed.pt` from hub repo `xswu/HPSv2`), read with `weights_only=True` (or
safetensors). Score = 100 * cos(image, prompt) as HPSv2 `evaluation.py` (fp16 autocast on
CUDA, as the reference). Preprocessing: open_clip's eval transform for the architecture
(bicubic resize of the shortest side, centre crop, OpenAI mean/std); the HPS fork pads
non-square images to a square instead of cropping, identical for square generated images.

Benchmark (HPSv2 `evaluation.py::evaluate_benchmark`): 4 styles x 800 prompts read from
`<prompts_dir>/<style>.json` (a JSON list of prompts); per style the mean of the 80-image chunk
means (and their std), overall the mean over all images.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ditcompress.metrics.base import Evaluator, MetricsError, as_image_list, check_count, resolve_device
from ditcompress.metrics.cache import EmbeddingCache, default_cache
from ditcompress.metrics.config import HPS_ARCH

HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
HPS_CHUNK = 80


def hps_benchmark_aggregate(scores: Mapping[str, Sequence[float]], chunk: int = HPS_CHUNK) -> dict[str, float]:
    """Per style the mean (and std) of `chunk`-image chunk means; overall the mean over all images.

    The reference hard-codes ten chunks of 80 (`range(0, 800, 80)`); chunks here span the
    style's actual length, which is the same for the full 800-prompt benchmark.
    """
    out: dict[str, float] = {}
    everything: list[float] = []
    for style, values in scores.items():
        values = [float(v) for v in values]
        if not values:
            raise MetricsError(f"hps: no scores for style {style!r}")
        means = [np.mean(values[i:i + chunk]) for i in range(0, len(values), chunk)]
        out[style], out[f"{style}_std"] = float(np.mean(means)), float(np.std(means))
        everything.extend(values)
    out["overall"] = float(np.mean(everything))
    return out


def load_hps_prompts(prompts_dir: str | Path, styles: Sequence[str] = HPS_STYLES,
                     max_per_style: int | None = None) -> dict[str, list[str]]:
    """The benchmark prompts per style from `<prompts_dir>/<style>.json` (JSON lists of strings)."""
    folder = Path(prompts_dir)
    if not folder.is_dir():
        raise MetricsError(f"{folder}: HPS prompt folder not found (hps.prompts_dir)")
    prompts = {}
    for style in styles:
        path = folder / f"{style}.json"
        if not path.is_file():
            raise MetricsError(f"{path}: HPS prompt file not found")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MetricsError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list) or not data or not all(isinstance(p, str) for p in data):
            raise MetricsError(f"{path}: expected a non-empty JSON list of prompt strings")
        prompts[style] = data[:max_per_style]
    return prompts


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from safetensors or `torch.load(weights_only=True)` (never unpickles code).

    Accepts the HPS layout `{"state_dict": ...}` and DDP's "module." prefixes.
    """
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
            raise MetricsError(f"{path}: not a weights-only checkpoint ({str(exc).splitlines()[0]})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise MetricsError(f"{path}: expected a state dict (got {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state.pop("attn_mask", None)  # a buffer in old open_clip forks, recomputed by the model
    return state


class HPSModel:
    """open_clip model with HPS weights; `score(images, prompts)` = 100 * cos per pair."""

    def __init__(self, checkpoint: str | Path, arch: str = HPS_ARCH, device: str | torch.device = "auto"):
        import open_clip

        if not Path(checkpoint).is_file():
            raise MetricsError(f"{checkpoint}: HPS checkpoint not found (hps.checkpoint)")
        self.device = resolve_device(device)
        try:
            model, _, self.preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        except RuntimeError as exc:
            raise MetricsError(f"hps.model: unknown open_clip architecture {arch!r} ({exc})") from None
        state = load_state_dict(checkpoint)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise MetricsError(f"{checkpoint}: does not fit open_clip {arch!r} "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.model = model.eval().to(self.device)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.id = f"hps:{arch}:{Path(checkpoint).resolve()}@{Path(checkpoint).stat().st_mtime_ns}"

    @torch.no_grad()
    def score(self, images, prompts: list[str], batch_size: int = 32) -> np.ndarray:
        """HPS per (image, prompt) pair, `(N,)` float64."""
        from PIL import Image

        images = as_image_list(images)
        check_count(images, len(prompts), "hps")
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([self.preprocess(Image.fromarray(im)) for im in images[i:i + batch_size]]).to(self.device)
            t = self.tokenizer(list(prompts[i:i + batch_size])).to(self.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                img = self.model.encode_image(x, normalize=True).float()
                txt = self.model.encode_text(t, normalize=True).float()
            out.append((100 * (img * txt).sum(-1)).double().cpu())
        return torch.cat(out).numpy()


class HPSEvaluator(Evaluator):
    """The HPSv2 benchmark: per-style and overall human preference score of generated images."""

    name = "hps"
    benchmark = "hps"

    def __init__(self, checkpoint: str | None = None, prompts_dir: str | None = None, *, model: str = HPS_ARCH,
                 version: str = "v2.1", max_prompts_per_style: int | None = None, device: str = "auto",
                 batch_size: int = 32, cache: EmbeddingCache | None = None):
        if checkpoint is None or prompts_dir is None:
            raise MetricsError("hps: hps.checkpoint and hps.prompts_dir must both be set")
        self.prompts = load_hps_prompts(prompts_dir, max_per_style=max_prompts_per_style)
        if not Path(checkpoint).is_file():
            raise MetricsError(f"{checkpoint}: HPS checkpoint not found (hps.checkpoint)")
        self.checkpoint, self.arch, self.prefix = checkpoint, model, f"hps{version}"
        self.device, self.batch_size = resolve_device(device), batch_size
        self.cache = cache if cache is not None else default_cache()
        self._model: HPSModel | None = None

    def items(self) -> list[dict]:
        """(style, index, prompt) for every benchmark image, styles in file-name order."""
        return [{"prompt": p, "style": s, "index": i} for s, ps in self.prompts.items() for i, p in enumerate(ps)]

    def run(self, images, prompts=None, items=None, *, reference=None, set_id=None):
        """{"hpsv2.1/<style>": ..., "hpsv2.1/<style>_std": ..., "hpsv2.1/overall": ...}."""
        items = items if items is not None else self.items()
        check_count(images, len(items), "hps")
        if self._model is None:
            self._model = HPSModel(self.checkpoint, self.arch, self.device)
        model = self._model
        scores = self.cache.get_or_compute(
            model.id, set_id, lambda: model.score(images, [it["prompt"] for it in items], self.batch_size))
        by_style: dict[str, list[float]] = {}
        for it, s in zip(items, scores):
            by_style.setdefault(it["style"], []).append(float(s))
        return {f"{self.prefix}/{k}": v for k, v in hps_benchmark_aggregate(by_style).items()}

"""Evaluators chosen by name, built from `EvaluateConfig`, and run on a generator or an image folder.

    cfg = params.evaluate
    evaluators = build_evaluators(cfg)
    reference = image_set_from_folder("data/reference", prompts)      # CMMD / FID reference
    values = evaluate(evaluators, generate=sample_fn, prompts=prompts, reference=reference)

`generate(prompts) -> images` is any callable (a teacher or student pipeline); with `image_dir`
the images are read from `<image_dir>/<benchmark>/` (`prompts/` for the caller's prompt set,
`hps/`, `geneval/`, `dpg/` for the benchmarks), sorted by relative path, one per item.
"""

from __future__ import annotations

import importlib
import inspect
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from ditcompress.metrics.base import Evaluator, ImageSet, MetricsError, as_image_list, check_count, sub_id
from ditcompress.metrics.cache import EmbeddingCache
from ditcompress.metrics.config import EVALUATORS, EvaluateConfig
from ditcompress.metrics.images import folder_set_id, load_image_folder


def get_evaluator(name: str, **cfg) -> Evaluator:
    """The evaluator registered under `name`, built with keyword options `cfg`."""
    if name not in EVALUATORS:
        raise MetricsError(f"unknown metric {name!r} (known: {', '.join(EVALUATORS)})")
    module, _, cls_name = EVALUATORS[name].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        inspect.signature(cls).bind(**cfg)
    except TypeError as exc:
        raise MetricsError(f"{name}: {exc}") from None
    return cls(**cfg)


def evaluator_options(name: str, cfg: EvaluateConfig) -> dict:
    """Keyword options of evaluator `name` from the evaluate section."""
    common = {"device": cfg.device, "batch_size": cfg.batch_size}
    g = cfg.geneval
    options = {
        "cmmd": lambda: {"clip_path": cfg.clip_path, **cfg.cmmd.model_dump()},
        "clip_score": lambda: {"clip_path": cfg.clip_score_path},
        "fid": lambda: {"inception_weights": cfg.fid.inception_weights, "clip_path": cfg.clip_path},
        "clip_fd": lambda: {"clip_path": cfg.clip_path},
        "hps": lambda: cfg.hps.model_dump(),
        "geneval": lambda: {
            "metadata": g.metadata, "images_per_prompt": g.images_per_prompt, "detector": g.detector,
            "detector_path": g.detector_path, "color_clip": g.color_clip, "rules": g.rules()},
        "dpg": lambda: cfg.dpg.model_dump(),
    }
    return {**options[name](), **common}


def build_evaluators(cfg: EvaluateConfig, cache: EmbeddingCache | None = None,
                     overrides: Mapping[str, Mapping] | None = None) -> dict[str, Evaluator]:
    """One evaluator per configured metric, sharing one embedding cache.

    `overrides` replaces options per metric with objects params cannot hold, e.g.
    `{"geneval": {"detector": ShapesDetector(params.data)}}`.
    """
    cache = cache if cache is not None else EmbeddingCache(cfg.cache_dir)
    overrides = overrides or {}
    unknown = set(overrides) - set(cfg.metrics)
    if unknown:
        raise MetricsError(f"build_evaluators: overrides for metrics not configured: {', '.join(sorted(unknown))}")
    return {name: get_evaluator(name, **{**evaluator_options(name, cfg), **overrides.get(name, {})}, cache=cache)
            for name in cfg.metrics}


def evaluate(evaluators: Mapping[str, Evaluator], *, generate: Callable[[list[str]], object] | None = None,
             image_dir: str | Path | None = None, prompts: list[str] | None = None,
             reference: ImageSet | None = None, set_id: str | None = None,
             on_images: Callable[[str, list], None] | None = None) -> dict[str, float]:
    """All evaluators' values; images come from `generate` or `image_dir`, once per prompt set.

    `set_id` names the generated images in the cache (e.g. "teacher"); without it they are
    cached only for the duration of this call (so CMMD and clip_fd still embed them once).
    `on_images(group, images)` sees each prompt set's images (to save samples or grids).
    """
    if (generate is None) == (image_dir is None):
        raise MetricsError("evaluate: give exactly one of generate= or image_dir=")
    groups: dict[str, list[tuple[str, Evaluator]]] = {}
    for name, ev in evaluators.items():
        groups.setdefault(ev.benchmark or "prompts", []).append((name, ev))
    results: dict[str, float] = {}
    for group, members in groups.items():
        names = ", ".join(n for n, _ in members)
        items = members[0][1].items() if group != "prompts" else None
        group_prompts = [it["prompt"] for it in items] if items is not None else prompts
        if group_prompts is None:
            raise MetricsError(f"{names}: need the prompts to generate from (evaluate(..., prompts=...))")
        needing = [n for n, ev in members if ev.needs_reference]
        if needing and reference is None:
            raise MetricsError(f"{', '.join(needing)}: need a reference image set (evaluate(..., reference=...))")
        if generate is not None:
            images = as_image_list(generate(list(group_prompts)))
            check_count(images, len(group_prompts), f"evaluate: generate() for {group}")
            sid = sub_id(set_id, group) or f"tmp:{uuid.uuid4().hex}"
        else:
            folder = Path(image_dir) / group
            images = load_image_folder(folder, len(group_prompts))
            sid = sub_id(set_id, group) or folder_set_id(folder, len(group_prompts))
        if on_images is not None:
            on_images(group, images)
        for _, ev in members:
            results.update(ev.run(images, list(group_prompts), items, reference=reference, set_id=sid))
        if sid.startswith("tmp:"):
            for _, ev in members:
                cache = getattr(ev, "cache", None)
                if cache is not None:
                    cache.forget(sid)
    return results
